//! Where reports come from: the [`AttestationProvider`] trait and the evidence it returns.
//!
//! The evidence carries the reference's wire fields (SKR sidecar `/attest/combined`, CCF's
//! `attestation` object): the raw report, the certificate chain that endorses its signing key,
//! the UVM endorsements and the endorsed TCB.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

/// Size of `report_data` in an SNP report.
pub const REPORT_DATA_LEN: usize = 64;

/// One attestation report with its endorsements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// The raw SNP report (`ATTESTATION_REPORT`, 1184 bytes).
    pub report: Vec<u8>,
    /// PEM certificates: the report-signing key's certificate (VCEK or VLEK) then its issuers.
    pub endorsements: Vec<u8>,
    /// The UVM endorsements (a COSE_Sign1 document); empty where there are none.
    pub uvm_endorsements: Vec<u8>,
    /// The endorsed TCB version, hex.
    pub endorsed_tcb: String,
}

/// Why a JSON object is not evidence in the wire shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvidenceFormatError {
    /// A field is missing or not a string.
    #[error("attestation field '{0}' is missing or not a string")]
    Missing(&'static str),
    /// A field is not base64.
    #[error("attestation field '{0}' is not base64")]
    Base64(&'static str),
}

impl Evidence {
    /// The wire shape of the reference (`/attest/combined`, CGS's `attestation` object, snake
    /// case): `{evidence, endorsements, uvm_endorsements}` standard base64 and `endorsed_tcb` hex.
    pub fn to_wire_json(&self) -> Value {
        json!({
            "evidence": BASE64.encode(&self.report),
            "endorsements": BASE64.encode(&self.endorsements),
            "uvm_endorsements": BASE64.encode(&self.uvm_endorsements),
            "endorsed_tcb": self.endorsed_tcb,
        })
    }

    /// Reads the wire shape; `uvm_endorsements` and `endorsed_tcb` may be absent (empty).
    ///
    /// # Errors
    /// [`EvidenceFormatError`] naming the field.
    pub fn from_wire_json(value: &Value) -> Result<Self, EvidenceFormatError> {
        let field = |name: &'static str, required: bool| -> Result<Vec<u8>, EvidenceFormatError> {
            match value.get(name) {
                Some(Value::String(text)) => BASE64
                    .decode(text.trim())
                    .map_err(|_| EvidenceFormatError::Base64(name)),
                None | Some(Value::Null) if !required => Ok(Vec::new()),
                _ => Err(EvidenceFormatError::Missing(name)),
            }
        };
        Ok(Self {
            report: field("evidence", true)?,
            endorsements: field("endorsements", true)?,
            uvm_endorsements: field("uvm_endorsements", false)?,
            endorsed_tcb: match value.get("endorsed_tcb") {
                Some(Value::String(text)) => text.clone(),
                None | Some(Value::Null) => String::new(),
                Some(_) => return Err(EvidenceFormatError::Missing("endorsed_tcb")),
            },
        })
    }
}

/// Why no report could be produced.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// This machine cannot produce reports of this kind (no `/dev/sev-guest`, …).
    #[error("attestation provider '{provider}' is unavailable: {reason}")]
    Unavailable {
        /// The provider's name.
        provider: String,
        /// Why.
        reason: String,
    },
    /// The provider was reachable but the request failed.
    #[error("attestation provider '{provider}' failed: {reason}")]
    Failed {
        /// The provider's name.
        provider: String,
        /// Why.
        reason: String,
    },
}

/// Produces attestation reports whose `report_data` is the caller's 64 bytes.
#[async_trait]
pub trait AttestationProvider: Send + Sync {
    /// A short name for logs and errors (`virtual`, `azure-snp`).
    fn name(&self) -> &str;
    /// The platform the reports are for, as governance names it (`snp-caci`).
    fn platform(&self) -> &str;
    /// One report with `report_data` as given.
    async fn report(&self, report_data: &[u8; REPORT_DATA_LEN]) -> Result<Evidence, ProviderError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evidence_round_trips_through_the_wire_shape() {
        let evidence = Evidence {
            report: vec![1; 8],
            endorsements: b"PEM".to_vec(),
            uvm_endorsements: Vec::new(),
            endorsed_tcb: "0300000000000873".into(),
        };
        let wire = evidence.to_wire_json();
        assert_eq!(wire["uvm_endorsements"], "");
        assert_eq!(Evidence::from_wire_json(&wire).unwrap(), evidence);
        let mut minimal = wire.clone();
        minimal.as_object_mut().unwrap().remove("uvm_endorsements");
        minimal.as_object_mut().unwrap().remove("endorsed_tcb");
        assert_eq!(Evidence::from_wire_json(&minimal).unwrap().endorsed_tcb, "");
        assert_eq!(
            Evidence::from_wire_json(&json!({"evidence": "AA=="})),
            Err(EvidenceFormatError::Missing("endorsements"))
        );
        assert_eq!(
            Evidence::from_wire_json(&json!({"evidence": "!!", "endorsements": ""})),
            Err(EvidenceFormatError::Base64("evidence"))
        );
    }
}

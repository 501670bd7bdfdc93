//! Where reports come from: the [`AttestationProvider`] trait and the evidence it returns.
//!
//! The evidence carries the reference's wire fields (SKR sidecar `/attest/combined`, CCF's
//! `attestation` object): the raw report, the certificate chain that endorses its signing key,
//! the UVM endorsements and the endorsed TCB.

use async_trait::async_trait;

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

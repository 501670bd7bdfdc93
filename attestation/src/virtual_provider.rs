//! The virtual [`AttestationProvider`]: asks the insecure virtual authority
//! (`POST /virtual/snp/report`) for a report whose `HOST_DATA` is SHA-256 of the declared
//! security policy. It proves the flow, not the hardware: the authority signs whatever policy a
//! caller declares.

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use crate::maa::{endpoint_url, https_client};
use crate::provider::{AttestationProvider, Evidence, ProviderError, REPORT_DATA_LEN};
use crate::snp::hex;

/// The provider's name in logs and errors.
pub const VIRTUAL_PROVIDER_NAME: &str = "virtual";

/// Reports from the virtual authority for one declared security policy.
#[derive(Clone)]
pub struct VirtualProvider {
    http: reqwest::Client,
    report_url: String,
    security_policy_b64: String,
    debuggable: bool,
}

impl std::fmt::Debug for VirtualProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtualProvider")
            .field("report_url", &self.report_url)
            .field("debuggable", &self.debuggable)
            .finish_non_exhaustive()
    }
}

impl VirtualProvider {
    /// A provider for the authority at `authority_url` (a URL, or host:port with https
    /// implied), trusting `authority_ca_pem` (its `authority-ca.pem`), declaring
    /// `security_policy_text` and the debug policy bit.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the CA is not a PEM certificate.
    pub fn new(
        authority_url: &str,
        authority_ca_pem: impl AsRef<[u8]>,
        security_policy_text: impl AsRef<[u8]>,
        debuggable: bool,
    ) -> Result<Self, ProviderError> {
        let http = https_client([authority_ca_pem]).map_err(|e| ProviderError::Unavailable {
            provider: VIRTUAL_PROVIDER_NAME.into(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            http,
            report_url: format!("{}/virtual/snp/report", endpoint_url(authority_url)),
            security_policy_b64: BASE64.encode(security_policy_text),
            debuggable,
        })
    }
}

#[async_trait]
impl AttestationProvider for VirtualProvider {
    fn name(&self) -> &str {
        VIRTUAL_PROVIDER_NAME
    }

    fn platform(&self) -> &str {
        "snp-caci"
    }

    async fn report(&self, report_data: &[u8; REPORT_DATA_LEN]) -> Result<Evidence, ProviderError> {
        let failed = |reason: String| ProviderError::Failed {
            provider: VIRTUAL_PROVIDER_NAME.into(),
            reason,
        };
        let body = json!({
            "report_data": hex(report_data),
            "security_policy": self.security_policy_b64,
            "debuggable": self.debuggable,
        });
        let response = self
            .http
            .post(&self.report_url)
            .json(&body)
            .send()
            .await
            .map_err(|e| failed(format!("{}: {e}", self.report_url)))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| failed(format!("{}: {e}", self.report_url)))?;
        if !status.is_success() {
            let shown: String = text.chars().take(512).collect();
            return Err(failed(format!(
                "{} answered {status}: {shown}",
                self.report_url
            )));
        }
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| failed(format!("{}: the answer is not JSON: {e}", self.report_url)))?;
        Evidence::from_wire_json(&value).map_err(|e| failed(format!("{}: {e}", self.report_url)))
    }
}

//! The Azure provider: a real SEV-SNP report from the guest driver (`/dev/sev-guest`,
//! `SNP_GET_REPORT`), its VCEK chain from the host's THIM endpoint (IMDS
//! `http://169.254.169.254/metadata/THIM/amd/certification`, as the reference's SKR sidecar
//! fetches it) and the UVM endorsements that Azure container instances place in
//! `$UVM_SECURITY_CONTEXT_DIR/reference-info-base64`. Tokens then come from a real MAA through
//! [`crate::maa::MaaClient`].
//!
//! Built to the published shapes (Linux uapi `include/uapi/linux/sev-guest.h`, the SEV-SNP ABI's
//! `MSG_REPORT_RSP`, the THIM JSON) but not run here: this machine has no SEV-SNP guest device,
//! and [`AzureProvider::report`] then answers [`ProviderError::Unavailable`] naming the device.
//! Older Azure kernels expose `/dev/sev` with a different ioctl; that one is not implemented.
//!
//! The ioctl needs `unsafe` (a raw syscall on a pointer to a request the kernel fills in): this
//! module alone allows it, each block with its SAFETY argument.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::Value;

use crate::provider::{AttestationProvider, Evidence, ProviderError, REPORT_DATA_LEN};
use crate::snp::REPORT_LEN;

/// The provider's name in logs and errors.
pub const AZURE_PROVIDER_NAME: &str = "azure-snp";
/// The SEV-SNP guest device.
pub const SEV_GUEST_DEVICE: &str = "/dev/sev-guest";
/// The host's VCEK chain endpoint (IMDS THIM).
pub const THIM_URL: &str = "http://169.254.169.254/metadata/THIM/amd/certification";
/// The environment variable naming the UVM security context directory (Azure container
/// instances).
pub const UVM_SECURITY_CONTEXT_DIR_ENV: &str = "UVM_SECURITY_CONTEXT_DIR";

/// `struct snp_report_req` (sev-guest.h): `user_data[64]`, `vmpl`, `rsvd[28]`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SnpReportRequest {
    /// The 64 bytes that become `REPORT_DATA`.
    pub user_data: [u8; REPORT_DATA_LEN],
    /// The VMPL the report is for.
    pub vmpl: u32,
    /// Reserved, zero.
    pub reserved: [u8; 28],
}

/// `struct snp_report_resp` (sev-guest.h): 4000 bytes holding `MSG_REPORT_RSP`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SnpReportResponse {
    /// `MSG_REPORT_RSP`: `status` (u32), `report_size` (u32), 24 reserved bytes, the report.
    pub data: [u8; 4000],
}

/// `struct snp_guest_request_ioctl` (sev-guest.h): message version, request and response
/// addresses, and the firmware/VMM error (`exitinfo2`).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct SnpGuestRequestIoctl {
    /// Message version; must be non-zero (1).
    pub msg_version: u8,
    /// Address of the request.
    pub req_data: u64,
    /// Address of the response.
    pub resp_data: u64,
    /// On failure: firmware error (low 32 bits) and VMM error (high 32 bits).
    pub exitinfo2: u64,
}

/// `SNP_GET_REPORT` = `_IOWR('S', 0x0, struct snp_guest_request_ioctl)`.
pub const SNP_GET_REPORT: u64 = ioc_readwrite(b'S', 0, std::mem::size_of::<SnpGuestRequestIoctl>());

/// Linux's `_IOWR(type, nr, size)`: direction read|write (3) in bits 30–31, size in 16–29, type
/// in 8–15, number in 0–7.
const fn ioc_readwrite(kind: u8, nr: u8, size: usize) -> u64 {
    (3u64 << 30) | ((size as u64) << 16) | ((kind as u64) << 8) | nr as u64
}

/// Offset of the report in `MSG_REPORT_RSP`.
pub const REPORT_RESPONSE_HEADER_LEN: usize = 32;

/// The report out of a `MSG_REPORT_RSP`: status 0, a size of 1184, then the report.
///
/// # Errors
/// A reason naming the status or size.
pub fn report_from_response(response: &[u8]) -> Result<Vec<u8>, String> {
    if response.len() < REPORT_RESPONSE_HEADER_LEN + REPORT_LEN {
        return Err(format!("MSG_REPORT_RSP is {} bytes", response.len()));
    }
    let status = u32::from_le_bytes([response[0], response[1], response[2], response[3]]);
    if status != 0 {
        return Err(format!("the firmware answered status {status:#x}"));
    }
    let size = u32::from_le_bytes([response[4], response[5], response[6], response[7]]) as usize;
    if size != REPORT_LEN {
        return Err(format!(
            "the firmware's report is {size} bytes, not {REPORT_LEN}"
        ));
    }
    Ok(response[REPORT_RESPONSE_HEADER_LEN..REPORT_RESPONSE_HEADER_LEN + REPORT_LEN].to_vec())
}

/// Asks the guest device for a report (blocking).
fn device_report(device: &Path, report_data: &[u8; REPORT_DATA_LEN]) -> Result<Vec<u8>, String> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| format!("{}: {e}", device.display()))?;
    let request = SnpReportRequest {
        user_data: *report_data,
        vmpl: 0,
        reserved: [0; 28],
    };
    let mut response = SnpReportResponse { data: [0; 4000] };
    let mut ioctl = SnpGuestRequestIoctl {
        msg_version: 1,
        req_data: std::ptr::from_ref(&request) as u64,
        resp_data: std::ptr::from_mut(&mut response) as u64,
        exitinfo2: 0,
    };
    // SAFETY: `file` is an open descriptor for the whole call; `ioctl` is a properly laid out
    // `snp_guest_request_ioctl` whose two addresses point to `request` (read by the kernel) and
    // `response` (written by the kernel, 4000 bytes as the uapi declares), all three alive on
    // this stack frame until the call returns; the kernel writes nothing else.
    let rc = unsafe {
        libc::ioctl(
            file.as_raw_fd(),
            SNP_GET_REPORT as libc::c_ulong,
            std::ptr::from_mut(&mut ioctl),
        )
    };
    if rc != 0 {
        return Err(format!(
            "SNP_GET_REPORT on {} failed: {} (firmware error {:#x}, VMM error {:#x})",
            device.display(),
            std::io::Error::last_os_error(),
            ioctl.exitinfo2 & 0xffff_ffff,
            ioctl.exitinfo2 >> 32
        ));
    }
    report_from_response(&response.data)
}

/// The VCEK chain of the THIM answer: `(vcekCert + certificateChain PEM, tcbm)`.
///
/// # Errors
/// A reason naming the missing field.
pub fn endorsements_from_thim(answer: &Value) -> Result<(Vec<u8>, String), String> {
    let field = |name: &str| {
        answer
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the THIM answer has no '{name}'"))
    };
    let mut chain = field("vcekCert")?.to_owned();
    if !chain.ends_with('\n') {
        chain.push('\n');
    }
    chain.push_str(field("certificateChain")?);
    Ok((chain.into_bytes(), field("tcbm")?.to_owned()))
}

/// SEV-SNP reports from this machine's guest device, endorsed by the host's THIM chain.
#[derive(Clone, Debug)]
pub struct AzureProvider {
    device: PathBuf,
    thim_url: String,
    http: reqwest::Client,
}

impl AzureProvider {
    /// The provider on `/dev/sev-guest` and the IMDS THIM endpoint.
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the HTTP client cannot be built.
    pub fn new() -> Result<Self, ProviderError> {
        Self::with_device(Path::new(SEV_GUEST_DEVICE), THIM_URL)
    }

    /// The provider on another device path and THIM URL (tests, other hosts).
    ///
    /// # Errors
    /// [`ProviderError::Unavailable`] when the HTTP client cannot be built.
    pub fn with_device(device: &Path, thim_url: &str) -> Result<Self, ProviderError> {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ProviderError::Unavailable {
                provider: AZURE_PROVIDER_NAME.into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            device: device.to_owned(),
            thim_url: thim_url.to_owned(),
            http,
        })
    }

    async fn thim_endorsements(&self) -> Result<(Vec<u8>, String), ProviderError> {
        let failed = |reason: String| ProviderError::Failed {
            provider: AZURE_PROVIDER_NAME.into(),
            reason: format!("{}: {reason}", self.thim_url),
        };
        let response = self
            .http
            .get(&self.thim_url)
            .header("Metadata", "true")
            .send()
            .await
            .map_err(|e| failed(e.to_string()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(failed(format!("answered {status}")));
        }
        let answer: Value = response.json().await.map_err(|e| failed(e.to_string()))?;
        endorsements_from_thim(&answer).map_err(failed)
    }
}

/// The UVM endorsements of an Azure container instance, if its security context has them.
fn uvm_endorsements() -> Vec<u8> {
    let Some(dir) = std::env::var_os(UVM_SECURITY_CONTEXT_DIR_ENV) else {
        return Vec::new();
    };
    std::fs::read_to_string(Path::new(&dir).join("reference-info-base64"))
        .ok()
        .and_then(|text| BASE64.decode(text.trim()).ok())
        .unwrap_or_default()
}

#[async_trait]
impl AttestationProvider for AzureProvider {
    fn name(&self) -> &str {
        AZURE_PROVIDER_NAME
    }

    fn platform(&self) -> &str {
        "snp-caci"
    }

    async fn report(&self, report_data: &[u8; REPORT_DATA_LEN]) -> Result<Evidence, ProviderError> {
        if !self.device.exists() {
            return Err(ProviderError::Unavailable {
                provider: AZURE_PROVIDER_NAME.into(),
                reason: format!(
                    "{} does not exist: this is not an SEV-SNP guest",
                    self.device.display()
                ),
            });
        }
        let device = self.device.clone();
        let data = *report_data;
        let report = tokio::task::spawn_blocking(move || device_report(&device, &data))
            .await
            .map_err(|e| ProviderError::Failed {
                provider: AZURE_PROVIDER_NAME.into(),
                reason: e.to_string(),
            })?
            .map_err(|reason| ProviderError::Failed {
                provider: AZURE_PROVIDER_NAME.into(),
                reason,
            })?;
        let (endorsements, endorsed_tcb) = self.thim_endorsements().await?;
        Ok(Evidence {
            report,
            endorsements,
            uvm_endorsements: uvm_endorsements(),
            endorsed_tcb,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ioctl_request_matches_the_uapi_layout() {
        assert_eq!(std::mem::size_of::<SnpReportRequest>(), 96);
        assert_eq!(std::mem::size_of::<SnpReportResponse>(), 4000);
        assert_eq!(std::mem::size_of::<SnpGuestRequestIoctl>(), 32);
        assert_eq!(SNP_GET_REPORT, 0xC020_5300);
    }

    #[test]
    fn a_report_response_is_checked() {
        let mut response = vec![0u8; 4000];
        response[4..8].copy_from_slice(&(REPORT_LEN as u32).to_le_bytes());
        response[32] = 2;
        assert_eq!(report_from_response(&response).unwrap()[0], 2);
        response[0] = 0x16;
        assert!(report_from_response(&response).unwrap_err().contains("0x16"));
        response[0] = 0;
        response[4] = 0;
        assert!(report_from_response(&response).unwrap_err().contains("bytes"));
        assert!(report_from_response(&[0; 10]).is_err());
    }

    #[test]
    fn the_thim_answer_gives_the_chain_and_tcb() {
        let answer = serde_json::json!({
            "vcekCert": "-----BEGIN CERTIFICATE-----\nV\n-----END CERTIFICATE-----",
            "certificateChain": "-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----\n",
            "tcbm": "DB18000000000004",
        });
        let (chain, tcb) = endorsements_from_thim(&answer).unwrap();
        let chain = String::from_utf8(chain).unwrap();
        assert_eq!(chain.matches("BEGIN CERTIFICATE").count(), 2);
        assert!(chain.starts_with("-----BEGIN CERTIFICATE-----\nV"));
        assert_eq!(tcb, "DB18000000000004");
        assert!(
            endorsements_from_thim(&serde_json::json!({}))
                .unwrap_err()
                .contains("vcekCert")
        );
    }

    #[tokio::test]
    async fn without_the_device_the_provider_is_unavailable_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let device = dir.path().join("sev-guest");
        let provider = AzureProvider::with_device(&device, "http://127.0.0.1:9/").unwrap();
        let error = provider.report(&[0; 64]).await.unwrap_err();
        match error {
            ProviderError::Unavailable { provider, reason } => {
                assert_eq!(provider, "azure-snp");
                assert!(reason.contains(&device.display().to_string()), "{reason}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        if !Path::new(SEV_GUEST_DEVICE).exists() {
            let error = AzureProvider::new().unwrap().report(&[0; 64]).await.unwrap_err();
            assert!(error.to_string().contains(SEV_GUEST_DEVICE));
        }
    }
}

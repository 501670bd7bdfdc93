//! The clean room's side of a datastore's key release: `encfs mount|upload|download --datastore
//! NAME --key-release URL` posts the reference's unwrap request for the datastore's wrapped DEK
//! to the secrets sidecar at URL and keeps the DEK it answers only in memory ([`DataKey`]
//! zeroizes on drop; nothing is written to disk).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use encfs_crypto::DataKey;
use encfs_store::{CustomerKey, StoreLocation};
use encfs_transfer::Protection;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::{datastore, transfer};
use crate::args::{DatastoreSelection, Mode, StoreAccess};

/// How long the sidecar may take to release the KEK and unwrap the DEK.
const UNWRAP_TIMEOUT: Duration = Duration::from_secs(60);

/// A datastore's key release, as `config wrap-deks` records it in the datastore config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyRelease {
    /// The wrapped DEK: a secret in a key vault.
    pub secret: SecretRef,
    /// The KEK that wraps it, released to an attested clean room.
    pub kek: KekRef,
    /// The identity's client id sent in the unwrap request (the reference's `clientId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The identity's tenant id sent in the unwrap request (`tenantId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
}

/// The wrapped DEK secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRef {
    /// Secret name, `wrapped-<datastore>-dek-<kek>`.
    pub kid: String,
    /// The vault holding it (URL).
    pub akv_endpoint: String,
}

/// The KEK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KekRef {
    /// Key name.
    pub kid: String,
    /// The vault holding it (host, https implied, as the reference sends it).
    pub akv_endpoint: String,
    /// The attestation authority its release policy names (host, https implied).
    pub maa_endpoint: String,
}

impl KeyRelease {
    /// The reference's `POST /secrets/unwrap` body (ref §9, clean-room side, step 2).
    pub fn unwrap_request(&self) -> Value {
        json!({
            "clientId": self.client_id.as_deref().unwrap_or_default(),
            "tenantId": self.tenant_id.as_deref().unwrap_or_default(),
            "kid": self.secret.kid,
            "akvEndpoint": self.secret.akv_endpoint,
            "kek": {
                "kid": self.kek.kid,
                "akvEndpoint": self.kek.akv_endpoint,
                "maaEndpoint": self.kek.maa_endpoint,
            },
        })
    }
}

/// The host (and port) of a URL, as the reference passes KEK vault and MAA endpoints.
pub fn host_of(url: &str) -> String {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[derive(Deserialize)]
struct Unwrapped {
    value: String,
}

/// The error body of a failed request, shortened (the sidecar's bodies carry no key material).
fn excerpt(body: &str) -> String {
    let mut text: String = body.chars().take(400).collect();
    if body.chars().count() > 400 {
        text.push('…');
    }
    text
}

/// Posts the unwrap request of `release` to the secrets sidecar at `sidecar` and returns the DEK.
pub async fn fetch_dek(sidecar: &str, release: &KeyRelease) -> Result<DataKey> {
    let url = format!("{}/secrets/unwrap", sidecar.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(UNWRAP_TIMEOUT)
        .build()
        .context("cannot start an HTTP client")?;
    let response = client
        .post(&url)
        .json(&release.unwrap_request())
        .send()
        .await
        .with_context(|| format!("cannot reach the secrets sidecar at {url}"))?;
    let status = response.status();
    let body = Zeroizing::new(
        response
            .text()
            .await
            .with_context(|| format!("no answer from the secrets sidecar at {url}"))?,
    );
    if !status.is_success() {
        bail!(
            "the secrets sidecar at {url} refused to unwrap secret '{}': {status}: {}",
            release.secret.kid,
            excerpt(&body)
        );
    }
    let answer: Unwrapped = serde_json::from_str(&body).with_context(|| {
        format!("the secrets sidecar at {url} answered no {{\"value\": <base64>}} object")
    })?;
    let value = Zeroizing::new(answer.value);
    let bytes = Zeroizing::new(STANDARD.decode(value.as_bytes()).with_context(|| {
        format!("the secrets sidecar at {url} answered a value that is not base64")
    })?);
    DataKey::from_slice(&bytes).with_context(|| {
        format!(
            "the secrets sidecar at {url} unwrapped {} bytes for secret '{}', but a DEK is 32",
            bytes.len(),
            release.secret.kid
        )
    })
}

/// The store, prefix and protection of a datastore whose DEK comes from the secrets sidecar at
/// `sidecar` (the key-release counterpart of [`transfer::locate`]).
pub(super) fn locate(
    selection: &DatastoreSelection,
    mode: Option<Mode>,
    sidecar: &str,
    access: &StoreAccess,
) -> Result<(StoreLocation, Protection)> {
    let name = selection
        .datastore
        .as_deref()
        .context("--key-release needs --datastore NAME")?;
    let entry = datastore::find(selection.config.as_deref(), name)?;
    let release = entry.key_release.with_context(|| {
        format!(
            "datastore '{name}' has no key_release in its config (run encfs config wrap-deks first)"
        )
    })?;
    let (address, mode, ..) = transfer::address_of(selection, None, mode, None)?;
    if mode == Mode::Sse {
        bail!("datastore '{name}' is sse: it has no DEK to release");
    }
    let key = super::block_on(fetch_dek(sidecar, &release))?
        .with_context(|| format!("cannot get the DEK of datastore '{name}' from {sidecar}"))?;
    let protection = match mode {
        Mode::Cse => Protection::Cse(Arc::new(key)),
        Mode::Cpk => Protection::Cpk(CustomerKey::from_data_key(&key)),
        Mode::Sse => bail!("datastore '{name}' is sse: it has no DEK to release"),
    };
    Ok((transfer::open(&address, access)?, protection))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unwrap_request_has_the_reference_shape() {
        let release = KeyRelease {
            secret: SecretRef {
                kid: "wrapped-ds-dek-k".into(),
                akv_endpoint: "https://127.0.0.1:21301".into(),
            },
            kek: KekRef {
                kid: "k".into(),
                akv_endpoint: host_of("https://127.0.0.1:21301/"),
                maa_endpoint: host_of("https://127.0.0.1:21302"),
            },
            client_id: None,
            tenant_id: Some("t".into()),
        };
        assert_eq!(
            release.unwrap_request(),
            json!({"clientId": "", "tenantId": "t", "kid": "wrapped-ds-dek-k",
                   "akvEndpoint": "https://127.0.0.1:21301",
                   "kek": {"kid": "k", "akvEndpoint": "127.0.0.1:21301",
                           "maaEndpoint": "127.0.0.1:21302"}})
        );
    }
}

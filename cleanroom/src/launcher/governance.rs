//! The launcher's client of the governance sidecar (plain HTTP on loopback): consent checks
//! (`POST /consentcheck/{option}` → `{status, reason?}`) and events (`PUT /events` with
//! `{"source":"code-launcher","message":…}`, stored under the contract's id, scope ""). The mount
//! launcher uses the same client with its own source ([`MOUNT_LAUNCHER_SOURCE`]).

use std::time::Duration;

use serde_json::{Value, json};

/// The event source the reference's launcher names.
pub const EVENT_SOURCE: &str = "code-launcher";
/// The event source of the mount launchers (their audit events name the dataset manifest each
/// access point verified).
pub const MOUNT_LAUNCHER_SOURCE: &str = "mount-launcher";

/// The consent options the launcher checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentOption {
    /// Running the application.
    Execution,
    /// Exporting the application's logs.
    Logging,
    /// Exporting the infrastructure telemetry.
    Telemetry,
}

impl ConsentOption {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Self::Execution => "execution",
            Self::Logging => "logging",
            Self::Telemetry => "telemetry",
        }
    }
}

/// A consent check that could not be made (the sidecar unreachable or refusing).
#[derive(Debug, Clone, thiserror::Error)]
#[error("the {option} consent check at {url} failed: {reason}")]
pub struct ConsentCheckError {
    /// The option.
    pub option: &'static str,
    /// The sidecar's URL.
    pub url: String,
    /// What went wrong (the sidecar's status and error code, or the connection error).
    pub reason: String,
}

/// The governance sidecar, as the launcher calls it.
#[derive(Debug, Clone)]
pub struct GovernanceSidecarClient {
    base: String,
    http: reqwest::Client,
    events: bool,
    source: &'static str,
}

impl GovernanceSidecarClient {
    /// A client of the sidecar at `base` (`http://127.0.0.1:8300`); `events` false sends none.
    pub fn new(base: &str, events: bool) -> Result<Self, String> {
        let url = reqwest::Url::parse(base)
            .map_err(|e| format!("the governance sidecar URL '{base}' is not a URL: {e}"))?;
        let host = url
            .host_str()
            .unwrap_or("")
            .trim_start_matches('[')
            .trim_end_matches(']');
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if url.scheme() != "http" || !loopback {
            return Err(format!(
                "the governance sidecar URL '{base}' must be http on a loopback host"
            ));
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            http,
            events,
            source: EVENT_SOURCE,
        })
    }

    /// The same client, its events sent as `source` (default [`EVENT_SOURCE`]).
    pub fn with_source(mut self, source: &'static str) -> Self {
        self.source = source;
        self
    }

    /// The consent status (`enabled`, `disabled`, …) of `option`.
    pub async fn consent(&self, option: ConsentOption) -> Result<String, ConsentCheckError> {
        let url = format!("{}/consentcheck/{}", self.base, option.name());
        let failed = |reason: String| ConsentCheckError {
            option: option.name(),
            url: url.clone(),
            reason,
        };
        let response = self
            .http
            .post(&url)
            .send()
            .await
            .map_err(|e| failed(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let body: Value = response
            .json()
            .await
            .map_err(|e| failed(format!("{status}, not JSON: {}", e.without_url())))?;
        if !(200..300).contains(&status) {
            let code = body["error"]["code"].as_str().unwrap_or("");
            let message = body["error"]["message"].as_str().unwrap_or("");
            return Err(failed(format!("{status} {code}: {message}")));
        }
        body["status"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| failed("the answer has no status".into()))
    }

    /// Sends `message` as an event; a failure is logged, never fatal (the audit trail is the
    /// ledger's; the launcher does not stop an app because an event could not be written).
    pub async fn event(&self, message: &str) {
        if !self.events {
            return;
        }
        let url = format!("{}/events", self.base);
        let body = json!({ "source": self.source, "message": message });
        match self.http.put(&url).json(&body).send().await {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => eprintln!(
                "encfs {}: event '{message}' refused by {url}: {}",
                self.source,
                response.status()
            ),
            Err(e) => eprintln!(
                "encfs {}: event '{message}' not sent to {url}: {}",
                self.source,
                e.without_url()
            ),
        }
    }
}

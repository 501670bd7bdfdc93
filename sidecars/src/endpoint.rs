//! Endpoints as the reference's requests name them: `akv_endpoint` / `maa_endpoint` are bare
//! hosts (`myvault.vault.azure.net`, https implied) or URLs.
//!
//! A URL may say `http://` only for a loopback host (a sidecar or a test stand-in on this
//! machine): a bearer token or an attestation token never crosses a network in clear.

/// A parsed endpoint: its base URL (no trailing slash) and its host (what a certificate must
/// name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    base: String,
    host: String,
}

/// Why an endpoint is refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// Not a host or URL.
    #[error("{what} '{text}' is not a host or URL")]
    Malformed {
        /// Which endpoint (`akv_endpoint`, …).
        what: &'static str,
        /// The text given.
        text: String,
    },
    /// A scheme other than https (http only for loopback hosts).
    #[error("{what} '{text}' must be https (http only for a loopback host)")]
    Scheme {
        /// Which endpoint.
        what: &'static str,
        /// The text given.
        text: String,
    },
}

impl Endpoint {
    /// Parses `text` (host, host:port or URL); `what` names it in errors.
    pub fn parse(what: &'static str, text: &str) -> Result<Self, EndpointError> {
        let trimmed = text.trim();
        let malformed = || EndpointError::Malformed {
            what,
            text: text.to_owned(),
        };
        if trimmed.is_empty() {
            return Err(malformed());
        }
        let with_scheme = if trimmed.contains("://") {
            trimmed.to_owned()
        } else {
            format!("https://{trimmed}")
        };
        let url = reqwest::Url::parse(&with_scheme).map_err(|_| malformed())?;
        let host = url
            .host_str()
            .ok_or_else(malformed)?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        match url.scheme() {
            "https" => {}
            "http" if is_loopback(&host) => {}
            _ => {
                return Err(EndpointError::Scheme {
                    what,
                    text: text.to_owned(),
                });
            }
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(malformed());
        }
        let base = url.as_str().trim_end_matches('/').to_owned();
        Ok(Self { base, host })
    }

    /// The base URL, without a trailing slash.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The host (an IP address without brackets, or a DNS name).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The Azure AD resource a token for this vault is for: Managed HSM or Key Vault.
    pub fn vault_resource(&self) -> &'static str {
        if self.host.ends_with(".managedhsm.azure.net") {
            "https://managedhsm.azure.net"
        } else {
            "https://vault.azure.net"
        }
    }
}

/// Whether `host` is this machine (`localhost`, 127.0.0.0/8, ::1).
pub fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_urls() {
        let e = Endpoint::parse("akv_endpoint", "myvault.vault.azure.net").unwrap();
        assert_eq!(e.base(), "https://myvault.vault.azure.net");
        assert_eq!(e.host(), "myvault.vault.azure.net");
        assert_eq!(e.vault_resource(), "https://vault.azure.net");
        let e = Endpoint::parse("akv_endpoint", "https://127.0.0.1:21201/").unwrap();
        assert_eq!(e.base(), "https://127.0.0.1:21201");
        assert_eq!(e.host(), "127.0.0.1");
        let e = Endpoint::parse("akv_endpoint", "x.managedhsm.azure.net").unwrap();
        assert_eq!(e.vault_resource(), "https://managedhsm.azure.net");
        let e = Endpoint::parse("skr", "http://[::1]:8284").unwrap();
        assert_eq!(e.host(), "::1");
        assert_eq!(e.base(), "http://[::1]:8284");
    }

    #[test]
    fn refused() {
        assert!(matches!(
            Endpoint::parse("akv_endpoint", "http://myvault.vault.azure.net"),
            Err(EndpointError::Scheme { .. })
        ));
        assert!(matches!(
            Endpoint::parse("akv_endpoint", "ftp://127.0.0.1"),
            Err(EndpointError::Scheme { .. })
        ));
        for bad in ["", "  ", "https://", "https://h/?q=1", "https://u:p@h"] {
            assert!(
                matches!(
                    Endpoint::parse("akv_endpoint", bad),
                    Err(EndpointError::Malformed { .. })
                ),
                "{bad}"
            );
        }
    }
}

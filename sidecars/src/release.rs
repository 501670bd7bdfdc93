//! What the skr sidecar checks in a Key Vault key release, and how it opens the released key
//! (ref §11 steps 5–10).
//!
//! The release is a JWS (`{"value": "<header>.<payload>.<signature>"}`). It is accepted only if
//! its header says RS256, `x5c[0]` is a certificate that chains (through the rest of `x5c`) to a
//! trusted root — the `--trust-ca` PEMs plus the web PKI roots real Key Vault certificates chain
//! to — is valid now, is fit for server authentication and names the vault's host (as the
//! reference verifies it, Go's `x509.Verify` with `DNSName` = the akv endpoint), and the
//! signature verifies under that certificate's key. Certificates and signatures are
//! rustls-webpki's (ring algorithms); nothing is parsed by hand beyond base64 and JSON.
//!
//! Then `response.key.key.key_hsm` (base64url JSON `{schema_version, header, ciphertext}`) is
//! unwrapped with the runtime key: `ciphertext` = RSA-OAEP(AES key) ‖ AES-KWP(PKCS#8 DER), the
//! OAEP hash from `request.enc`.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use encfs_crypto::kek::{KekPrivateKey, OaepHash};
use rustls_pki_types::TrustAnchor;
use rustls_pki_types::{CertificateDer, ServerName, SignatureVerificationAlgorithm, UnixTime};
use serde_json::Value;
use webpki::{EndEntityCert, KeyUsage};
use zeroize::Zeroizing;

/// Key Vault's default `enc` (used when a release's `request.enc` is absent).
pub const DEFAULT_ENC: &str = "CKM_RSA_AES_KEY_WRAP";

/// Why a release is refused. No variant carries key material.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReleaseError {
    /// A `--trust-ca` file is not a PEM certificate that can anchor a chain.
    #[error("trusted CA '{name}' is not a usable PEM certificate")]
    TrustAnchor {
        /// The file or label.
        name: String,
    },
    /// The JWS is not three base64url parts with a JSON header and payload.
    #[error("the key release is not a well-formed JWS: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The header's `alg` is not RS256.
    #[error("the key release is signed with '{alg}', not RS256")]
    Algorithm {
        /// The algorithm named.
        alg: String,
    },
    /// `x5c` does not chain to a trusted root, is expired or not for this host.
    #[error("the key release's certificate is not trusted for '{host}': {reason}")]
    Certificate {
        /// The vault's host.
        host: String,
        /// webpki's reason.
        reason: String,
    },
    /// The signature does not verify under `x5c[0]`.
    #[error("the key release's signature does not verify under its certificate")]
    Signature,
    /// The payload lacks a member the release needs.
    #[error("the key release's payload has no {member}")]
    Payload {
        /// The member path.
        member: &'static str,
    },
    /// `request.enc` names a wrapping this sidecar does not know.
    #[error("the key release uses the unsupported wrapping '{enc}'")]
    Enc {
        /// The `enc` value.
        enc: String,
    },
    /// The released key is not an RSA key.
    #[error("the released key is of type '{kty}'; only RSA keys are supported")]
    KeyType {
        /// Its `kty`.
        kty: String,
    },
    /// `key_hsm` does not unwrap with the runtime key (not wrapped to it, or damaged).
    #[error("the released key does not unwrap with this sidecar's runtime key")]
    Unwrap,
    /// The unwrapped material is not an RSA PKCS#8 key.
    #[error("the released key material is not an RSA PKCS#8 key: {0}")]
    Material(#[from] crate::jwk::JwkError),
}

/// The roots a release certificate may chain to.
pub struct ReleaseVerifier {
    anchors: Vec<TrustAnchor<'static>>,
}

/// Signature algorithms accepted on the chain's certificates.
static CHAIN_ALGORITHMS: &[&dyn SignatureVerificationAlgorithm] = &[
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
    webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
    webpki::ring::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P256_SHA384,
    webpki::ring::ECDSA_P384_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
];

impl ReleaseVerifier {
    /// Trusts the web PKI roots plus every certificate in `extra_ca_pems` (PEM text, each may
    /// hold several certificates); `names` label them in errors.
    pub fn new(extra_ca_pems: &[(String, Vec<u8>)]) -> Result<Self, ReleaseError> {
        let mut anchors: Vec<TrustAnchor<'static>> = webpki_roots::TLS_SERVER_ROOTS.to_vec();
        for (name, text) in extra_ca_pems {
            let blocks = pem::parse_many(text)
                .map_err(|_| ReleaseError::TrustAnchor { name: name.clone() })?;
            let certs: Vec<_> = blocks.iter().filter(|b| b.tag() == "CERTIFICATE").collect();
            if certs.is_empty() {
                return Err(ReleaseError::TrustAnchor { name: name.clone() });
            }
            for block in certs {
                let der = CertificateDer::from(block.contents().to_vec());
                let anchor = webpki::anchor_from_trusted_cert(&der)
                    .map_err(|_| ReleaseError::TrustAnchor { name: name.clone() })?
                    .to_owned();
                anchors.push(anchor);
            }
        }
        Ok(Self { anchors })
    }

    /// Verifies a release JWS for the vault at `host` and returns its payload.
    pub fn verify(&self, jws: &str, host: &str) -> Result<Value, ReleaseError> {
        self.verify_at(jws, host, UnixTime::now())
    }

    /// [`Self::verify`] at a given time (tests).
    pub fn verify_at(&self, jws: &str, host: &str, now: UnixTime) -> Result<Value, ReleaseError> {
        let malformed = |reason: &str| ReleaseError::Malformed {
            reason: reason.to_owned(),
        };
        let mut parts = jws.trim().split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("not three dot-separated parts"));
        };
        let header: Value = decode_json(header_b64).ok_or_else(|| malformed("header"))?;
        let alg = header.get("alg").and_then(Value::as_str).unwrap_or("");
        if alg != "RS256" {
            return Err(ReleaseError::Algorithm {
                alg: alg.to_owned(),
            });
        }
        let chain: Vec<CertificateDer<'static>> = header
            .get("x5c")
            .and_then(Value::as_array)
            .filter(|chain| !chain.is_empty())
            .ok_or_else(|| malformed("no x5c in the header"))?
            .iter()
            .map(|cert| {
                cert.as_str()
                    .and_then(|b64| STANDARD.decode(b64).ok())
                    .map(CertificateDer::from)
                    .ok_or_else(|| malformed("an x5c entry is not base64 DER"))
            })
            .collect::<Result<_, _>>()?;
        let certificate_error = |reason: String| ReleaseError::Certificate {
            host: host.to_owned(),
            reason,
        };
        let leaf = EndEntityCert::try_from(&chain[0])
            .map_err(|e| certificate_error(format!("x5c[0]: {e}")))?;
        leaf.verify_for_usage(
            CHAIN_ALGORITHMS,
            &self.anchors,
            &chain[1..],
            now,
            KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| certificate_error(e.to_string()))?;
        valid_for_host(&leaf, host).map_err(certificate_error)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| malformed("signature is not base64url"))?;
        let signed = &jws.trim()[..header_b64.len() + 1 + payload_b64.len()];
        leaf.verify_signature(
            webpki::ring::RSA_PKCS1_2048_8192_SHA256,
            signed.as_bytes(),
            &signature,
        )
        .map_err(|_| ReleaseError::Signature)?;
        decode_json(payload_b64).ok_or_else(|| malformed("payload"))
    }
}

/// Whether `leaf` names `host`. A loopback host (`127.0.0.1`, `::1`, `localhost`) is matched
/// by any of the loopback names: they are one machine, and a local vault's certificates may name
/// it either way.
fn valid_for_host(leaf: &EndEntityCert<'_>, host: &str) -> Result<(), String> {
    let check = |candidate: &str| -> Result<(), String> {
        let name = ServerName::try_from(candidate)
            .map_err(|_| format!("'{candidate}' is not a DNS name or IP address"))?;
        leaf.verify_is_valid_for_subject_name(&name)
            .map_err(|e| e.to_string())
    };
    let first = check(host);
    if first.is_ok() || !crate::endpoint::is_loopback(host) {
        return first;
    }
    for alias in ["localhost", "127.0.0.1", "::1"] {
        if check(alias).is_ok() {
            return Ok(());
        }
    }
    first
}

fn decode_json(b64: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD.decode(b64.trim_end_matches('=')).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The OAEP hash of a Key Vault `enc` value.
pub fn oaep_hash_of_enc(enc: &str) -> Result<OaepHash, ReleaseError> {
    match enc {
        "CKM_RSA_AES_KEY_WRAP" => Ok(OaepHash::Sha1),
        "RSA_AES_KEY_WRAP_256" => Ok(OaepHash::Sha256),
        "RSA_AES_KEY_WRAP_384" => Ok(OaepHash::Sha384),
        other => Err(ReleaseError::Enc {
            enc: other.to_owned(),
        }),
    }
}

/// Opens a verified release payload with the runtime key: the released key as a private JWK
/// (JSON text, zeroized on drop) carrying the release's `kid` and `key_ops`.
pub fn released_key_jwk(
    payload: &Value,
    runtime_key: &KekPrivateKey,
) -> Result<Zeroizing<String>, ReleaseError> {
    let enc = payload
        .pointer("/request/enc")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_ENC);
    let hash = oaep_hash_of_enc(enc)?;
    let key = payload
        .pointer("/response/key/key")
        .ok_or(ReleaseError::Payload {
            member: "response.key.key",
        })?;
    let kty = key.get("kty").and_then(Value::as_str).unwrap_or("");
    if kty != "RSA" && kty != "RSA-HSM" {
        return Err(ReleaseError::KeyType {
            kty: kty.to_owned(),
        });
    }
    let kid = key.get("kid").and_then(Value::as_str).unwrap_or("");
    let key_ops: Vec<String> = key
        .get("key_ops")
        .and_then(Value::as_array)
        .map(|ops| {
            ops.iter()
                .filter_map(|op| op.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let key_hsm = key
        .get("key_hsm")
        .and_then(Value::as_str)
        .ok_or(ReleaseError::Payload {
            member: "response.key.key.key_hsm",
        })?;
    let key_hsm = decode_json(key_hsm).ok_or(ReleaseError::Payload {
        member: "response.key.key.key_hsm (base64url JSON)",
    })?;
    let ciphertext = key_hsm
        .get("ciphertext")
        .and_then(Value::as_str)
        .and_then(|b64| URL_SAFE_NO_PAD.decode(b64.trim_end_matches('=')).ok())
        .ok_or(ReleaseError::Payload {
            member: "key_hsm.ciphertext",
        })?;
    let material = encfs_crypto::rsa_aes_wrap::unwrap(runtime_key, hash, &ciphertext)
        .map_err(|_| ReleaseError::Unwrap)?;
    Ok(crate::jwk::private_jwk_from_pkcs8(
        &material, kid, &key_ops,
    )?)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use encfs_crypto::kek::{KekPublicKey, KekSize};
    use serde_json::json;

    /// A CA and a release-signing certificate for `hosts`, as a test vault would have them.
    pub(crate) struct TestSigner {
        pub ca_pem: String,
        pub cert_der: Vec<u8>,
        pub key_pem: String,
    }

    impl TestSigner {
        pub(crate) fn new(hosts: &[&str]) -> Self {
            let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
            let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
            ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca_params
                .distinguished_name
                .push(rcgen::DnType::CommonName, "test vault CA");
            let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
            let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
            let params = rcgen::CertificateParams::new(
                hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
            )
            .unwrap();
            let cert = params.signed_by(&key, &*ca).unwrap();
            Self {
                ca_pem: ca.pem(),
                cert_der: cert.der().to_vec(),
                key_pem: key.serialize_pem(),
            }
        }

        /// A release JWS whose `key_hsm` wraps `released` to `recipient`.
        pub(crate) fn release(
            &self,
            recipient: &KekPublicKey,
            released: &KekPrivateKey,
            enc: &str,
        ) -> String {
            let hash = oaep_hash_of_enc(enc).unwrap();
            let material = released.to_pkcs8_der().unwrap();
            let ciphertext = encfs_crypto::rsa_aes_wrap::wrap(recipient, hash, &material).unwrap();
            let key_hsm = json!({
                "schema_version": "1.0",
                "header": {"kid": "TpmEphemeralEncryptionKey", "alg": "dir", "enc": enc},
                "ciphertext": URL_SAFE_NO_PAD.encode(ciphertext),
            });
            let payload = json!({
                "request": {"api-version": "7.4", "enc": enc, "kid": "https://v/keys/kek/1"},
                "response": {"key": {
                    "attributes": {"exportable": true},
                    "key": {
                        "key_hsm": URL_SAFE_NO_PAD.encode(key_hsm.to_string()),
                        "kid": "https://v/keys/kek/1",
                        "kty": "RSA-HSM",
                        "key_ops": ["encrypt", "decrypt"],
                    },
                    "release_policy": {"contentType": "application/json; charset=utf-8", "data": ""},
                }},
            });
            self.sign(&payload)
        }

        pub(crate) fn sign(&self, payload: &Value) -> String {
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            header.x5c = Some(vec![STANDARD.encode(&self.cert_der)]);
            let key = jsonwebtoken::EncodingKey::from_rsa_pem(self.key_pem.as_bytes()).unwrap();
            jsonwebtoken::encode(&header, payload, &key).unwrap()
        }
    }

    fn verifier(signer: &TestSigner) -> ReleaseVerifier {
        ReleaseVerifier::new(&[("test-ca.pem".into(), signer.ca_pem.clone().into_bytes())]).unwrap()
    }

    #[test]
    fn a_release_verifies_and_opens_for_each_enc() {
        let signer = TestSigner::new(&["127.0.0.1", "localhost"]);
        let runtime = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let kek = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        for enc in [
            "CKM_RSA_AES_KEY_WRAP",
            "RSA_AES_KEY_WRAP_256",
            "RSA_AES_KEY_WRAP_384",
        ] {
            let jws = signer.release(&runtime.public_key(), &kek, enc);
            for host in ["127.0.0.1", "localhost"] {
                let payload = verifier(&signer).verify(&jws, host).unwrap();
                let jwk = released_key_jwk(&payload, &runtime).unwrap();
                let der = crate::jwk::pkcs8_from_private_jwk(&jwk).unwrap();
                let opened = KekPrivateKey::from_pkcs8_der(&der).unwrap();
                let ct = kek
                    .public_key()
                    .encrypt_oaep(OaepHash::Sha256, b"dek")
                    .unwrap();
                assert_eq!(
                    opened
                        .decrypt_oaep(OaepHash::Sha256, &ct)
                        .unwrap()
                        .as_slice(),
                    b"dek"
                );
                let value: Value = serde_json::from_str(&jwk).unwrap();
                assert_eq!(value["kid"], "https://v/keys/kek/1");
                assert_eq!(value["key_ops"], json!(["encrypt", "decrypt"]));
            }
        }
    }

    #[test]
    fn untrusted_wrong_host_tampered_or_wrong_key_is_refused() {
        let signer = TestSigner::new(&["127.0.0.1"]);
        let runtime = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let kek = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let jws = signer.release(&runtime.public_key(), &kek, "RSA_AES_KEY_WRAP_256");

        // Another CA: not trusted.
        let other = TestSigner::new(&["127.0.0.1"]);
        assert!(matches!(
            verifier(&other).verify(&jws, "127.0.0.1"),
            Err(ReleaseError::Certificate { .. })
        ));
        // Only the web PKI roots: not trusted.
        assert!(matches!(
            ReleaseVerifier::new(&[]).unwrap().verify(&jws, "127.0.0.1"),
            Err(ReleaseError::Certificate { .. })
        ));
        // The certificate does not name this vault.
        assert!(matches!(
            verifier(&signer).verify(&jws, "otherhost"),
            Err(ReleaseError::Certificate { .. })
        ));
        // A loopback vault whose certificate names only "localhost" is this machine.
        let localhost_only = TestSigner::new(&["localhost"]);
        let jws_localhost =
            localhost_only.release(&runtime.public_key(), &kek, "RSA_AES_KEY_WRAP_256");
        for host in ["127.0.0.1", "localhost", "::1"] {
            verifier(&localhost_only)
                .verify(&jws_localhost, host)
                .unwrap();
        }
        assert!(matches!(
            verifier(&localhost_only).verify(&jws_localhost, "vault.example"),
            Err(ReleaseError::Certificate { .. })
        ));
        // A payload changed after signing.
        let mut parts: Vec<String> = jws.split('.').map(str::to_owned).collect();
        let mut payload: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        payload["request"]["enc"] = json!("CKM_RSA_AES_KEY_WRAP");
        parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
        assert!(matches!(
            verifier(&signer).verify(&parts.join("."), "127.0.0.1"),
            Err(ReleaseError::Signature)
        ));
        // Signed by a key other than x5c[0]'s: a second signer's key with the first's chain.
        let impostor = TestSigner {
            ca_pem: signer.ca_pem.clone(),
            cert_der: signer.cert_der.clone(),
            key_pem: other.key_pem.clone(),
        };
        let forged = impostor.release(&runtime.public_key(), &kek, "RSA_AES_KEY_WRAP_256");
        assert!(matches!(
            verifier(&signer).verify(&forged, "127.0.0.1"),
            Err(ReleaseError::Signature)
        ));
        // alg none / HS256.
        let mut header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(jws.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap();
        header["alg"] = json!("none");
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            jws.split('.').nth(1).unwrap()
        );
        assert!(matches!(
            verifier(&signer).verify(&none, "127.0.0.1"),
            Err(ReleaseError::Algorithm { .. })
        ));
        assert!(matches!(
            verifier(&signer).verify("a.b", "127.0.0.1"),
            Err(ReleaseError::Malformed { .. })
        ));
        // Wrapped to another runtime key: verifies, but does not open.
        let payload = verifier(&signer).verify(&jws, "127.0.0.1").unwrap();
        let stranger = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        assert!(matches!(
            released_key_jwk(&payload, &stranger),
            Err(ReleaseError::Unwrap)
        ));
    }

    #[test]
    fn an_expired_certificate_is_refused() {
        let signer = TestSigner::new(&["127.0.0.1"]);
        let runtime = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let kek = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let jws = signer.release(&runtime.public_key(), &kek, "RSA_AES_KEY_WRAP_256");
        // rcgen's default validity ends in 4096; check past it.
        let far = UnixTime::since_unix_epoch(std::time::Duration::from_secs(4_200_000_000 * 30));
        assert!(matches!(
            verifier(&signer).verify_at(&jws, "127.0.0.1", far),
            Err(ReleaseError::Certificate { .. })
        ));
    }

    #[test]
    fn unknown_enc_and_key_types_are_refused() {
        assert!(matches!(
            oaep_hash_of_enc("A256KW"),
            Err(ReleaseError::Enc { .. })
        ));
        let runtime = KekPrivateKey::generate(KekSize::Rsa2048).unwrap();
        let payload = json!({"request": {"enc": "RSA_AES_KEY_WRAP_256"},
            "response": {"key": {"key": {"kty": "oct-HSM", "key_hsm": ""}}}});
        assert!(matches!(
            released_key_jwk(&payload, &runtime),
            Err(ReleaseError::KeyType { .. })
        ));
        let payload = json!({"request": {"enc": "RSA_AES_KEY_WRAP_256"}, "response": {}});
        assert!(matches!(
            released_key_jwk(&payload, &runtime),
            Err(ReleaseError::Payload { .. })
        ));
    }
}

//! The datasink manifest a clean room seals at the end of a run, and the consumer's check of it.
//!
//! A datasink's blobs are written inside the clean room; who wrote them is proven by who signed
//! their manifest. The mount launcher of a datasink, after its mount has unmounted (every blob
//! committed), generates a P-384 key in memory, asks the skr sidecar for an attestation token
//! whose runtime data is `{"keys": [<the public key as a JWK>]}` (`POST /attest/maa`; the token's
//! `x-ms-runtime.keys` then carries the key, and its `x-ms-sevsnpvm-hostdata` the clean room's
//! policy), builds the manifest of the datasink's prefix, signs it with that key (ES384) and
//! carries the token in the COSE message (protected header
//! [`encfs_dataset::signed::HEADER_ATTESTATION`]). The key is never written anywhere and dies
//! with the process.
//!
//! The consumer's check ([`verify_attested`]): the token verifies against the attestation
//! authority's published keys, its runtime key is the manifest's signing key, its hostdata is the
//! one the consumer expects (the accepted policy's, if given); then the blobs are checked against
//! the manifest as for any manifest. So the consumer can prove which run (which policy) produced
//! the output.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use encfs_dataset::{ManifestSigner, SignedManifest, Trust};
use serde_json::{Value, json};

/// The `kid` of the sealing key in the token's runtime data.
pub const SEALING_KEY_ID: &str = "encfs-datasink-manifest";

/// How many blobs the sealing reads at once.
const SEAL_PARALLELISM: usize = 16;

/// A P-384 key generated in memory, and the attestation token that binds its public key.
pub struct AttestedSigner {
    key: EcdsaKeyPair,
    token: String,
}

impl std::fmt::Debug for AttestedSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestedSigner").finish_non_exhaustive()
    }
}

/// The public JWK of an uncompressed P-384 point (`04 ‖ x ‖ y`).
fn p384_jwk(point: &[u8]) -> Result<Value> {
    ensure!(
        point.len() == 97 && point[0] == 4,
        "not an uncompressed P-384 point"
    );
    Ok(json!({
        "kty": "EC",
        "crv": "P-384",
        "x": URL_SAFE_NO_PAD.encode(&point[1..49]),
        "y": URL_SAFE_NO_PAD.encode(&point[49..]),
        "kid": SEALING_KEY_ID,
        "use": "sig",
        "alg": "ES384",
    }))
}

/// The uncompressed point of a public P-384 JWK.
fn p384_point(jwk: &Value) -> Result<Vec<u8>> {
    ensure!(
        jwk["kty"] == "EC" && jwk["crv"] == "P-384",
        "the key is not an EC P-384 key"
    );
    let coordinate = |name: &str| -> Result<Vec<u8>> {
        let text = jwk[name]
            .as_str()
            .with_context(|| format!("the key has no '{name}'"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .with_context(|| format!("the key's '{name}' is not base64url"))?;
        ensure!(bytes.len() == 48, "the key's '{name}' is not 48 bytes");
        Ok(bytes)
    };
    let mut point = vec![4u8];
    point.extend(coordinate("x")?);
    point.extend(coordinate("y")?);
    Ok(point)
}

impl AttestedSigner {
    /// Generates the key and gets its token from the skr sidecar at `skr`
    /// (`http://127.0.0.1:8284`) for the authority `maa_endpoint`.
    pub async fn new(skr: &str, maa_endpoint: &str) -> Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot generate a P-384 key"))?;
        // The PKCS#8 document is aws-lc's; the key pair frees (and clears) it with the pair.
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref())
            .map_err(|_| anyhow::anyhow!("cannot load the generated P-384 key"))?;
        drop(pkcs8);
        let runtime_data = json!({ "keys": [p384_jwk(key.public_key().as_ref())?] }).to_string();
        let url = format!("{}/attest/maa", skr.trim_end_matches('/'));
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .build()
            .context("cannot build the HTTP client")?;
        let response = http
            .post(&url)
            .json(&json!({
                "maa_endpoint": maa_endpoint,
                "runtime_data": STANDARD.encode(runtime_data),
            }))
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("{url}: {}", e.without_url()))?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| {
            anyhow::anyhow!("{url} answered {status}, not JSON: {}", e.without_url())
        })?;
        if !status.is_success() {
            bail!(
                "{url} refused the attestation ({status}): {}",
                body["error"]["message"].as_str().unwrap_or("")
            );
        }
        let token = body["token"]
            .as_str()
            .with_context(|| format!("the answer of {url} has no token"))?
            .to_owned();
        Ok(Self { key, token })
    }
}

impl ManifestSigner for AttestedSigner {
    fn algorithm(&self) -> coset::iana::Algorithm {
        coset::iana::Algorithm::ES384
    }

    fn certificate_der(&self) -> Option<&[u8]> {
        None
    }

    fn sign(&self, to_be_signed: &[u8]) -> Result<Vec<u8>, encfs_dataset::Error> {
        self.key
            .sign(&SystemRandom::new(), to_be_signed)
            .map(|signature| signature.as_ref().to_vec())
            .map_err(|_| encfs_dataset::Error::Signing("ECDSA P-384 signing failed".into()))
    }

    fn attestation_token(&self) -> Option<&str> {
        Some(&self.token)
    }
}

/// Seals the datasink at `address` (its store address, with any sub-directory): builds the
/// manifest of its prefix, signs it with an [`AttestedSigner`] and stores it beside the data.
/// Returns the manifest's digest.
pub async fn seal_datasink(address: &str, skr: &str, maa_endpoint: &str) -> Result<String> {
    let location =
        encfs_store::open_store_with(address, None, encfs_store::retry::RetryPolicy::default())
            .with_context(|| {
                format!(
                    "invalid store address {}",
                    encfs_store::redact::redact(address)
                )
            })?;
    let signer = AttestedSigner::new(skr, maa_endpoint).await?;
    let manifest =
        encfs_dataset::build(location.store.as_ref(), &location.prefix, SEAL_PARALLELISM).await?;
    let signed = manifest.into_signed(&signer)?;
    let digest = signed.digest();
    let bytes = bytes::Bytes::from(signed.bytes);
    super::dataset::store_manifest(location.store.as_ref(), &location.prefix, bytes).await?;
    Ok(digest)
}

/// What the consumer learnt from a clean room's manifest.
#[derive(Debug)]
pub struct AttestedManifest {
    /// The verified manifest.
    pub signed: SignedManifest,
    /// The token's `x-ms-sevsnpvm-hostdata`: the policy of the clean room that sealed it.
    pub hostdata: String,
}

/// Checks a manifest a clean room sealed: its attestation token against the authority
/// `authority` (TLS trusting the PEM certificates of `ca_files` besides the system roots), the
/// token's runtime key as its signing key, and the token's hostdata against `hostdata` if given.
pub async fn verify_attested(
    bytes: &[u8],
    authority: &str,
    ca_files: &[PathBuf],
    hostdata: Option<&str>,
) -> Result<AttestedManifest> {
    let parsed = SignedManifest::parse(bytes)?;
    let token = parsed
        .attestation_token
        .as_deref()
        .context("the manifest carries no attestation token: it was not sealed by a clean room")?;
    let ca_pems = ca_files
        .iter()
        .map(|path| {
            std::fs::read(path)
                .with_context(|| format!("cannot read the CA certificate {}", path.display()))
        })
        .collect::<Result<Vec<_>>>()?;
    let client = encfs_attestation::maa::MaaClient::new(&ca_pems)?;
    let claims = client
        .verify_token(authority, token)
        .await
        .with_context(|| format!("the manifest's attestation token is not from {authority}"))?;
    let keys = claims
        .get("x-ms-runtime")
        .and_then(|r| r.get("keys"))
        .and_then(Value::as_array)
        .context("the attestation token's x-ms-runtime has no keys")?;
    let [key] = keys.as_slice() else {
        bail!(
            "the attestation token's x-ms-runtime holds {} keys, not the one sealing key",
            keys.len()
        );
    };
    let point = p384_point(key).context("the attestation token's runtime key")?;
    let signed = SignedManifest::verify(bytes, &Trust::P384PublicKey(point))
        .context("the manifest is not signed by the key its attestation token binds")?;
    let found = claims
        .get("x-ms-sevsnpvm-hostdata")
        .and_then(Value::as_str)
        .context("the attestation token has no x-ms-sevsnpvm-hostdata")?
        .to_owned();
    if let Some(expected) = hostdata
        && !found.eq_ignore_ascii_case(expected.trim())
    {
        bail!(
            "the manifest was sealed by a clean room with hostdata {found}, not {}",
            expected.trim()
        );
    }
    Ok(AttestedManifest {
        signed,
        hostdata: found,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use encfs_attestation::authority::VirtualAuthority;

    fn generated_key() -> EcdsaKeyPair {
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
                .unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap()
    }

    fn jwk_of(key: &EcdsaKeyPair) -> Value {
        p384_jwk(key.public_key().as_ref()).unwrap()
    }

    /// A token of `authority` (issuer `issuer`) whose runtime data holds `keys`.
    fn token(
        authority: &VirtualAuthority,
        issuer: &str,
        keys: Vec<Value>,
        hostdata: &str,
    ) -> String {
        let now = encfs_attestation::authority::unix_now();
        let claims = json!({
            "iss": issuer, "iat": now, "nbf": now, "exp": now + 600,
            "x-ms-runtime": {"keys": keys},
            "x-ms-sevsnpvm-hostdata": hostdata,
        });
        authority
            .sign_token(issuer, claims.as_object().unwrap())
            .unwrap()
    }

    /// The consumer's check against a real (virtual) authority over HTTPS: the right run passes;
    /// another hostdata, a token binding another key, two keys, another authority's token and a
    /// manifest without a token are refused.
    #[tokio::test(flavor = "multi_thread")]
    async fn the_consumer_checks_the_token_the_key_and_the_hostdata() {
        let dir = tempfile::tempdir().unwrap();
        let authority = VirtualAuthority::open(&dir.path().join("authority")).unwrap();
        let running = encfs_attestation::service::serve(
            VirtualAuthority::open(&dir.path().join("authority")).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .unwrap();
        let issuer = running.url();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, running.ca_pem()).unwrap();
        let cas = [ca];
        let hostdata = "ab".repeat(32);
        let manifest = encfs_dataset::Manifest::new("out/", Vec::new()).unwrap();
        let seal = |key: EcdsaKeyPair, keys: Option<Vec<Value>>, by: &VirtualAuthority| {
            let mut signer = AttestedSigner {
                key,
                token: String::new(),
            };
            let keys = keys.unwrap_or_else(|| vec![jwk_of(&signer.key)]);
            signer.token = token(by, &issuer, keys, &hostdata);
            manifest.seal(&signer).unwrap().bytes
        };

        let good = seal(generated_key(), None, &authority);
        let checked = verify_attested(&good, &issuer, &cas, Some(&hostdata))
            .await
            .unwrap();
        assert_eq!(checked.hostdata, hostdata);
        assert_eq!(checked.signed.manifest.store_prefix, "out/");
        verify_attested(&good, &issuer, &cas, None).await.unwrap();

        let refused = |bytes: Vec<u8>, hostdata: Option<String>| {
            let (issuer, cas) = (issuer.clone(), cas.clone());
            async move {
                format!(
                    "{:#}",
                    verify_attested(&bytes, &issuer, &cas, hostdata.as_deref())
                        .await
                        .unwrap_err()
                )
            }
        };
        let error = refused(good.clone(), Some("cd".repeat(32))).await;
        assert!(
            error.contains(&format!("hostdata {hostdata}, not")),
            "{error}"
        );
        let other = jwk_of(&generated_key());
        let error = refused(
            seal(generated_key(), Some(vec![other.clone()]), &authority),
            None,
        )
        .await;
        assert!(error.contains("not signed by the key"), "{error}");
        let two = vec![other.clone(), other.clone()];
        let error = refused(seal(generated_key(), Some(two), &authority), None).await;
        assert!(error.contains("2 keys"), "{error}");
        let stranger = VirtualAuthority::open(&dir.path().join("stranger")).unwrap();
        let error = refused(seal(generated_key(), None, &stranger), None).await;
        assert!(error.contains("attestation token is not from"), "{error}");
        struct Untokened(EcdsaKeyPair);
        impl ManifestSigner for Untokened {
            fn algorithm(&self) -> coset::iana::Algorithm {
                coset::iana::Algorithm::ES384
            }
            fn certificate_der(&self) -> Option<&[u8]> {
                None
            }
            fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, encfs_dataset::Error> {
                let signature = self.0.sign(&SystemRandom::new(), tbs).unwrap();
                Ok(signature.as_ref().to_vec())
            }
        }
        let plain = manifest.seal(&Untokened(generated_key())).unwrap().bytes;
        let error = refused(plain, None).await;
        assert!(error.contains("carries no attestation token"), "{error}");
        running.shutdown().await;
    }

    #[test]
    fn jwk_round_trips_the_point_and_refuses_other_keys() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng).unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let point = key.public_key().as_ref();
        let jwk = p384_jwk(point).unwrap();
        assert_eq!(jwk["kid"], SEALING_KEY_ID);
        assert_eq!(p384_point(&jwk).unwrap(), point);
        let mut other = jwk.clone();
        other["crv"] = "P-256".into();
        assert!(p384_point(&other).is_err());
        let mut short = jwk;
        short["x"] = URL_SAFE_NO_PAD.encode([1u8; 32]).into();
        assert!(p384_point(&short).is_err());
        assert!(p384_jwk(&point[1..]).is_err());
    }
}

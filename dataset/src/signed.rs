//! The signed manifest: a tagged COSE_Sign1 (RFC 9052) over the canonical JSON payload.
//!
//! ```text
//! #6.18([ protected: bstr .cbor {
//!           1 (alg): -35 (ES384; or what the signer says: ES256, ES512, PS256),
//!           3 (content type): "application/vnd.encfs.dataset-manifest+json",
//!           33 (x5chain): bstr, the signer's DER certificate (absent when the signer has none),
//!           "encfs.manifest.created_at": uint, the payload's created_at,
//!           "encfs.manifest.attestation": tstr, an attestation token binding the signing key
//!             (absent unless the signer has one: a clean room's datasink manifest) },
//!         unprotected: {},
//!         payload: bstr, the canonical JSON of [`Manifest`],
//!         signature: bstr ])
//! ```
//! The digest of a manifest is the SHA-256 of these exact bytes ([`SignedManifest::digest`]); a
//! party that pins the digest (a clean-room contract) pins the dataset. Parsing refuses anything
//! but this shape: no other header, a non-empty unprotected header, another content type, a
//! detached payload, trailing bytes, or an encoding that does not re-encode to the same bytes.
//! Signing goes through [`ManifestSigner`], so a signer of another algorithm (the clean room's
//! attested RSA key, PS256) plugs in without changes here; verification supports ES256, ES384,
//! ES512 (curve of the certificate must match) and PS256, with aws-lc-rs doing the maths.

use std::path::Path;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair as _, UnparsedPublicKey};
use coset::cbor::value::Value;
use coset::{
    CborSerializable as _, CoseSign1, HeaderBuilder, Label, RegisteredLabelWithPrivate,
    TaggedCborSerializable, iana,
};
use x509_parser::prelude::FromDer as _;
use zeroize::Zeroizing;

use crate::{Error, Manifest, sha256_digest};

/// The content type of the payload (COSE header 3).
pub const CONTENT_TYPE: &str = "application/vnd.encfs.dataset-manifest+json";
/// Protected-header label of the creation time (unix seconds; equals the payload's).
pub const HEADER_CREATED_AT: &str = "encfs.manifest.created_at";
/// COSE header label of `x5chain` (RFC 9360).
pub const HEADER_X5CHAIN: i64 = 33;
/// Protected-header label of the attestation token (an MAA JWT, text) whose `x-ms-runtime.keys`
/// holds the signing key: a clean room seals its datasinks' manifests with a key only its
/// attestation vouches for, and the verifier trusts the key the token names
/// ([`Trust::P384PublicKey`]) after checking the token.
pub const HEADER_ATTESTATION: &str = "encfs.manifest.attestation";

/// Whatever signs manifests: the algorithm, the certificate that goes into `x5chain`, and the
/// signature of the COSE `Sig_structure` (for ECDSA, fixed-width `r‖s`, as COSE requires).
pub trait ManifestSigner: Send + Sync {
    /// The COSE algorithm of the signatures.
    fn algorithm(&self) -> iana::Algorithm;
    /// The signer's DER certificate, carried in the message, if it has one.
    fn certificate_der(&self) -> Option<&[u8]>;
    /// Signs the COSE `Sig_structure` bytes.
    ///
    /// # Errors
    /// [`Error::Signing`].
    fn sign(&self, to_be_signed: &[u8]) -> Result<Vec<u8>, Error>;
    /// Signs the `Sig_structure` given in consecutive parts (the payload is one of them, and
    /// can be tens of megabytes): a signer that hashes as it goes overrides this to spare the
    /// copy; the default joins the parts and calls [`Self::sign`].
    ///
    /// # Errors
    /// [`Error::Signing`].
    fn sign_parts(&self, parts: &[&[u8]]) -> Result<Vec<u8>, Error> {
        self.sign(&parts.concat())
    }
    /// An attestation token binding the signing key, carried in [`HEADER_ATTESTATION`] (none by
    /// default).
    fn attestation_token(&self) -> Option<&str> {
        None
    }
    /// Signs a `Sig_structure` whose SHA-384 the caller took as the bytes were made (an upload
    /// that seals as it goes, [`crate::StreamingSeal`]): `None` for a signer that cannot sign a
    /// digest (the default; the caller then signs the whole structure), otherwise the signature.
    fn sign_sha384_digest(&self, _digest: &digest::Digest) -> Option<Result<Vec<u8>, Error>> {
        None
    }
}

/// A member identity's signer: a P-384 key and its certificate (ES384). Reads the governance
/// member files (`NAME_privk.pem`: PKCS#8 `PRIVATE KEY` or SEC1 `EC PRIVATE KEY`; `NAME_cert.pem`).
pub struct P384Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
}

impl std::fmt::Debug for P384Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "P384Signer(cert {})", sha256_digest(&self.cert_der))
    }
}

impl P384Signer {
    /// From the PEM texts of a private key and its certificate; the key must be the
    /// certificate's.
    ///
    /// # Errors
    /// [`Error::Key`] or [`Error::Certificate`] saying what is wrong (never quoting the key).
    pub fn from_pem(key_pem: &str, cert_pem: &str) -> Result<Self, Error> {
        let cert_der = pem::parse_many(cert_pem)
            .map_err(|e| Error::Certificate(format!("not PEM: {e}")))?
            .into_iter()
            .find(|block| block.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .ok_or_else(|| Error::Certificate("no CERTIFICATE block".into()))?;
        let key = p384_key_from_pem(key_pem)?;
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&cert_der)
            .map_err(|e| Error::Certificate(format!("not a DER X.509 certificate: {e}")))?;
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key().as_ref() {
            return Err(Error::Key(
                "the private key is not the certificate's key".into(),
            ));
        }
        Ok(Self { key, cert_der })
    }

    /// From a private key file and a certificate file (the member identity's files).
    ///
    /// # Errors
    /// As [`Self::from_pem`], with the file named.
    pub fn load(key_path: &Path, cert_path: &Path) -> Result<Self, Error> {
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map(Zeroizing::new)
                .map_err(|e| format!("{}: {e}", path.display()))
        };
        let key_pem = read(key_path).map_err(Error::Key)?;
        let cert_pem = read(cert_path).map_err(Error::Certificate)?;
        Self::from_pem(&key_pem, &cert_pem).map_err(|error| match error {
            Error::Key(reason) => Error::Key(format!("{}: {reason}", key_path.display())),
            Error::Certificate(reason) => {
                Error::Certificate(format!("{}: {reason}", cert_path.display()))
            }
            other => other,
        })
    }

    /// The DER certificate.
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }
}

/// A P-384 signing key from PEM: PKCS#8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
fn p384_key_from_pem(key_pem: &str) -> Result<EcdsaKeyPair, Error> {
    let alg = &signature::ECDSA_P384_SHA384_FIXED_SIGNING;
    let blocks = pem::parse_many(key_pem).map_err(|e| Error::Key(format!("not PEM: {e}")))?;
    for block in blocks {
        let tag = block.tag().to_owned();
        let der = Zeroizing::new(block.into_contents());
        let key = match tag.as_str() {
            "PRIVATE KEY" => EcdsaKeyPair::from_pkcs8(alg, &der),
            "EC PRIVATE KEY" => EcdsaKeyPair::from_private_key_der(alg, &der),
            _ => continue,
        };
        return key.map_err(|e| Error::Key(format!("not a P-384 key: {e}")));
    }
    Err(Error::Key("no PRIVATE KEY or EC PRIVATE KEY block".into()))
}

impl ManifestSigner for P384Signer {
    fn algorithm(&self) -> iana::Algorithm {
        iana::Algorithm::ES384
    }

    fn certificate_der(&self) -> Option<&[u8]> {
        Some(&self.cert_der)
    }

    fn sign(&self, to_be_signed: &[u8]) -> Result<Vec<u8>, Error> {
        self.key
            .sign(&SystemRandom::new(), to_be_signed)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| Error::Signing("ECDSA signing failed".into()))
    }

    fn sign_parts(&self, parts: &[&[u8]]) -> Result<Vec<u8>, Error> {
        let mut hash = digest::Context::new(&digest::SHA384);
        for part in parts {
            hash.update(part);
        }
        self.sign_hashed(&hash.finish())
    }

    fn sign_sha384_digest(&self, digest: &digest::Digest) -> Option<Result<Vec<u8>, Error>> {
        Some(self.sign_hashed(digest))
    }
}

impl P384Signer {
    /// The signature of the `Sig_structure` whose SHA-384 is `digest`.
    fn sign_hashed(&self, digest: &digest::Digest) -> Result<Vec<u8>, Error> {
        self.key
            .sign_digest(digest)
            .map(|sig| sig.as_ref().to_vec())
            .map_err(|_| Error::Signing("ECDSA signing failed".into()))
    }
}

/// Whom a verifier trusts to have signed the manifest.
#[derive(Debug, Clone)]
pub enum Trust {
    /// This DER certificate (the publisher's member certificate): the message must carry it (or
    /// none) and verify with it.
    Certificate(Vec<u8>),
    /// The certificate the message carries in `x5chain`, whatever it is: for callers that pin
    /// the manifest's digest instead ([`SignedManifest::verify_pinned`]), where the digest, not
    /// the signer, is what the parties agreed on.
    EmbeddedCertificate,
    /// This P-384 public key (SEC1 uncompressed point, `04 ‖ x ‖ y`), ES384: the key an
    /// attestation token binds (the caller checks the token first).
    P384PublicKey(Vec<u8>),
}

/// A parsed (and, from [`SignedManifest::verify`], verified) manifest message.
#[derive(Debug, Clone)]
pub struct SignedManifest {
    /// The exact COSE_Sign1 bytes (tagged).
    pub bytes: Vec<u8>,
    /// The manifest of its payload.
    pub manifest: Manifest,
    /// The signer's DER certificate from `x5chain`, if the message carries one.
    pub signer_cert_der: Option<Vec<u8>>,
    /// The attestation token of [`HEADER_ATTESTATION`], if the message carries one.
    pub attestation_token: Option<String>,
    /// [`Self::digest`], when sealing computed it beside the signature.
    digest: std::sync::OnceLock<String>,
}

/// What parsing keeps for verification.
struct Decoded {
    signed: SignedManifest,
    algorithm: iana::Algorithm,
    to_be_signed: Vec<u8>,
    signature: Vec<u8>,
}

fn envelope_error(message: impl Into<String>) -> Error {
    Error::Envelope(message.into())
}

impl Manifest {
    /// Signs the manifest as a COSE_Sign1 message.
    ///
    /// # Errors
    /// [`Error::Payload`] when the manifest breaks a rule of the format, [`Error::Signing`] when
    /// the signer fails.
    pub fn seal(&self, signer: &dyn ManifestSigner) -> Result<SignedManifest, Error> {
        self.clone().into_signed(signer)
    }

    /// [`Self::seal`], keeping the manifest in the result instead of a copy of it (a copy of
    /// 100,000 entries is tens of milliseconds).
    ///
    /// # Errors
    /// As [`Self::seal`].
    pub fn into_signed(self, signer: &dyn ManifestSigner) -> Result<SignedManifest, Error> {
        self.validate()?;
        let protected = protected_header(signer, self.created_at)?;
        // The message and its Sig_structure (RFC 9052 §4.4) are framed here around the
        // payload, which is encoded straight into the message: tens of megabytes are then
        // hashed in place, not copied into a Sig_structure, a CBOR value and a message as a
        // generic encoder does, and the message's SHA-256 (its digest) is taken on one thread
        // while the signature's SHA-384 runs on another. `decode` parses what this writes with
        // coset and refuses anything non-canonical; a test checks the bytes against coset's.
        let guess = cbor_head(2, self.payload_len_estimate() as u64);
        let mut bytes = message_head(&protected, &guess);
        let head_at = bytes.len() - guess.len();
        bytes.reserve(self.payload_len_estimate() + 128);
        self.write_payload(&mut bytes);
        let payload_len = bytes.len() - head_at - guess.len();
        let head = cbor_head(2, payload_len as u64);
        bytes.splice(head_at..head_at + guess.len(), head.iter().copied());
        let payload_at = head_at + head.len();
        let (tbs_head, tbs_middle) = sig_structure_frame(&protected, &head);
        let (signature, mut hash) = std::thread::scope(|scope| {
            let hash = scope.spawn(|| {
                let mut hash = digest::Context::new(&digest::SHA256);
                hash.update(&bytes);
                hash
            });
            let payload = &bytes[payload_at..];
            let signature = signer.sign_parts(&[&tbs_head, &protected, &tbs_middle, payload]);
            (signature, hash.join().expect("the hashing thread panicked"))
        });
        append_signature(&mut bytes, &signature?, &mut hash);
        let digest = std::sync::OnceLock::new();
        let _ = digest.set(crate::digest_name(hash.finish().as_ref()));
        // The payload is canonical by construction (`write_payload`), so the message is not parsed
        // back: for 100,000 entries that was two more passes of JSON over megabytes.
        Ok(SignedManifest {
            bytes,
            manifest: self,
            signer_cert_der: signer.certificate_der().map(<[u8]>::to_vec),
            attestation_token: signer.attestation_token().map(str::to_owned),
            digest,
        })
    }
}

/// Ends a message framed up to its signature: the signature's byte string, with `sha256` (the
/// message's digest so far) brought up to the end.
pub(crate) fn append_signature(
    bytes: &mut Vec<u8>,
    signature: &[u8],
    sha256: &mut digest::Context,
) {
    let tail_start = bytes.len();
    bytes.extend_from_slice(&cbor_head(2, signature.len() as u64));
    bytes.extend_from_slice(signature);
    sha256.update(&bytes[tail_start..]);
}

/// The protected header of a message `signer` signs, made at `created_at`, encoded.
pub(crate) fn protected_header(
    signer: &dyn ManifestSigner,
    created_at: u64,
) -> Result<Vec<u8>, Error> {
    let mut header = HeaderBuilder::new()
        .algorithm(signer.algorithm())
        .content_type(CONTENT_TYPE.into());
    if let Some(cert) = signer.certificate_der() {
        header = header.value(HEADER_X5CHAIN, Value::Bytes(cert.to_vec()));
    }
    if let Some(token) = signer.attestation_token() {
        header = header.text_value(HEADER_ATTESTATION.into(), Value::Text(token.to_owned()));
    }
    header
        .text_value(HEADER_CREATED_AT.into(), Value::Integer(created_at.into()))
        .build()
        .to_vec()
        .map_err(|e| Error::Signing(format!("CBOR encoding: {e}")))
}

/// The message's bytes up to its payload: tag, array head, protected header, the empty
/// unprotected map, and `payload_head` (the payload's byte-string head).
pub(crate) fn message_head(protected: &[u8], payload_head: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0xd2, 0x84]; // tag 18, array of 4
    bytes.extend_from_slice(&cbor_head(2, protected.len() as u64));
    bytes.extend_from_slice(protected);
    bytes.push(0xa0); // unprotected: {}
    bytes.extend_from_slice(payload_head);
    bytes
}

/// The `Sig_structure` (RFC 9052 §4.4) around the protected header and the payload: the parts
/// before the protected header and between it and the payload (whose head ends the second).
pub(crate) fn sig_structure_frame(protected: &[u8], payload_head: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut tbs_head = vec![0x84];
    tbs_head.extend_from_slice(&cbor_head(3, SIG_CONTEXT.len() as u64));
    tbs_head.extend_from_slice(SIG_CONTEXT.as_bytes());
    tbs_head.extend_from_slice(&cbor_head(2, protected.len() as u64));
    let mut tbs_middle = vec![0x40]; // external_aad: empty
    tbs_middle.extend_from_slice(payload_head);
    (tbs_head, tbs_middle)
}

/// The context string of a COSE_Sign1 `Sig_structure`.
const SIG_CONTEXT: &str = "Signature1";

/// The head of a CBOR item of `major` type and argument `value`, in its shortest form (the
/// deterministic encoding of RFC 8949 §4.2.1, which coset writes and `decode` insists on).
pub(crate) fn cbor_head(major: u8, value: u64) -> Vec<u8> {
    let major = major << 5;
    match value {
        0..=23 => vec![major | value as u8],
        24..=0xff => vec![major | 24, value as u8],
        0x100..=0xffff => [&[major | 25][..], &(value as u16).to_be_bytes()].concat(),
        0x1_0000..=0xffff_ffff => [&[major | 26][..], &(value as u32).to_be_bytes()].concat(),
        _ => [&[major | 27][..], &value.to_be_bytes()].concat(),
    }
}

impl SignedManifest {
    /// Parses a message and its payload, checking its shape but not its signature.
    ///
    /// # Errors
    /// [`Error::Envelope`] or [`Error::Payload`] saying what is wrong.
    pub fn parse(bytes: &[u8]) -> Result<SignedManifest, Error> {
        decode(bytes).map(|decoded| decoded.signed)
    }

    /// Parses a message and checks its signature against `trust`.
    ///
    /// # Errors
    /// As [`Self::parse`]; [`Error::UntrustedSigner`] when another certificate signed it,
    /// [`Error::BadSignature`] when the signature does not verify, [`Error::Certificate`] when
    /// the certificate is unusable.
    pub fn verify(bytes: &[u8], trust: &Trust) -> Result<SignedManifest, Error> {
        let decoded = decode(bytes)?;
        let embedded = decoded.signed.signer_cert_der.as_deref();
        let cert = match trust {
            Trust::Certificate(trusted) => {
                if embedded.is_some_and(|cert| cert != trusted.as_slice()) {
                    return Err(Error::UntrustedSigner {
                        expected: sha256_digest(trusted),
                        found: embedded.map_or_else(|| "none".into(), sha256_digest),
                    });
                }
                trusted.as_slice()
            }
            Trust::EmbeddedCertificate => embedded.ok_or_else(|| {
                envelope_error("the message carries no signer certificate (x5chain)")
            })?,
            Trust::P384PublicKey(point) => {
                if decoded.algorithm != iana::Algorithm::ES384 {
                    return Err(Error::Certificate(format!(
                        "a P-384 key verifies ES384, not {:?}",
                        decoded.algorithm
                    )));
                }
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(&decoded.to_be_signed, &decoded.signature)
                    .map_err(|_| Error::BadSignature)?;
                return Ok(decoded.signed);
            }
        };
        verify_signature(
            decoded.algorithm,
            cert,
            &decoded.to_be_signed,
            &decoded.signature,
        )?;
        Ok(decoded.signed)
    }

    /// [`Self::verify`] with the embedded certificate, after checking that the bytes have the
    /// pinned digest (`sha256:<64 hex>`, as [`Self::digest`] prints it).
    ///
    /// # Errors
    /// [`Error::DigestMismatch`], then as [`Self::verify`].
    pub fn verify_pinned(bytes: &[u8], digest: &str) -> Result<SignedManifest, Error> {
        let found = sha256_digest(bytes);
        if !found.eq_ignore_ascii_case(digest.trim()) {
            return Err(Error::DigestMismatch {
                expected: digest.trim().to_owned(),
                found,
            });
        }
        Self::verify(bytes, &Trust::EmbeddedCertificate)
    }

    /// `sha256:<64 hex>` of the message bytes: the name a contract pins.
    pub fn digest(&self) -> String {
        self.digest
            .get_or_init(|| sha256_digest(&self.bytes))
            .clone()
    }

    /// `sha256:<64 hex>` of the signer's DER certificate, if the message carries one (for a
    /// member certificate, the hex is the CCF member id).
    pub fn signer_digest(&self) -> Option<String> {
        self.signer_cert_der.as_deref().map(sha256_digest)
    }
}

fn decode(bytes: &[u8]) -> Result<Decoded, Error> {
    let sign1 = CoseSign1::from_tagged_slice(bytes)
        .map_err(|e| envelope_error(format!("not a tagged COSE_Sign1 message: {e}")))?;
    let reencoded = sign1
        .clone()
        .to_tagged_vec()
        .map_err(|e| envelope_error(format!("re-encoding: {e}")))?;
    if reencoded != bytes {
        return Err(envelope_error(
            "not in the canonical CBOR encoding (the digest must name one encoding)",
        ));
    }
    if !sign1.unprotected.is_empty() {
        return Err(envelope_error("the unprotected header must be empty"));
    }
    let header = &sign1.protected.header;
    let algorithm = match header.alg {
        Some(RegisteredLabelWithPrivate::Assigned(alg)) => alg,
        _ => return Err(envelope_error("no algorithm (alg) in the protected header")),
    };
    let content_type_ok = matches!(
        &header.content_type,
        Some(coset::ContentType::Text(text)) if text == CONTENT_TYPE
    );
    if !content_type_ok {
        return Err(envelope_error(format!(
            "the content type is not {CONTENT_TYPE:?}"
        )));
    }
    if !header.crit.is_empty()
        || !header.key_id.is_empty()
        || !header.iv.is_empty()
        || !header.partial_iv.is_empty()
        || !header.counter_signatures.is_empty()
    {
        return Err(envelope_error(
            "the protected header holds a parameter manifests do not use",
        ));
    }
    let (mut cert, mut created_at, mut attestation) = (None, None, None);
    for (label, value) in &header.rest {
        match (label, value) {
            (Label::Int(HEADER_X5CHAIN), Value::Bytes(der)) => cert = Some(der.clone()),
            (Label::Text(text), Value::Text(token)) if text == HEADER_ATTESTATION => {
                attestation = Some(token.clone());
            }
            (Label::Text(text), Value::Integer(int)) if text == HEADER_CREATED_AT => {
                created_at = u64::try_from(*int).ok();
                if created_at.is_none() {
                    return Err(envelope_error(format!("{HEADER_CREATED_AT} is negative")));
                }
            }
            (label, _) => {
                return Err(envelope_error(format!(
                    "unexpected protected header parameter {label:?} (x5chain must be one certificate, created_at an integer)"
                )));
            }
        }
    }
    let created_at = created_at
        .ok_or_else(|| envelope_error(format!("no {HEADER_CREATED_AT} in the protected header")))?;
    let payload = sign1
        .payload
        .as_deref()
        .ok_or_else(|| envelope_error("the payload is detached"))?;
    let manifest = Manifest::from_payload(payload)?;
    if manifest.created_at != created_at {
        return Err(envelope_error(format!(
            "{HEADER_CREATED_AT} {created_at} is not the payload's created_at {}",
            manifest.created_at
        )));
    }
    Ok(Decoded {
        to_be_signed: sign1.tbs_data(&[]),
        signature: sign1.signature,
        algorithm,
        signed: SignedManifest {
            bytes: bytes.to_vec(),
            manifest,
            signer_cert_der: cert,
            attestation_token: attestation,
            digest: std::sync::OnceLock::new(),
        },
    })
}

/// Checks `signature` over `to_be_signed` with the key of `cert_der` under COSE `algorithm`.
fn verify_signature(
    algorithm: iana::Algorithm,
    cert_der: &[u8],
    to_be_signed: &[u8],
    signature: &[u8],
) -> Result<(), Error> {
    use x509_parser::oid_registry::{
        OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_NIST_EC_P521,
        OID_PKCS1_RSAENCRYPTION,
    };
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|e| Error::Certificate(format!("not a DER X.509 certificate: {e}")))?;
    let spki = cert.public_key();
    let key_type = &spki.algorithm.algorithm;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok());
    let is_ec = |oid| *key_type == OID_KEY_TYPE_EC_PUBLIC_KEY && curve.as_ref() == Some(&oid);
    let verification: &'static dyn signature::VerificationAlgorithm = match algorithm {
        iana::Algorithm::ES256 if is_ec(OID_EC_P256) => &signature::ECDSA_P256_SHA256_FIXED,
        iana::Algorithm::ES384 if is_ec(OID_NIST_EC_P384) => &signature::ECDSA_P384_SHA384_FIXED,
        iana::Algorithm::ES512 if is_ec(OID_NIST_EC_P521) => &signature::ECDSA_P521_SHA512_FIXED,
        iana::Algorithm::PS256 if *key_type == OID_PKCS1_RSAENCRYPTION => {
            &signature::RSA_PSS_2048_8192_SHA256
        }
        iana::Algorithm::ES256
        | iana::Algorithm::ES384
        | iana::Algorithm::ES512
        | iana::Algorithm::PS256 => {
            return Err(Error::Certificate(format!(
                "the certificate's key does not fit the message's algorithm {algorithm:?}"
            )));
        }
        other => {
            return Err(envelope_error(format!(
                "unsupported algorithm {other:?} (ES256, ES384, ES512 or PS256)"
            )));
        }
    };
    UnparsedPublicKey::new(verification, spki.subject_public_key.data.as_ref())
        .verify(to_be_signed, signature)
        .map_err(|_| Error::BadSignature)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::manifest::tests::sample;
    use coset::CoseSign1Builder;

    /// A fresh member identity: the signer and its certificate PEM.
    pub(crate) fn member() -> (P384Signer, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let signer = P384Signer::from_pem(&key.serialize_pem(), &cert.pem()).unwrap();
        (signer, cert.pem())
    }

    /// A certificate-less P-384 signer carrying an attestation token (the clean room's shape).
    struct Attested(EcdsaKeyPair);

    impl ManifestSigner for Attested {
        fn algorithm(&self) -> iana::Algorithm {
            iana::Algorithm::ES384
        }
        fn certificate_der(&self) -> Option<&[u8]> {
            None
        }
        fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, Error> {
            let signature = self.0.sign(&SystemRandom::new(), tbs).unwrap();
            Ok(signature.as_ref().to_vec())
        }
        fn attestation_token(&self) -> Option<&str> {
            Some("header.claims.signature")
        }
    }

    fn p384() -> EcdsaKeyPair {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .unwrap();
        EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, pkcs8.as_ref())
            .unwrap()
    }

    #[test]
    fn an_attested_key_signs_without_a_certificate_and_carries_its_token() {
        let signer = Attested(p384());
        let point = signer.0.public_key().as_ref().to_vec();
        let signed = sample().seal(&signer).unwrap();
        let token = signed.attestation_token.as_deref();
        assert_eq!(token, Some("header.claims.signature"));
        assert!(signed.signer_cert_der.is_none());
        let parsed = SignedManifest::parse(&signed.bytes).unwrap();
        assert_eq!(parsed.attestation_token, signed.attestation_token);
        SignedManifest::verify(&signed.bytes, &Trust::P384PublicKey(point)).unwrap();
        let other = p384().public_key().as_ref().to_vec();
        assert!(matches!(
            SignedManifest::verify(&signed.bytes, &Trust::P384PublicKey(other)),
            Err(Error::BadSignature)
        ));
        assert!(SignedManifest::verify(&signed.bytes, &Trust::EmbeddedCertificate).is_err());
    }

    #[test]
    fn seal_then_verify_round_trips() {
        let (signer, _) = member();
        let manifest = sample();
        let signed = manifest.seal(&signer).unwrap();
        assert_eq!(signed.manifest, manifest);
        assert!(signed.digest().starts_with("sha256:") && signed.digest().len() == 71);
        let trust = Trust::Certificate(signer.cert_der().to_vec());
        let verified = SignedManifest::verify(&signed.bytes, &trust).unwrap();
        assert_eq!(verified.manifest, manifest);
        assert_eq!(verified.signer_cert_der.as_deref(), Some(signer.cert_der()));
        // What `seal` hands back without parsing is what a parse of its bytes gives.
        let parsed = SignedManifest::parse(&signed.bytes).unwrap();
        assert_eq!(parsed.manifest, signed.manifest);
        assert_eq!(parsed.signer_cert_der, signed.signer_cert_der);
        assert_eq!(parsed.attestation_token, signed.attestation_token);
        SignedManifest::verify(&signed.bytes, &Trust::EmbeddedCertificate).unwrap();
        SignedManifest::verify_pinned(&signed.bytes, &signed.digest()).unwrap();
        // Tagged COSE_Sign1: CBOR tag 18 is the first byte 0xd2.
        assert_eq!(signed.bytes[0], 0xd2);
    }

    #[test]
    fn another_members_manifest_is_refused() {
        let (publisher, _) = member();
        let (other, _) = member();
        let signed = sample().seal(&other).unwrap();
        let trust = Trust::Certificate(publisher.cert_der().to_vec());
        let err = SignedManifest::verify(&signed.bytes, &trust).unwrap_err();
        assert!(matches!(err, Error::UntrustedSigner { .. }), "{err}");
        let pinned = sample().seal(&publisher).unwrap();
        let err = SignedManifest::verify_pinned(&signed.bytes, &pinned.digest()).unwrap_err();
        assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    }

    /// A signer that signs with one key and claims another's certificate.
    struct Impostor<'a>(&'a P384Signer, &'a P384Signer);
    impl ManifestSigner for Impostor<'_> {
        fn algorithm(&self) -> iana::Algorithm {
            iana::Algorithm::ES384
        }
        fn certificate_der(&self) -> Option<&[u8]> {
            Some(self.1.cert_der())
        }
        fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, Error> {
            self.0.sign(tbs)
        }
    }

    #[test]
    fn a_claimed_certificate_without_its_key_is_refused() {
        let ((mallory, _), (publisher, _)) = (member(), member());
        let signed = sample().seal(&Impostor(&mallory, &publisher)).unwrap();
        for trust in [
            Trust::Certificate(publisher.cert_der().to_vec()),
            Trust::EmbeddedCertificate,
        ] {
            let err = SignedManifest::verify(&signed.bytes, &trust).unwrap_err();
            assert!(matches!(err, Error::BadSignature), "{err}");
        }
    }

    #[test]
    fn one_byte_edited_anywhere_is_refused() {
        let (signer, _) = member();
        let signed = sample().seal(&signer).unwrap();
        let trust = Trust::Certificate(signer.cert_der().to_vec());
        for at in 0..signed.bytes.len() {
            let mut edited = signed.bytes.clone();
            edited[at] ^= 0x01;
            assert!(
                SignedManifest::verify(&edited, &trust).is_err(),
                "byte {at} edited still verifies"
            );
        }
        let mut longer = signed.bytes.clone();
        longer.push(0);
        assert!(SignedManifest::verify(&longer, &trust).is_err());
        assert!(SignedManifest::verify(&signed.bytes[..signed.bytes.len() - 1], &trust).is_err());
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let err = SignedManifest::parse(b"{}").unwrap_err().to_string();
        assert!(
            err.starts_with("manifest: not a COSE_Sign1 manifest: not a tagged COSE_Sign1"),
            "{err}"
        );
        // Untagged: the same message without its tag.
        let (signer, _) = member();
        let signed = sample().seal(&signer).unwrap();
        let err = SignedManifest::parse(&signed.bytes[1..])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a tagged COSE_Sign1"), "{err}");
        // A governance-style header (kid) is refused.
        let header = HeaderBuilder::new()
            .algorithm(iana::Algorithm::ES384)
            .content_type(CONTENT_TYPE.into())
            .key_id(b"member".to_vec())
            .build();
        let bytes = CoseSign1Builder::new()
            .protected(header)
            .payload(sample().to_payload())
            .create_signature(&[], |tbs| signer.sign(tbs).unwrap())
            .build()
            .to_tagged_vec()
            .unwrap();
        let err = SignedManifest::parse(&bytes).unwrap_err().to_string();
        assert!(err.contains("manifests do not use"), "{err}");
        let err = SignedManifest::verify(&signed.bytes[..0], &Trust::EmbeddedCertificate);
        assert!(err.is_err());
    }

    #[test]
    fn keys_are_checked_against_the_certificate() {
        let (one, _) = member();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert_pem = identity_pem(one.cert_der());
        let err = P384Signer::from_pem(&key.serialize_pem(), &cert_pem).unwrap_err();
        assert!(
            err.to_string().contains("not the certificate's key"),
            "{err}"
        );
        let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let err = P384Signer::from_pem(&p256.serialize_pem(), &cert_pem).unwrap_err();
        assert!(
            err.to_string().starts_with("signing key: not a P-384 key"),
            "{err}"
        );
        assert!(!format!("{one:?}").contains("PRIVATE"));
    }

    fn identity_pem(der: &[u8]) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()))
    }

    /// A signer whose signature is a function of the `Sig_structure` alone (SHA-384 of it), so
    /// that two encoders of one manifest must produce the same bytes.
    struct Deterministic;

    impl ManifestSigner for Deterministic {
        fn algorithm(&self) -> iana::Algorithm {
            iana::Algorithm::ES384
        }
        fn certificate_der(&self) -> Option<&[u8]> {
            Some(b"not really a certificate")
        }
        fn sign(&self, tbs: &[u8]) -> Result<Vec<u8>, Error> {
            Ok(digest::digest(&digest::SHA384, tbs).as_ref().to_vec())
        }
    }

    #[test]
    fn framing_is_cosets_encoding_and_the_digest_is_of_the_bytes() {
        // The last case's long names make the payload longer than the estimate by a CBOR head
        // width (the head written before the payload is then resized).
        for (entries, padding) in [(0, 0), (1, 0), (300, 0), (200, 200)] {
            let one = sample().entries[0].clone();
            let entries = (0..entries)
                .map(|i| crate::Entry {
                    name: format!("data/{}f{i:04}", "n".repeat(padding)),
                    ..one.clone()
                })
                .collect();
            let manifest = Manifest::new("data/", entries).unwrap();
            let header = HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES384)
                .content_type(CONTENT_TYPE.into())
                .value(
                    HEADER_X5CHAIN,
                    Value::Bytes(b"not really a certificate".to_vec()),
                )
                .text_value(
                    HEADER_CREATED_AT.into(),
                    Value::Integer(manifest.created_at.into()),
                )
                .build();
            let by_coset = CoseSign1Builder::new()
                .protected(header)
                .payload(manifest.to_payload())
                .create_signature(&[], |tbs| Deterministic.sign(tbs).unwrap())
                .build()
                .to_tagged_vec()
                .unwrap();
            let signed = manifest.into_signed(&Deterministic).unwrap();
            assert_eq!(signed.bytes, by_coset);
            assert_eq!(signed.digest(), sha256_digest(&by_coset));
        }
        // The CBOR heads around each boundary of the argument's width.
        for (value, head) in [
            (23, vec![0x57]),
            (24, vec![0x58, 24]),
            (255, vec![0x58, 0xff]),
            (256, vec![0x59, 1, 0]),
            (65_536, vec![0x5a, 0, 1, 0, 0]),
            (1 << 32, vec![0x5b, 0, 0, 0, 1, 0, 0, 0, 0]),
        ] {
            assert_eq!(cbor_head(2, value), head, "{value}");
        }
    }

    #[test]
    fn a_member_signer_signs_in_parts_what_verifies_whole() {
        let (signer, _) = member();
        let signature = signer.sign_parts(&[b"Sig_", b"structure"]).unwrap();
        let public = signer.key.public_key().as_ref().to_vec();
        UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, public)
            .verify(b"Sig_structure", &signature)
            .unwrap();
    }
}

//! Verifies an SNP report the way a relying party must: the endorsement chain (the report-signing
//! key's certificate, VCEK or VLEK, then its issuers: AMD's ASK and ARK, or the virtual
//! authority's root) up to a root certificate the caller trusts, then the report's own ECDSA
//! P-384 / SHA-384 signature over bytes `0..0x2A0` by the leaf's key.
//!
//! Certificate signatures are checked by x509-parser over aws-lc-rs, which covers what the chains
//! use: RSA-PSS with SHA-384 (AMD's ARK and ASK), ECDSA with SHA-256/384 (the virtual authority),
//! and PKCS#1 RSA. Each certificate must be inside its validity period. Not checked (the reference
//! relies on CCF for these and they need AMD's live services): CRLs, the VCEK's TCB extensions
//! against the report's `REPORTED_TCB`, and the UVM endorsements (a COSE_Sign1 document), which
//! is why no `uvm_endorsements-*` claim is derived.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::snp::{SIGNED_LEN, SnpReport, SnpReportError};

/// Why a report does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// The report bytes are not a report.
    #[error("SNP report: {0}")]
    Report(#[from] SnpReportError),
    /// No trusted root certificate is configured.
    #[error("no trusted attestation root certificate is configured")]
    NoTrustedRoots,
    /// A trusted root or endorsement input is not PEM, or holds no certificate.
    #[error("{what} holds no PEM certificate: {reason}")]
    Pem {
        /// Which input (`endorsements`, `trusted roots`).
        what: String,
        /// Why.
        reason: String,
    },
    /// A certificate is not X.509 DER.
    #[error("{what} certificate {index} is not an X.509 certificate: {reason}")]
    Certificate {
        /// Which input.
        what: String,
        /// Its position (0 = first).
        index: usize,
        /// Why.
        reason: String,
    },
    /// A certificate is outside its validity period.
    #[error("certificate '{subject}' is not valid now (not before {not_before}, not after {not_after})")]
    Validity {
        /// Its subject.
        subject: String,
        /// RFC 2822 time.
        not_before: String,
        /// RFC 2822 time.
        not_after: String,
    },
    /// A certificate's issuer is not the next certificate's subject.
    #[error("certificate '{subject}' is issued by '{issuer}', not by the next certificate '{next}'")]
    IssuerMismatch {
        /// The certificate.
        subject: String,
        /// Its issuer name.
        issuer: String,
        /// The next certificate's subject.
        next: String,
    },
    /// A certificate's signature does not verify under its issuer's key.
    #[error("the signature of certificate '{subject}' does not verify under '{issuer}': {reason}")]
    CertificateSignature {
        /// The certificate.
        subject: String,
        /// The issuer.
        issuer: String,
        /// Why.
        reason: String,
    },
    /// The chain does not end at a trusted root.
    #[error("the endorsement chain ends at '{issuer}', which is not a trusted root")]
    UntrustedRoot {
        /// The issuer the chain ends with.
        issuer: String,
    },
    /// The report-signing certificate's key is not an ECDSA P-384 key.
    #[error("the report-signing certificate '{subject}' does not hold an ECDSA P-384 key")]
    SigningKey {
        /// Its subject.
        subject: String,
    },
    /// The report's signature does not verify under the report-signing key.
    #[error("the SNP report's signature does not verify under '{subject}'")]
    ReportSignature {
        /// The report-signing certificate.
        subject: String,
    },
}

/// The root certificates an attestation chain must end at (AMD's ARKs, or the virtual
/// authority's `authority-ca.pem`).
#[derive(Clone, Debug, Default)]
pub struct TrustedRoots {
    certificates: Vec<Vec<u8>>,
}

impl TrustedRoots {
    /// No roots (everything is refused).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds every certificate of a PEM text.
    ///
    /// # Errors
    /// [`VerifyError::Pem`] / [`VerifyError::Certificate`] when the text holds no readable
    /// certificate.
    pub fn add_pem(&mut self, pem_text: &[u8]) -> Result<(), VerifyError> {
        let certificates = certificates_from_pem(pem_text, "trusted roots")?;
        self.certificates.extend(certificates);
        Ok(())
    }

    /// Roots from PEM texts.
    ///
    /// # Errors
    /// As [`TrustedRoots::add_pem`].
    pub fn from_pems<I, P>(pems: I) -> Result<Self, VerifyError>
    where
        I: IntoIterator<Item = P>,
        P: AsRef<[u8]>,
    {
        let mut roots = Self::new();
        for pem_text in pems {
            roots.add_pem(pem_text.as_ref())?;
        }
        Ok(roots)
    }

    /// How many roots.
    pub fn len(&self) -> usize {
        self.certificates.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.certificates.is_empty()
    }
}

/// A report whose chain and signature verified.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReport {
    /// The report.
    pub report: SnpReport,
    /// The claims derived from it ([`SnpReport::claims`]).
    pub claims: Map<String, Value>,
    /// Its `report_data`.
    pub report_data: [u8; 64],
    /// The subject of the report-signing certificate.
    pub signer: String,
}

/// DER certificates of a PEM text, in order; other PEM blocks are skipped.
fn certificates_from_pem(pem_text: &[u8], what: &str) -> Result<Vec<Vec<u8>>, VerifyError> {
    let blocks = pem::parse_many(pem_text).map_err(|e| VerifyError::Pem {
        what: what.to_owned(),
        reason: e.to_string(),
    })?;
    let certificates: Vec<Vec<u8>> = blocks
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if certificates.is_empty() {
        return Err(VerifyError::Pem {
            what: what.to_owned(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    for (index, der) in certificates.iter().enumerate() {
        parse_certificate(der, what, index)?;
    }
    Ok(certificates)
}

fn parse_certificate<'a>(
    der: &'a [u8],
    what: &str,
    index: usize,
) -> Result<X509Certificate<'a>, VerifyError> {
    match X509Certificate::from_der(der) {
        Ok((rest, cert)) if rest.is_empty() => Ok(cert),
        Ok(_) => Err(VerifyError::Certificate {
            what: what.to_owned(),
            index,
            reason: "trailing bytes after the certificate".into(),
        }),
        Err(e) => Err(VerifyError::Certificate {
            what: what.to_owned(),
            index,
            reason: e.to_string(),
        }),
    }
}

fn check_validity(cert: &X509Certificate<'_>, now: i64) -> Result<(), VerifyError> {
    let validity = cert.validity();
    if now < validity.not_before.timestamp() || now > validity.not_after.timestamp() {
        return Err(VerifyError::Validity {
            subject: cert.subject().to_string(),
            not_before: validity.not_before.to_string(),
            not_after: validity.not_after.to_string(),
        });
    }
    Ok(())
}

fn check_signed_by(
    cert: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<(), VerifyError> {
    if cert.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(VerifyError::IssuerMismatch {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            next: issuer.subject().to_string(),
        });
    }
    cert.verify_signature(Some(issuer.public_key()))
        .map_err(|e| VerifyError::CertificateSignature {
            subject: cert.subject().to_string(),
            issuer: issuer.subject().to_string(),
            reason: e.to_string(),
        })
}

/// The OID of an EC public key, and of the P-384 curve.
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_SECP384R1: &str = "1.3.132.0.34";

/// Verifies `report` (1184 bytes) with its `endorsements` (PEM: the signing certificate first,
/// then its issuers) against `roots`, at time `now`.
///
/// # Errors
/// [`VerifyError`] naming the certificate or the check that failed.
pub fn verify_report_at(
    report: &[u8],
    endorsements: &[u8],
    roots: &TrustedRoots,
    now: SystemTime,
) -> Result<VerifiedReport, VerifyError> {
    if roots.is_empty() {
        return Err(VerifyError::NoTrustedRoots);
    }
    let parsed = SnpReport::parse(report)?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let chain_der = certificates_from_pem(endorsements, "endorsements")?;
    let chain: Vec<X509Certificate<'_>> = chain_der
        .iter()
        .enumerate()
        .map(|(index, der)| parse_certificate(der, "endorsements", index))
        .collect::<Result<_, _>>()?;
    let root_certs: Vec<X509Certificate<'_>> = roots
        .certificates
        .iter()
        .enumerate()
        .map(|(index, der)| parse_certificate(der, "trusted roots", index))
        .collect::<Result<_, _>>()?;

    // Walk up from the leaf until a certificate is a trusted root or is issued by one.
    let mut trusted = false;
    for (index, cert) in chain.iter().enumerate() {
        check_validity(cert, now)?;
        if roots.certificates.iter().any(|r| r == &chain_der[index]) {
            trusted = true;
            break;
        }
        if let Some(next) = chain.get(index + 1) {
            check_signed_by(cert, next)?;
            continue;
        }
        let issuer = root_certs
            .iter()
            .find(|root| root.subject().as_raw() == cert.issuer().as_raw());
        let Some(issuer) = issuer else {
            return Err(VerifyError::UntrustedRoot {
                issuer: cert.issuer().to_string(),
            });
        };
        check_validity(issuer, now)?;
        check_signed_by(cert, issuer)?;
        trusted = true;
    }
    if !trusted {
        return Err(VerifyError::UntrustedRoot {
            issuer: chain
                .last()
                .map(|c| c.issuer().to_string())
                .unwrap_or_default(),
        });
    }

    let leaf = &chain[0];
    let subject = leaf.subject().to_string();
    let spki = leaf.public_key();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|oid| oid.to_id_string());
    if spki.algorithm.algorithm.to_id_string() != OID_EC_PUBLIC_KEY
        || curve.as_deref() != Some(OID_SECP384R1)
    {
        return Err(VerifyError::SigningKey { subject });
    }
    let key = aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED,
        &spki.subject_public_key.data,
    );
    key.verify(&report[..SIGNED_LEN], &parsed.signature_fixed())
        .map_err(|_| VerifyError::ReportSignature {
            subject: subject.clone(),
        })?;
    Ok(VerifiedReport {
        claims: parsed.claims(),
        report_data: parsed.report_data,
        report: parsed,
        signer: subject,
    })
}

/// [`verify_report_at`] now.
///
/// # Errors
/// As [`verify_report_at`].
pub fn verify_report(
    report: &[u8],
    endorsements: &[u8],
    roots: &TrustedRoots,
) -> Result<VerifiedReport, VerifyError> {
    verify_report_at(report, endorsements, roots, SystemTime::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CACI_REPORT: &[u8] =
        include_bytes!("../tests/vectors/caci-insecure-virtual/report.bin");
    const CACI_CHAIN: &[u8] =
        include_bytes!("../tests/vectors/caci-insecure-virtual/endorsements.pem");

    /// The chain's last certificate (AMD's ARK-Milan) as the only trusted root.
    fn amd_root() -> TrustedRoots {
        let blocks = pem::parse_many(CACI_CHAIN).unwrap();
        let ark = pem::encode(blocks.last().unwrap());
        TrustedRoots::from_pems([ark]).unwrap()
    }

    #[test]
    fn a_real_caci_report_verifies_through_amds_rsa_pss_chain() {
        let verified = verify_report(CACI_REPORT, CACI_CHAIN, &amd_root()).unwrap();
        assert!(verified.signer.contains("SEV-VCEK"));
        assert_eq!(
            verified.claims["x-ms-sevsnpvm-hostdata"],
            "73973b78d70cc68353426de188db5dfc57e5b766e399935fb73a61127ea26d20"
        );
    }

    #[test]
    fn the_chain_may_stop_below_the_root() {
        // VCEK + ASK only: the ASK is issued by the trusted ARK.
        let blocks = pem::parse_many(CACI_CHAIN).unwrap();
        let partial = pem::encode_many(&blocks[..2]);
        verify_report(CACI_REPORT, partial.as_bytes(), &amd_root()).unwrap();
        // VCEK alone: its issuer (ASK) is not a root.
        let leaf = pem::encode(&blocks[0]);
        assert!(matches!(
            verify_report(CACI_REPORT, leaf.as_bytes(), &amd_root()),
            Err(VerifyError::UntrustedRoot { .. })
        ));
    }

    #[test]
    fn a_flipped_report_byte_fails_the_signature() {
        for at in [0x50, 0xC0, 0x29F, 0x2A0] {
            let mut report = CACI_REPORT.to_vec();
            report[at] ^= 1;
            assert!(
                matches!(
                    verify_report(&report, CACI_CHAIN, &amd_root()),
                    Err(VerifyError::ReportSignature { .. })
                ),
                "byte {at:#x}"
            );
        }
        // Bytes after the signature are not signed (reserved), as the ABI has it.
        let mut report = CACI_REPORT.to_vec();
        report[0x400] ^= 1;
        verify_report(&report, CACI_CHAIN, &amd_root()).unwrap();
    }

    #[test]
    fn refusals_name_what_failed() {
        assert_eq!(
            verify_report(CACI_REPORT, CACI_CHAIN, &TrustedRoots::new()),
            Err(VerifyError::NoTrustedRoots)
        );
        assert!(matches!(
            verify_report(CACI_REPORT, b"not pem", &amd_root()),
            Err(VerifyError::Pem { .. })
        ));
        assert!(matches!(
            verify_report(&CACI_REPORT[..100], CACI_CHAIN, &amd_root()),
            Err(VerifyError::Report(SnpReportError::Length { actual: 100 }))
        ));
        // The chain in the wrong order.
        let mut blocks = pem::parse_many(CACI_CHAIN).unwrap();
        blocks.swap(0, 1);
        assert!(matches!(
            verify_report(CACI_REPORT, pem::encode_many(&blocks).as_bytes(), &amd_root()),
            Err(VerifyError::IssuerMismatch { .. })
        ));
        // A tampered certificate signature.
        let mut blocks = pem::parse_many(CACI_CHAIN).unwrap();
        let mut der = blocks[0].contents().to_vec();
        let last = der.len() - 1;
        der[last] ^= 1;
        blocks[0] = pem::Pem::new("CERTIFICATE", der);
        assert!(matches!(
            verify_report(CACI_REPORT, pem::encode_many(&blocks).as_bytes(), &amd_root()),
            Err(VerifyError::CertificateSignature { .. })
        ));
        // After the VCEK expired.
        let later = UNIX_EPOCH + std::time::Duration::from_secs(2_000_000_000);
        assert!(matches!(
            verify_report_at(CACI_REPORT, CACI_CHAIN, &amd_root(), later),
            Err(VerifyError::Validity { .. })
        ));
    }
}

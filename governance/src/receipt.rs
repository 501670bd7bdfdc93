//! CCF JSON receipts (`GET /app/receipt?transaction_id=V.S`): building one for a signed
//! transaction and verifying one, exactly as CCF's `ccf.receipt` does.
//!
//! ```json
//! {"cert": "<node cert PEM>", "node_id": "<hex sha256 of the node's SPKI DER>",
//!  "signature": "<base64 DER ECDSA over the root, prehashed SHA-256>",
//!  "proof": [{"left": "<hex>"}, {"right": "<hex>"}],
//!  "leaf_components": {"write_set_digest": "<hex>", "commit_evidence": "ce:V.S:<hex>",
//!                      "claims_digest": "<hex>"}}
//! ```
//! A signature transaction's receipt has `"leaf": "<hex root>"` instead of `leaf_components`
//! and an empty proof. `service_endorsements` (PEMs from the node certificate up to the service
//! certificate) is omitted: encfs's service certificate signs the node certificate directly.
//!
//! Verification: leaf = SHA-256(write_set_digest ‖ SHA-256(commit_evidence) ‖ claims_digest);
//! fold the proof; ECDSA-verify the signature over the root as a prehashed SHA-256 digest with
//! the node certificate's key; check that the service certificate endorses the node certificate,
//! transitively through `service_endorsements`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

use crate::identity::{self, from_hex, hex};
use crate::ledger::{ReceiptMaterial, verify_root_signature};
use crate::merkle::{self, Digest, ProofStep};

/// Why a receipt is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReceiptError {
    /// Not JSON of the receipt's shape.
    #[error("receipt is not valid JSON: {0}")]
    Json(String),
    /// A field is missing or malformed.
    #[error("receipt field {field}: {reason}")]
    Field {
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The signature over the root implied by leaf and proof does not verify.
    #[error("receipt signature: {0}")]
    Signature(String),
    /// The node certificate is not endorsed by the service certificate.
    #[error("receipt endorsement: {0}")]
    Endorsement(String),
    /// The material could not be turned into a receipt.
    #[error("building the receipt: {0}")]
    Build(String),
}

/// The leaf's parts, as the receipt shows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeafComponents {
    /// Hex SHA-256 of the write set.
    pub write_set_digest: String,
    /// `ce:{view}.{seqno}:{hex nonce}`.
    pub commit_evidence: String,
    /// Hex claims digest (64 zeros when none).
    pub claims_digest: String,
}

/// A CCF JSON receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The node certificate, PEM.
    pub cert: String,
    /// The node id (hex SHA-256 of the node's public key DER).
    pub node_id: String,
    /// Base64 DER ECDSA signature over the root.
    pub signature: String,
    /// `[{"left"|"right": hex}]`, leaf first.
    pub proof: Vec<serde_json::Value>,
    /// The leaf's components (ordinary transactions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_components: Option<LeafComponents>,
    /// The leaf itself (signature transactions: the signed root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf: Option<String>,
    /// Certificates endorsing the node certificate up to the service certificate, PEM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_endorsements: Vec<String>,
}

/// What a verified receipt proves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedReceipt {
    /// The signed Merkle root.
    pub root: Digest,
    /// The transaction id `(view, seqno)` read from the commit evidence (none for a signature
    /// transaction's receipt).
    pub transaction_id: Option<(u64, u64)>,
}

/// Builds the receipt of a signed transaction from the ledger's [`ReceiptMaterial`].
///
/// # Errors
/// [`ReceiptError::Build`] when the node certificate does not parse.
pub fn build(material: &ReceiptMaterial) -> Result<Receipt, ReceiptError> {
    let node_id =
        identity::node_id(&material.node_cert).map_err(|e| ReceiptError::Build(e.to_string()))?;
    let (leaf_components, leaf) = if material.is_signature {
        (None, Some(hex(&material.leaf)))
    } else {
        (
            Some(LeafComponents {
                write_set_digest: hex(&material.write_set_digest),
                commit_evidence: material.commit_evidence.clone(),
                claims_digest: hex(&material.claims_digest),
            }),
            None,
        )
    };
    Ok(Receipt {
        cert: identity::cert_pem_from_der(&material.node_cert),
        node_id,
        signature: BASE64.encode(&material.signature),
        proof: material.proof.iter().map(ProofStep::to_json).collect(),
        leaf_components,
        leaf,
        service_endorsements: Vec::new(),
    })
}

impl Receipt {
    /// Parses a receipt from JSON.
    ///
    /// # Errors
    /// [`ReceiptError::Json`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReceiptError> {
        serde_json::from_slice(bytes).map_err(|e| ReceiptError::Json(e.to_string()))
    }

    /// The receipt as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a receipt serialises")
    }

    /// The leaf this receipt is about.
    ///
    /// # Errors
    /// [`ReceiptError::Field`] for a missing or malformed leaf.
    pub fn leaf_digest(&self) -> Result<Digest, ReceiptError> {
        let digest = |field: &'static str, text: &str| -> Result<Digest, ReceiptError> {
            from_hex(text)
                .and_then(|b| b.try_into().ok())
                .ok_or(ReceiptError::Field {
                    field,
                    reason: "not 32 bytes of hex".into(),
                })
        };
        match (&self.leaf_components, &self.leaf) {
            (Some(c), None) => Ok(merkle::leaf_hash(
                &digest("leaf_components.write_set_digest", &c.write_set_digest)?,
                &c.commit_evidence,
                &digest("leaf_components.claims_digest", &c.claims_digest)?,
            )),
            (None, Some(leaf)) => digest("leaf", leaf),
            _ => Err(ReceiptError::Field {
                field: "leaf_components",
                reason: "exactly one of leaf_components and leaf must be present".into(),
            }),
        }
    }

    /// Verifies the receipt against the service certificate (DER).
    ///
    /// # Errors
    /// [`ReceiptError`] naming the step that failed.
    pub fn verify(&self, service_cert_der: &[u8]) -> Result<VerifiedReceipt, ReceiptError> {
        let leaf = self.leaf_digest()?;
        let proof = self
            .proof
            .iter()
            .map(|step| {
                ProofStep::from_json(step).ok_or(ReceiptError::Field {
                    field: "proof",
                    reason: format!("{step} is not {{\"left\"|\"right\": <64 hex>}}"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let root = merkle::root_from_proof(&leaf, &proof);
        let node_cert =
            identity::cert_der_from_pem(&self.cert).map_err(|reason| ReceiptError::Field {
                field: "cert",
                reason,
            })?;
        let signature = BASE64
            .decode(self.signature.trim())
            .map_err(|e| ReceiptError::Field {
                field: "signature",
                reason: e.to_string(),
            })?;
        verify_root_signature(&root, &signature, &node_cert).map_err(ReceiptError::Signature)?;
        let mut endorsee = node_cert;
        for pem in &self.service_endorsements {
            let endorser =
                identity::cert_der_from_pem(pem).map_err(|reason| ReceiptError::Field {
                    field: "service_endorsements",
                    reason,
                })?;
            identity::verify_endorsement(&endorsee, &endorser)
                .map_err(|e| ReceiptError::Endorsement(e.to_string()))?;
            endorsee = endorser;
        }
        identity::verify_endorsement(&endorsee, service_cert_der)
            .map_err(|e| ReceiptError::Endorsement(e.to_string()))?;
        let transaction_id = self
            .leaf_components
            .as_ref()
            .and_then(|c| parse_commit_evidence(&c.commit_evidence));
        Ok(VerifiedReceipt {
            root,
            transaction_id,
        })
    }
}

/// `(view, seqno)` from `ce:{view}.{seqno}:{hex}`.
pub fn parse_commit_evidence(text: &str) -> Option<(u64, u64)> {
    let rest = text.strip_prefix("ce:")?;
    let (txid, nonce) = rest.split_once(':')?;
    from_hex(nonce)?;
    let (view, seqno) = txid.split_once('.')?;
    Some((view.parse().ok()?, seqno.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ServiceIdentity;
    use crate::ledger::{Ledger, LedgerConfig};
    use proptest::prelude::*;
    use std::time::Duration;

    fn ledger_with(dir: &std::path::Path, service: &ServiceIdentity, n: u64, every: u64) -> Ledger {
        let cfg = LedgerConfig {
            signature_interval_txs: every,
            signature_interval: Duration::from_secs(3600),
        };
        let (mut ledger, _) =
            Ledger::open(dir, cfg, &service.node, &service.service.cert_der).unwrap();
        for i in 0..n {
            let claims = (i % 3 == 0).then_some(merkle::sha256(&[&i.to_le_bytes()]));
            let _ = ledger
                .append(format!("ws{i}").into_bytes(), claims)
                .unwrap();
        }
        let _ = ledger.sign_now().unwrap();
        ledger
    }

    #[test]
    fn build_and_verify_and_tamper() {
        let dir = tempfile::tempdir().unwrap();
        let service = ServiceIdentity::generate().unwrap();
        let ledger = ledger_with(dir.path(), &service, 6, 4);
        let receipt = build(&ledger.receipt_material(2).unwrap()).unwrap();
        let json = serde_json::to_vec(&receipt.to_json()).unwrap();
        let parsed = Receipt::from_json(&json).unwrap();
        let verified = parsed.verify(&service.service.cert_der).unwrap();
        assert_eq!(verified.transaction_id, Some((1, 2)));
        assert!(parsed.leaf.is_none() && parsed.service_endorsements.is_empty());
        assert!(
            !json
                .windows(b"service_endorsements".len())
                .any(|w| w == b"service_endorsements")
        );

        // A signature transaction's receipt: leaf, empty proof.
        let sig = build(&ledger.receipt_material(5).unwrap()).unwrap();
        assert!(sig.proof.is_empty() && sig.leaf.is_some() && sig.leaf_components.is_none());
        sig.verify(&service.service.cert_der).unwrap();

        // Tampering with any part fails.
        let mut bad = receipt.clone();
        bad.leaf_components
            .as_mut()
            .unwrap()
            .commit_evidence
            .push('0');
        assert!(matches!(
            bad.verify(&service.service.cert_der),
            Err(ReceiptError::Signature(_))
        ));
        let mut bad = receipt.clone();
        bad.leaf_components.as_mut().unwrap().claims_digest = "11".repeat(32);
        assert!(matches!(
            bad.verify(&service.service.cert_der),
            Err(ReceiptError::Signature(_))
        ));
        let mut bad = receipt.clone();
        let step = ProofStep::from_json(&bad.proof[0]).unwrap();
        bad.proof[0] = ProofStep {
            side: if step.side == merkle::Side::Left {
                merkle::Side::Right
            } else {
                merkle::Side::Left
            },
            ..step
        }
        .to_json();
        assert!(matches!(
            bad.verify(&service.service.cert_der),
            Err(ReceiptError::Signature(_))
        ));
        let other = ServiceIdentity::generate().unwrap();
        assert!(matches!(
            receipt.verify(&other.service.cert_der),
            Err(ReceiptError::Endorsement(_))
        ));
        let mut bad = receipt.clone();
        bad.cert = identity::cert_pem_from_der(&other.node.cert_der);
        assert!(matches!(
            bad.verify(&service.service.cert_der),
            Err(ReceiptError::Signature(_))
        ));
        let mut bad = receipt.clone();
        bad.leaf = Some("00".repeat(32));
        assert!(matches!(
            bad.verify(&service.service.cert_der),
            Err(ReceiptError::Field { .. })
        ));
        assert!(matches!(
            Receipt::from_json(b"{}"),
            Err(ReceiptError::Json(_))
        ));
    }

    #[test]
    fn commit_evidence_parses() {
        assert_eq!(
            parse_commit_evidence(&format!("ce:2.15:{}", "ab".repeat(32))),
            Some((2, 15))
        );
        assert_eq!(parse_commit_evidence("ce:2.15"), None);
        assert_eq!(parse_commit_evidence("xx:2.15:ab"), None);
    }

    /// Reference model: the root over leaves `[0, size)` by RFC 6962's recursion.
    fn model_root(leaves: &[Digest]) -> Digest {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let k = 1usize << (usize::BITS - 1 - (leaves.len() - 1).leading_zeros());
        merkle::node_hash(&model_root(&leaves[..k]), &model_root(&leaves[k..]))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]
        #[test]
        fn every_receipt_verifies_and_names_the_model_root(n in 1u64..40, every in 1u64..9) {
            let dir = tempfile::tempdir().unwrap();
            let service = ServiceIdentity::generate().unwrap();
            let ledger = ledger_with(dir.path(), &service, n, every);
            let all_leaves: Vec<Digest> = (1..=ledger.last_seqno())
                .map(|s| {
                    let m = ledger.receipt_material(s).unwrap();
                    if m.is_signature {
                        merkle::leaf_hash(&m.write_set_digest, &m.commit_evidence, &m.claims_digest)
                    } else {
                        m.leaf
                    }
                })
                .collect();
            for seqno in 1..=ledger.last_seqno() {
                let m = ledger.receipt_material(seqno).unwrap();
                let receipt = build(&m).unwrap();
                let verified = receipt.verify(&service.service.cert_der).unwrap();
                // The signature covering seqno signs the root of every leaf before it.
                let sig_seqno = (seqno..=ledger.last_seqno())
                    .find(|s| ledger.receipt_material(*s).unwrap().is_signature)
                    .unwrap();
                prop_assert_eq!(verified.root, model_root(&all_leaves[..(sig_seqno - 1) as usize]));
                if !m.is_signature {
                    prop_assert_eq!(verified.transaction_id, Some((1, seqno)));
                }
            }
        }
    }
}

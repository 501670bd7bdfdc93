//! CCF's own Python tools (PyPI `ccf`) as an independent client of encfs's formats:
//! `ccf.cose.create_cose_sign1` signs governance messages that encfs must parse and verify (and
//! `ccf.cose.validate_cose_sign1` verifies encfs's), and `ccf.receipt` verifies encfs receipts
//! (leaf from its components, root from the proof, the node's signature, the service's
//! endorsement).
//!
//! The Python interpreter of the virtual environment made by `scripts/ccf-venv.sh` is taken from
//! `ENCFS_CCF_PYTHON`, which `scripts/test-all.sh` sets.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use encfs_governance::cose::{self, GovMessageType, GovernanceMessage};
use encfs_governance::identity::{MemberIdentity, ServiceIdentity};
use encfs_governance::ledger::{Ledger, LedgerConfig};
use encfs_governance::receipt;

fn python() -> String {
    std::env::var("ENCFS_CCF_PYTHON").expect(
        "ENCFS_CCF_PYTHON is not set: run the tests with scripts/test-all.sh, which creates the \
         virtual environment with CCF's Python tools (scripts/ccf-venv.sh) and sets it",
    )
}

fn run_python(script: &str, args: &[&Path]) -> Result<String, String> {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

const SIGN_SCRIPT: &str = r#"
import sys, ccf.cose
key, cert, out = (open(sys.argv[1]).read(), open(sys.argv[2]).read(), sys.argv[3])
cases = [
    (b'{"actions":[{"name":"set_constitution","args":{}}]}',
     {"ccf.gov.msg.type": "proposal", "ccf.gov.msg.created_at": 1700000000}),
    (b'{"ballot":"export function vote (proposal, proposerId) { return true }"}',
     {"ccf.gov.msg.type": "ballot", "ccf.gov.msg.created_at": 1700000001,
      "ccf.gov.msg.proposal_id": "ab" * 32}),
    (b'', {"ccf.gov.msg.type": "state_digest", "ccf.gov.msg.created_at": 1700000002}),
]
for i, (payload, headers) in enumerate(cases):
    open(f"{out}.{i}", "wb").write(ccf.cose.create_cose_sign1(payload, key, cert, headers))
print(len(cases))
"#;

#[test]
fn encfs_verifies_governance_messages_signed_by_ccf_cose() {
    let dir = tempfile::tempdir().unwrap();
    let member = MemberIdentity::generate("member0").unwrap();
    let (key_path, cert_path) = member.write_pems(dir.path()).unwrap();
    let out = dir.path().join("msg");
    let count = run_python(SIGN_SCRIPT, &[&key_path, &cert_path, &out]).expect("ccf.cose signs");
    assert_eq!(count.trim(), "3");

    let expected = [
        (GovMessageType::Proposal, 1_700_000_000, None),
        (GovMessageType::Ballot, 1_700_000_001, Some("ab".repeat(32))),
        (GovMessageType::StateDigest, 1_700_000_002, None),
    ];
    for (i, (msg_type, created_at, proposal_id)) in expected.into_iter().enumerate() {
        let body = std::fs::read(dir.path().join(format!("msg.{i}"))).unwrap();
        let envelope = cose::parse(&body).unwrap_or_else(|e| panic!("message {i}: {e}"));
        assert_eq!(envelope.kid, member.member_id(), "kid is the member id");
        assert_eq!(envelope.alg, cose::ALG_ES384);
        assert_eq!(envelope.created_at, created_at);
        assert_eq!(envelope.proposal_id, proposal_id);
        envelope.check_message_type(msg_type).unwrap();
        envelope.verify_signature(member.cert_der()).unwrap();
        // Another member's certificate does not verify it.
        let other = MemberIdentity::generate("member1").unwrap();
        assert!(envelope.verify_signature(other.cert_der()).is_err());
    }
}

const VALIDATE_SCRIPT: &str = r#"
import sys, ccf.cose
from cryptography.x509 import load_pem_x509_certificate
cert = load_pem_x509_certificate(open(sys.argv[1], "rb").read())
for path in sys.argv[2:]:
    ccf.cose.validate_cose_sign1(cert.public_key(), open(path, "rb").read())
print("valid")
"#;

#[test]
fn ccf_cose_verifies_messages_signed_by_encfs() {
    let dir = tempfile::tempdir().unwrap();
    let member = MemberIdentity::generate("member0").unwrap();
    let (_, cert_path) = member.write_pems(dir.path()).unwrap();
    let body = member
        .sign(&GovernanceMessage {
            msg_type: GovMessageType::Withdrawal,
            created_at: 1_700_000_000,
            proposal_id: Some("cd"),
            payload: b"{}",
        })
        .unwrap();
    let good = dir.path().join("good.cose");
    std::fs::write(&good, &body).unwrap();
    assert_eq!(
        run_python(VALIDATE_SCRIPT, &[&cert_path, &good])
            .unwrap()
            .trim(),
        "valid"
    );
    // The Python check can fail: a flipped payload byte is refused.
    let mut bad_body = body.clone();
    let at = bad_body.len() - 100;
    bad_body[at] ^= 1;
    let bad = dir.path().join("bad.cose");
    std::fs::write(&bad, &bad_body).unwrap();
    assert!(run_python(VALIDATE_SCRIPT, &[&cert_path, &bad]).is_err());
}

const RECEIPT_SCRIPT: &str = r#"
import sys, json
from hashlib import sha256
import ccf.receipt
from cryptography.x509 import load_pem_x509_certificate
service = load_pem_x509_certificate(open(sys.argv[1], "rb").read())
for path in sys.argv[2:]:
    r = json.load(open(path))
    if "leaf_components" in r:
        c = r["leaf_components"]
        leaf = sha256(bytes.fromhex(c["write_set_digest"])
                      + sha256(c["commit_evidence"].encode()).digest()
                      + bytes.fromhex(c["claims_digest"])).hexdigest()
    else:
        leaf = r["leaf"]
    root = ccf.receipt.root(leaf, r["proof"])
    node_cert = load_pem_x509_certificate(r["cert"].encode())
    ccf.receipt.verify(root, r["signature"], node_cert)
    endorsements = [load_pem_x509_certificate(e.encode()) for e in r.get("service_endorsements", [])]
    ccf.receipt.check_endorsements(node_cert, service, endorsements)
    print(root)
"#;

#[test]
fn ccf_receipt_verifies_encfs_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceIdentity::generate().unwrap();
    let service_cert = dir.path().join("service_cert.pem");
    std::fs::write(&service_cert, service.service.cert_pem()).unwrap();
    let config = LedgerConfig {
        signature_interval_txs: 5,
        signature_interval: Duration::from_secs(3600),
    };
    let (mut ledger, _) = Ledger::open(
        &dir.path().join("ledger"),
        config,
        &service.node,
        &service.service.cert_der,
    )
    .unwrap();
    // 13 transactions: signatures at 6 and 12 and a final one, so trees of 5, 11 and 15 leaves
    // (none a power of two) sign the roots.
    for i in 0..13u8 {
        let claims = (i % 2 == 0).then_some([i; 32]);
        let _ = ledger.append(vec![i; 10], claims).unwrap();
    }
    ledger.sign_now().unwrap().wait().unwrap();

    let mut paths = Vec::new();
    let mut roots = Vec::new();
    for seqno in 1..=ledger.last_seqno() {
        let r = receipt::build(&ledger.receipt_material(seqno).unwrap()).unwrap();
        roots.push(encfs_governance::identity::hex(
            &r.verify(&service.service.cert_der).unwrap().root,
        ));
        let path = dir.path().join(format!("receipt-{seqno}.json"));
        std::fs::write(&path, serde_json::to_vec_pretty(&r.to_json()).unwrap()).unwrap();
        paths.push(path);
    }
    let mut args: Vec<&Path> = vec![&service_cert];
    args.extend(paths.iter().map(|p| p.as_path()));
    let out = run_python(RECEIPT_SCRIPT, &args).expect("ccf.receipt verifies every encfs receipt");
    let python_roots: Vec<&str> = out.lines().collect();
    assert_eq!(python_roots, roots, "ccf.receipt computes the same roots");

    // The Python check can fail: a receipt with a changed write-set digest, or checked against
    // another service's certificate, is refused.
    let mut bad = receipt::build(&ledger.receipt_material(3).unwrap()).unwrap();
    bad.leaf_components.as_mut().unwrap().write_set_digest = "00".repeat(32);
    let bad_path = dir.path().join("bad.json");
    std::fs::write(&bad_path, serde_json::to_vec(&bad.to_json()).unwrap()).unwrap();
    assert!(run_python(RECEIPT_SCRIPT, &[&service_cert, &bad_path]).is_err());
    let other = ServiceIdentity::generate().unwrap();
    let other_cert = dir.path().join("other_service_cert.pem");
    std::fs::write(&other_cert, other.service.cert_pem()).unwrap();
    assert!(run_python(RECEIPT_SCRIPT, &[&other_cert, &paths[0]]).is_err());
}

//! The ledger: an append-only, fsynced, Merkle-signed file of committed transactions.
//!
//! Every transaction is `{view, seqno, write set, commit evidence, claims digest}` as in CCF; its
//! Merkle leaf is CCF's (see [`crate::merkle`]). Every `N` transactions or `T` ms a *signature
//! transaction* is appended: its write set holds the Merkle root of all earlier transactions,
//! the node key's ECDSA signature over that root **as a prehashed SHA-256 digest** (what
//! `ccf.receipt.verify` checks) and the node certificate. The signature transaction is itself a
//! leaf, as in CCF.
//!
//! Durability is group commit. [`Ledger::append`] runs under the caller's lock: it assigns the
//! seqno, writes the frame with one `write(2)` (in order) and returns a [`Ticket`]. The caller
//! drops its lock and waits on the ticket; a flusher thread calls `fdatasync` once for every
//! batch of frames written since its last call and then completes all their tickets. A
//! transaction may be acknowledged only after its ticket completes.
//!
//! On open every frame is read back and checked: its length pair and SHA-256 checksum, the seqno
//! sequence, each signature's root against the rebuilt tree, the signature against the node
//! certificate and the node certificate against the service certificate. A torn final frame (a
//! crash in mid-write; it was never acknowledged) is cut off; anything else that does not check
//! is an error naming the file and offset. The file format is in `docs/governance.md`.
//!
//! Signing a prehashed SHA-256 digest with a P-384 key: aws-lc-rs's `sign_digest` wants a digest
//! of the key's own hash (SHA-384, 48 bytes). ECDSA uses the leftmost `min(48, len)` bytes of the
//! digest as a big-endian integer (FIPS 186-5 §6.4.1), so the 48-byte value `0¹⁶ ‖ root` is the
//! same integer as the 32-byte `root`: a signature over it *is* CCF's signature over the
//! prehashed root. Verification uses aws-lc-rs's `ECDSA_P384_SHA256_ASN1` `verify_digest` on the
//! 32-byte root, an independent path, and CCF's Python tools check it in the tests.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{Digest as AwsDigest, SHA256, SHA384};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{self, EcdsaKeyPair, UnparsedPublicKey};

use crate::identity::{self, CertifiedKey};
use crate::merkle::{self, Digest, MerkleTree};

/// The ledger file's name inside the ledger directory.
pub const LEDGER_FILE: &str = "ledger.bin";
/// The file's first 8 bytes.
pub const MAGIC: &[u8; 8] = b"ENCFSLDG";
/// The format version (bytes 8..12 of the file).
pub const FORMAT_VERSION: u32 = 1;
/// Bytes before the first frame: magic, version, 4 reserved zero bytes.
pub const FILE_HEADER_LEN: u64 = 16;
/// Frame header: body length (u32 LE) and its bitwise complement (u32 LE).
const FRAME_HEADER_LEN: usize = 8;
/// Frame trailer: SHA-256 of header ‖ body.
const FRAME_TRAILER_LEN: usize = 32;
/// Body: kind (1), view (8), seqno (8), nonce (32), claims digest (32), write-set length (4).
const BODY_FIXED_LEN: usize = 1 + 8 + 8 + 32 + 32 + 4;
/// The largest body accepted (a larger length is corruption, not a reason to allocate).
pub const MAX_BODY_LEN: u32 = 64 << 20;
/// Kind byte of an ordinary transaction.
const KIND_TRANSACTION: u8 = 1;
/// Kind byte of a signature transaction.
const KIND_SIGNATURE: u8 = 2;

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
    /// An I/O error on the ledger file or directory.
    #[error("ledger {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A frame does not verify (checksum, sequence, Merkle root, signature, endorsement).
    #[error("ledger file {} at offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The ledger file.
        path: PathBuf,
        /// Offset of the frame (or header) at fault.
        offset: u64,
        /// What failed.
        reason: String,
    },
    /// An fsync failed: nothing after the last completed ticket may be acknowledged.
    #[error("ledger {}: fsync failed: {reason}", path.display())]
    Durability {
        /// The ledger file.
        path: PathBuf,
        /// The error.
        reason: String,
    },
    /// No transaction has this seqno.
    #[error("transaction {0} is not in the ledger")]
    UnknownTransaction(u64),
    /// The transaction is not yet covered by a signature transaction.
    #[error("transaction {0} is not covered by a signature yet")]
    NotSigned(u64),
    /// A write set larger than [`MAX_BODY_LEN`].
    #[error("write set of {0} bytes is too large for the ledger")]
    TooLarge(usize),
    /// Signing a root failed, or the node key is unusable.
    #[error("signing the Merkle root: {0}")]
    Signing(String),
}

/// When signature transactions are written.
#[derive(Clone, Debug)]
pub struct LedgerConfig {
    /// A signature after this many unsigned transactions (CCF's `sig_tx_interval`).
    pub signature_interval_txs: u64,
    /// A signature when the oldest unsigned transaction is this old (CCF's `sig_ms_interval`),
    /// checked on each append and by [`Ledger::sign_if_due`].
    pub signature_interval: Duration,
}

impl Default for LedgerConfig {
    /// CCF's defaults: 5000 transactions or 1000 ms.
    fn default() -> Self {
        Self {
            signature_interval_txs: 5000,
            signature_interval: Duration::from_millis(1000),
        }
    }
}

/// A transaction read back from the ledger (for the state layer to replay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayedTransaction {
    /// The view.
    pub view: u64,
    /// The seqno.
    pub seqno: u64,
    /// The write set, as the state layer serialised it.
    pub write_set: Vec<u8>,
}

/// What a signature transaction holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureRecord {
    /// The root of the tree of all transactions before this one.
    pub root: Digest,
    /// DER ECDSA signature over `root` as a prehashed SHA-256 digest.
    pub signature: Vec<u8>,
    /// The node certificate (DER).
    pub node_cert: Arc<Vec<u8>>,
}

impl SignatureRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + 2 + self.signature.len() + 4 + self.node_cert.len());
        out.extend_from_slice(&self.root);
        out.extend_from_slice(&(self.signature.len() as u16).to_le_bytes());
        out.extend_from_slice(&self.signature);
        out.extend_from_slice(&(self.node_cert.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.node_cert);
        out
    }

    fn decode(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader(bytes);
        let root: Digest = r.take(32)?.try_into().map_err(|_| "root")?;
        let sig_len = u16::from_le_bytes(r.take(2)?.try_into().map_err(|_| "sig len")?);
        let signature = r.take(usize::from(sig_len))?.to_vec();
        let cert_len = u32::from_le_bytes(r.take(4)?.try_into().map_err(|_| "cert len")?);
        let node_cert = r.take(cert_len as usize)?.to_vec();
        if !r.0.is_empty() {
            return Err("trailing bytes in the signature write set".into());
        }
        Ok(Self {
            root,
            signature,
            node_cert: Arc::new(node_cert),
        })
    }
}

struct Reader<'a>(&'a [u8]);
impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err(format!(
                "truncated: wanted {n} bytes, {} left",
                self.0.len()
            ));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

/// One decoded frame body.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Body {
    kind: u8,
    view: u64,
    seqno: u64,
    nonce: [u8; 32],
    claims_digest: Digest,
    write_set: Vec<u8>,
}

impl Body {
    fn encode_frame(&self) -> Vec<u8> {
        let body_len = BODY_FIXED_LEN + self.write_set.len();
        let mut frame = Vec::with_capacity(FRAME_HEADER_LEN + body_len + FRAME_TRAILER_LEN);
        frame.extend_from_slice(&(body_len as u32).to_le_bytes());
        frame.extend_from_slice(&(!(body_len as u32)).to_le_bytes());
        frame.push(self.kind);
        frame.extend_from_slice(&self.view.to_le_bytes());
        frame.extend_from_slice(&self.seqno.to_le_bytes());
        frame.extend_from_slice(&self.nonce);
        frame.extend_from_slice(&self.claims_digest);
        frame.extend_from_slice(&(self.write_set.len() as u32).to_le_bytes());
        frame.extend_from_slice(&self.write_set);
        let checksum = merkle::sha256(&[&frame]);
        frame.extend_from_slice(&checksum);
        frame
    }

    fn decode(body: &[u8]) -> Result<Self, String> {
        let mut r = Reader(body);
        let kind = r.take(1)?[0];
        if kind != KIND_TRANSACTION && kind != KIND_SIGNATURE {
            return Err(format!("unknown record kind {kind}"));
        }
        let view = r.u64()?;
        let seqno = r.u64()?;
        let nonce: [u8; 32] = r.take(32)?.try_into().expect("32 bytes");
        let claims_digest: Digest = r.take(32)?.try_into().expect("32 bytes");
        let ws_len = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes"));
        let write_set = r.take(ws_len as usize)?.to_vec();
        if !r.0.is_empty() {
            return Err("the body is longer than its fields".into());
        }
        Ok(Self {
            kind,
            view,
            seqno,
            nonce,
            claims_digest,
            write_set,
        })
    }

    fn commit_evidence(&self) -> String {
        commit_evidence(self.view, self.seqno, &self.nonce)
    }

    fn leaf(&self) -> Digest {
        merkle::leaf_hash(
            &merkle::sha256(&[&self.write_set]),
            &self.commit_evidence(),
            &self.claims_digest,
        )
    }
}

/// CCF's commit evidence string: `ce:{view}.{seqno}:{hex nonce}`.
pub fn commit_evidence(view: u64, seqno: u64, nonce: &[u8; 32]) -> String {
    format!("ce:{view}.{seqno}:{}", identity::hex(nonce))
}

/// Per-transaction facts kept in memory for receipts.
#[derive(Clone, Debug)]
struct EntryMeta {
    view: u64,
    is_signature: bool,
    write_set_digest: Digest,
    nonce: [u8; 32],
    claims_digest: Digest,
}

/// Everything a receipt for one transaction needs (see `crate::receipt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptMaterial {
    /// The transaction's view.
    pub view: u64,
    /// The transaction's seqno.
    pub seqno: u64,
    /// Whether the transaction is itself a signature transaction.
    pub is_signature: bool,
    /// SHA-256 of the write set.
    pub write_set_digest: Digest,
    /// `ce:{view}.{seqno}:{hex nonce}`.
    pub commit_evidence: String,
    /// The claims digest (32 zero bytes when none).
    pub claims_digest: Digest,
    /// The leaf. For a signature transaction CCF's receipt carries the signed root here (its
    /// `leaf` field, with an empty proof), so this is `root` then.
    pub leaf: Digest,
    /// Proof from the leaf to the signed root (empty for a signature transaction).
    pub proof: Vec<merkle::ProofStep>,
    /// The signed root.
    pub root: Digest,
    /// The signature over the root.
    pub signature: Vec<u8>,
    /// The node certificate that signed.
    pub node_cert: Arc<Vec<u8>>,
}

/// What the offline check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerSummary {
    /// Transactions, signature transactions included.
    pub transactions: u64,
    /// Signature transactions.
    pub signatures: u64,
    /// The seqno of the last signature (0 if none).
    pub last_signed_seqno: u64,
    /// Bytes of a torn final frame that reopening will cut (0 if none).
    pub torn_tail_bytes: u64,
}

/// The completion state the flusher publishes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct SyncStatus {
    /// Every seqno up to this one is on disk.
    synced: u64,
    /// An fsync failed: no later seqno will ever complete.
    failed: bool,
}

#[derive(Default)]
struct FlushState {
    written: u64,
    fsyncs: u64,
    status: SyncStatus,
    failure: Option<String>,
    shutdown: bool,
}

struct Durability {
    path: PathBuf,
    state: Mutex<FlushState>,
    work: Condvar,
    done: Condvar,
    watch: tokio::sync::watch::Sender<SyncStatus>,
}

impl Durability {
    fn failure(&self, state: &FlushState) -> LedgerError {
        LedgerError::Durability {
            path: self.path.clone(),
            reason: state.failure.clone().unwrap_or_else(|| "unknown".into()),
        }
    }
}

/// A pending durability acknowledgement for one appended transaction.
#[must_use = "a transaction may be acknowledged only after its ticket completes"]
pub struct Ticket {
    seqno: u64,
    view: u64,
    durability: Arc<Durability>,
}

impl Ticket {
    /// The transaction's seqno.
    pub fn seqno(&self) -> u64 {
        self.seqno
    }

    /// The transaction's view.
    pub fn view(&self) -> u64 {
        self.view
    }

    /// Whether the transaction is already on disk (never blocks).
    pub fn is_durable(&self) -> bool {
        self.durability
            .state
            .lock()
            .expect("flush state")
            .status
            .synced
            >= self.seqno
    }

    /// Blocks until the transaction is on disk.
    ///
    /// # Errors
    /// [`LedgerError::Durability`] if an fsync failed first.
    pub fn wait(self) -> Result<(), LedgerError> {
        let d = &self.durability;
        let mut state = d.state.lock().expect("flush state");
        loop {
            if state.status.synced >= self.seqno {
                return Ok(());
            }
            if state.status.failed {
                return Err(d.failure(&state));
            }
            state = d.done.wait(state).expect("flush state");
        }
    }

    /// Waits (asynchronously) until the transaction is on disk.
    ///
    /// # Errors
    /// [`LedgerError::Durability`] if an fsync failed first.
    pub async fn wait_async(self) -> Result<(), LedgerError> {
        let mut rx = self.durability.watch.subscribe();
        let seqno = self.seqno;
        let status = *rx
            .wait_for(|s| s.synced >= seqno || s.failed)
            .await
            .map_err(|_| LedgerError::Durability {
                path: self.durability.path.clone(),
                reason: "the ledger was closed".into(),
            })?;
        if status.synced >= seqno {
            Ok(())
        } else {
            let state = self.durability.state.lock().expect("flush state");
            Err(self.durability.failure(&state))
        }
    }
}

fn flusher(file: File, d: Arc<Durability>) {
    loop {
        let target = {
            let mut state = d.state.lock().expect("flush state");
            while state.written == state.status.synced && !state.shutdown && !state.status.failed {
                state = d.work.wait(state).expect("flush state");
            }
            if state.status.failed || state.written == state.status.synced {
                return; // shut down with nothing left, or failed for good
            }
            state.written
        };
        let result = file.sync_data();
        let mut state = d.state.lock().expect("flush state");
        state.fsyncs += 1;
        match result {
            Ok(()) => state.status.synced = state.status.synced.max(target),
            Err(e) => {
                state.status.failed = true;
                state.failure = Some(e.to_string());
            }
        }
        let status = state.status;
        drop(state);
        d.done.notify_all();
        d.watch.send_replace(status);
    }
}

/// The node's signing key for Merkle roots.
struct RootSigner {
    key: EcdsaKeyPair,
    cert: Arc<Vec<u8>>,
}

impl RootSigner {
    fn new(node: &CertifiedKey) -> Result<Self, LedgerError> {
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            node.key.pkcs8_der(),
        )
        .map_err(|e| LedgerError::Signing(format!("the node key is not a P-384 key: {e}")))?;
        Ok(Self {
            key,
            cert: Arc::new(node.cert_der.clone()),
        })
    }

    /// ECDSA over `root` taken as a prehashed SHA-256 digest (see the module comment).
    fn sign_root(&self, root: &Digest) -> Result<Vec<u8>, LedgerError> {
        let mut padded = [0u8; 48];
        padded[16..].copy_from_slice(root);
        let digest = AwsDigest::import_less_safe(&padded, &SHA384)
            .map_err(|_| LedgerError::Signing("digest import".into()))?;
        let sig = self
            .key
            .sign_digest(&digest)
            .map_err(|_| LedgerError::Signing("ECDSA signing failed".into()))?;
        Ok(sig.as_ref().to_vec())
    }
}

/// Verifies a DER ECDSA signature over `root` as a prehashed SHA-256 digest with the key of
/// `cert_der` (P-256, P-384 or P-521), as `ccf.receipt.verify` does.
///
/// # Errors
/// A reason when the certificate is unusable or the signature does not verify.
pub fn verify_root_signature(
    root: &Digest,
    signature_der: &[u8],
    cert_der: &[u8],
) -> Result<(), String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|e| format!("node certificate: {e}"))?;
    let (alg, _) = crate::cose::ecdsa_for_spki(cert.public_key()).map_err(|e| e.to_string())?;
    let verification: &'static signature::EcdsaVerificationAlgorithm = match alg {
        crate::cose::ALG_ES256 => &signature::ECDSA_P256_SHA256_ASN1,
        crate::cose::ALG_ES384 => &signature::ECDSA_P384_SHA256_ASN1,
        _ => &signature::ECDSA_P521_SHA256_ASN1,
    };
    let digest =
        AwsDigest::import_less_safe(root, &SHA256).map_err(|_| "digest import".to_string())?;
    UnparsedPublicKey::new(verification, &cert.public_key().subject_public_key.data)
        .verify_digest(&digest, signature_der)
        .map_err(|_| {
            "the signature over the Merkle root does not verify with the node certificate"
                .to_string()
        })
}

/// The result of reading a ledger file back.
struct Scan {
    bodies_end: u64,
    torn_tail_bytes: u64,
    tree: MerkleTree,
    metas: Vec<EntryMeta>,
    signatures: Vec<(u64, SignatureRecord)>,
    replayed: Vec<ReplayedTransaction>,
    last_view: u64,
}

fn scan(
    path: &Path,
    bytes: &[u8],
    service_cert: &[u8],
    keep_write_sets: bool,
) -> Result<Scan, LedgerError> {
    let corrupt = |offset: u64, reason: String| LedgerError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason,
    };
    if bytes.len() < FILE_HEADER_LEN as usize
        || &bytes[..8] != MAGIC
        || bytes[8..12] != FORMAT_VERSION.to_le_bytes()
        || bytes[12..16] != [0; 4]
    {
        return Err(corrupt(0, "not an encfs ledger file (bad header)".into()));
    }
    let mut scan = Scan {
        bodies_end: FILE_HEADER_LEN,
        torn_tail_bytes: 0,
        tree: MerkleTree::new(),
        metas: Vec::new(),
        signatures: Vec::new(),
        replayed: Vec::new(),
        last_view: 0,
    };
    let mut endorsed: Vec<Arc<Vec<u8>>> = Vec::new();
    let mut offset = FILE_HEADER_LEN as usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        let at = offset as u64;
        let torn = |scan: &mut Scan| {
            scan.torn_tail_bytes = rest.len() as u64;
        };
        if rest.len() < FRAME_HEADER_LEN {
            torn(&mut scan);
            break;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4"));
        let check = u32::from_le_bytes(rest[4..8].try_into().expect("4"));
        if len != !check {
            // A zero-filled tail is what some filesystems leave after a crash mid-append.
            if rest.iter().all(|b| *b == 0) {
                torn(&mut scan);
                break;
            }
            return Err(corrupt(at, "frame length check failed".into()));
        }
        if len > MAX_BODY_LEN || (len as usize) < BODY_FIXED_LEN {
            return Err(corrupt(at, format!("frame length {len} is out of range")));
        }
        let frame_len = FRAME_HEADER_LEN + len as usize + FRAME_TRAILER_LEN;
        if rest.len() < frame_len {
            torn(&mut scan);
            break;
        }
        let covered = &rest[..FRAME_HEADER_LEN + len as usize];
        if merkle::sha256(&[covered]) != rest[FRAME_HEADER_LEN + len as usize..frame_len] {
            return Err(corrupt(at, "frame checksum mismatch".into()));
        }
        let body = Body::decode(&covered[FRAME_HEADER_LEN..]).map_err(|r| corrupt(at, r))?;
        let expected_seqno = scan.tree.len() + 1;
        if body.seqno != expected_seqno {
            return Err(corrupt(
                at,
                format!("seqno {} where {expected_seqno} was expected", body.seqno),
            ));
        }
        if body.view < scan.last_view {
            return Err(corrupt(
                at,
                format!("view {} after view {}", body.view, scan.last_view),
            ));
        }
        if body.kind == KIND_SIGNATURE {
            let record = SignatureRecord::decode(&body.write_set).map_err(|r| corrupt(at, r))?;
            let root = scan
                .tree
                .root()
                .ok_or_else(|| corrupt(at, "a signature over an empty tree".into()))?;
            if record.root != root {
                return Err(corrupt(
                    at,
                    "the signed root is not the root of the preceding transactions".into(),
                ));
            }
            verify_root_signature(&root, &record.signature, &record.node_cert)
                .map_err(|r| corrupt(at, r))?;
            if !endorsed.iter().any(|c| **c == *record.node_cert) {
                identity::verify_endorsement(&record.node_cert, service_cert)
                    .map_err(|e| corrupt(at, format!("node certificate: {e}")))?;
                endorsed.push(record.node_cert.clone());
            }
            scan.signatures.push((body.seqno, record));
        } else if keep_write_sets {
            scan.replayed.push(ReplayedTransaction {
                view: body.view,
                seqno: body.seqno,
                write_set: body.write_set.clone(),
            });
        }
        scan.tree.append(body.leaf());
        scan.metas.push(EntryMeta {
            view: body.view,
            is_signature: body.kind == KIND_SIGNATURE,
            write_set_digest: merkle::sha256(&[&body.write_set]),
            nonce: body.nonce,
            claims_digest: body.claims_digest,
        });
        scan.last_view = body.view;
        offset += frame_len;
        scan.bodies_end = offset as u64;
    }
    Ok(scan)
}

fn read_file(path: &Path) -> Result<Vec<u8>, LedgerError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|source| LedgerError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes)
}

/// Checks a ledger directory offline: every frame, hash, Merkle root, signature and the
/// endorsement of every node certificate by `service_cert_der`. A torn final frame is reported,
/// not refused (it was never acknowledged).
///
/// # Errors
/// [`LedgerError::Io`] or [`LedgerError::Corrupt`] naming the file and offset.
pub fn verify_ledger(dir: &Path, service_cert_der: &[u8]) -> Result<LedgerSummary, LedgerError> {
    let path = dir.join(LEDGER_FILE);
    let bytes = read_file(&path)?;
    let scan = scan(&path, &bytes, service_cert_der, false)?;
    Ok(LedgerSummary {
        transactions: scan.tree.len(),
        signatures: scan.signatures.len() as u64,
        last_signed_seqno: scan.signatures.last().map_or(0, |(s, _)| *s),
        torn_tail_bytes: scan.torn_tail_bytes,
    })
}

/// An open ledger. All `&mut self` methods run under the caller's lock; tickets are waited on
/// outside it.
pub struct Ledger {
    path: PathBuf,
    file: File,
    config: LedgerConfig,
    signer: RootSigner,
    tree: MerkleTree,
    metas: Vec<EntryMeta>,
    signatures: Vec<(u64, SignatureRecord)>,
    view: u64,
    unsigned_since: Option<Instant>,
    unsigned_count: u64,
    rng: SystemRandom,
    durability: Arc<Durability>,
    flusher: Option<std::thread::JoinHandle<()>>,
    /// Set when a write failed part-way: the file may end in a partial frame, so nothing more
    /// may be appended until the ledger is reopened (which cuts it).
    broken: bool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.path)
            .field("len", &self.tree.len())
            .finish()
    }
}

fn sync_dir(dir: &Path) -> Result<(), LedgerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| LedgerError::Io {
            path: dir.to_path_buf(),
            source,
        })
}

impl Ledger {
    /// Opens (or creates) the ledger in `dir`, verifies it all, cuts a torn final frame and
    /// returns the ledger with every ordinary transaction for the state layer to replay.
    ///
    /// # Errors
    /// [`LedgerError::Io`], [`LedgerError::Corrupt`] (file and offset) or
    /// [`LedgerError::Signing`] for an unusable node key.
    pub fn open(
        dir: &Path,
        config: LedgerConfig,
        node: &CertifiedKey,
        service_cert_der: &[u8],
    ) -> Result<(Self, Vec<ReplayedTransaction>), LedgerError> {
        let signer = RootSigner::new(node)?;
        identity::verify_endorsement(&node.cert_der, service_cert_der)
            .map_err(|e| LedgerError::Signing(format!("node certificate: {e}")))?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| LedgerError::Io { path, source }
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join(LEDGER_FILE);
        if !path.exists() {
            let tmp = dir.join(format!("{LEDGER_FILE}.new"));
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            let mut header = MAGIC.to_vec();
            header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            header.extend_from_slice(&[0; 4]);
            f.write_all(&header)
                .and_then(|()| f.sync_all())
                .map_err(io(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io(&path))?;
            sync_dir(dir)?;
        }
        let bytes = read_file(&path)?;
        let scan = scan(&path, &bytes, service_cert_der, true)?;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path))?;
        if scan.torn_tail_bytes > 0 {
            file.set_len(scan.bodies_end)
                .and_then(|()| file.sync_all())
                .map_err(io(&path))?;
        }
        file.seek(SeekFrom::Start(scan.bodies_end))
            .map_err(io(&path))?;
        let flush_file = file.try_clone().map_err(io(&path))?;
        let len = scan.tree.len();
        let (watch, _) = tokio::sync::watch::channel(SyncStatus {
            synced: len,
            failed: false,
        });
        let durability = Arc::new(Durability {
            path: path.clone(),
            state: Mutex::new(FlushState {
                written: len,
                status: SyncStatus {
                    synced: len,
                    failed: false,
                },
                ..FlushState::default()
            }),
            work: Condvar::new(),
            done: Condvar::new(),
            watch,
        });
        let flusher = {
            let d = durability.clone();
            std::thread::Builder::new()
                .name("ledger-flusher".into())
                .spawn(move || flusher(flush_file, d))
                .map_err(io(&path))?
        };
        let last_signed = scan.signatures.last().map_or(0, |(s, _)| *s);
        let unsigned_count = len - last_signed;
        let ledger = Self {
            path,
            file,
            config,
            signer,
            tree: scan.tree,
            metas: scan.metas,
            signatures: scan.signatures,
            view: scan.last_view.max(1),
            unsigned_since: (unsigned_count > 0).then(Instant::now),
            unsigned_count,
            rng: SystemRandom::new(),
            durability,
            flusher: Some(flusher),
            broken: false,
        };
        Ok((ledger, scan.replayed))
    }

    /// The path of the ledger file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The current view.
    pub fn view(&self) -> u64 {
        self.view
    }

    /// Moves to a later view (e.g. after a restart); earlier views are refused silently.
    pub fn set_view(&mut self, view: u64) {
        self.view = self.view.max(view);
    }

    /// The seqno of the last transaction (0 when empty).
    pub fn last_seqno(&self) -> u64 {
        self.tree.len()
    }

    /// Every seqno up to this one is on disk (for CCF's transaction status: a transaction of
    /// this view at or below it is `Committed`).
    pub fn durable_seqno(&self) -> u64 {
        self.durability
            .state
            .lock()
            .expect("flush state")
            .status
            .synced
    }

    /// How many fsyncs the flusher has done since open (group commit: fewer than appends under
    /// concurrent load).
    pub fn fsync_count(&self) -> u64 {
        self.durability.state.lock().expect("flush state").fsyncs
    }

    /// The seqno of the last signature transaction (0 when none).
    pub fn last_signed_seqno(&self) -> u64 {
        self.signatures.last().map_or(0, |(s, _)| *s)
    }

    /// The Merkle root of every transaction so far (CCF's state digest; `None` when empty).
    pub fn root(&self) -> Option<Digest> {
        self.tree.root()
    }

    /// The view of transaction `seqno`, if present.
    pub fn view_of(&self, seqno: u64) -> Option<u64> {
        self.metas
            .get(usize::try_from(seqno.checked_sub(1)?).ok()?)
            .map(|m| m.view)
    }

    fn write_body(&mut self, body: &Body) -> Result<(), LedgerError> {
        if self.broken {
            return Err(LedgerError::Io {
                path: self.path.clone(),
                source: std::io::Error::other("an earlier write failed; reopen the ledger"),
            });
        }
        let frame = body.encode_frame();
        if let Err(source) = self.file.write_all(&frame) {
            self.broken = true;
            return Err(LedgerError::Io {
                path: self.path.clone(),
                source,
            });
        }
        self.tree.append(body.leaf());
        self.metas.push(EntryMeta {
            view: body.view,
            is_signature: body.kind == KIND_SIGNATURE,
            write_set_digest: merkle::sha256(&[&body.write_set]),
            nonce: body.nonce,
            claims_digest: body.claims_digest,
        });
        let mut state = self.durability.state.lock().expect("flush state");
        state.written = body.seqno;
        drop(state);
        self.durability.work.notify_one();
        Ok(())
    }

    fn new_body(
        &self,
        kind: u8,
        write_set: Vec<u8>,
        claims_digest: Digest,
    ) -> Result<Body, LedgerError> {
        let mut nonce = [0u8; 32];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| LedgerError::Signing("the RNG failed".into()))?;
        Ok(Body {
            kind,
            view: self.view,
            seqno: self.tree.len() + 1,
            nonce,
            claims_digest,
            write_set,
        })
    }

    /// Appends a transaction (and, when due, a signature transaction after it). Returns the
    /// ticket to wait on, outside the caller's lock, before acknowledging.
    ///
    /// # Errors
    /// [`LedgerError::TooLarge`], [`LedgerError::Io`] (the ledger must then be reopened) or
    /// [`LedgerError::Signing`].
    pub fn append(
        &mut self,
        write_set: Vec<u8>,
        claims_digest: Option<Digest>,
    ) -> Result<Ticket, LedgerError> {
        if write_set.len() > (MAX_BODY_LEN as usize - BODY_FIXED_LEN) {
            return Err(LedgerError::TooLarge(write_set.len()));
        }
        let body = self.new_body(
            KIND_TRANSACTION,
            write_set,
            claims_digest.unwrap_or([0; 32]),
        )?;
        self.write_body(&body)?;
        self.unsigned_count += 1;
        self.unsigned_since.get_or_insert_with(Instant::now);
        let ticket = Ticket {
            seqno: body.seqno,
            view: body.view,
            durability: self.durability.clone(),
        };
        if self.signature_due() {
            // The signature's own ticket completes no later than a later one; the caller waits
            // on the transaction's.
            drop(self.sign_now()?);
        }
        Ok(ticket)
    }

    fn signature_due(&self) -> bool {
        self.unsigned_count > 0
            && (self.unsigned_count >= self.config.signature_interval_txs
                || self
                    .unsigned_since
                    .is_some_and(|t| t.elapsed() >= self.config.signature_interval))
    }

    /// Appends a signature transaction if one is due by count or time (call from a timer every
    /// `signature_interval`, under the same lock as [`append`](Self::append)).
    ///
    /// # Errors
    /// As [`sign_now`](Self::sign_now).
    pub fn sign_if_due(&mut self) -> Result<Option<Ticket>, LedgerError> {
        if self.signature_due() {
            self.sign_now().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Appends a signature transaction over every transaction so far.
    ///
    /// # Errors
    /// [`LedgerError::Signing`] (also for an empty ledger) or [`LedgerError::Io`].
    pub fn sign_now(&mut self) -> Result<Ticket, LedgerError> {
        let root = self
            .tree
            .root()
            .ok_or_else(|| LedgerError::Signing("the ledger is empty".into()))?;
        let record = SignatureRecord {
            root,
            signature: self.signer.sign_root(&root)?,
            node_cert: self.signer.cert.clone(),
        };
        let body = self.new_body(KIND_SIGNATURE, record.encode(), [0; 32])?;
        self.write_body(&body)?;
        self.signatures.push((body.seqno, record));
        self.unsigned_count = 0;
        self.unsigned_since = None;
        Ok(Ticket {
            seqno: body.seqno,
            view: body.view,
            durability: self.durability.clone(),
        })
    }

    /// What a receipt for `seqno` needs: the first signature at or after it (a signature
    /// transaction is its own), the proof up to that signature's root, and the leaf components.
    ///
    /// # Errors
    /// [`LedgerError::UnknownTransaction`] or [`LedgerError::NotSigned`].
    pub fn receipt_material(&self, seqno: u64) -> Result<ReceiptMaterial, LedgerError> {
        let index = seqno
            .checked_sub(1)
            .ok_or(LedgerError::UnknownTransaction(seqno))?;
        let meta = self
            .metas
            .get(usize::try_from(index).map_err(|_| LedgerError::UnknownTransaction(seqno))?)
            .ok_or(LedgerError::UnknownTransaction(seqno))?;
        let mut leaf = self
            .tree
            .leaf(index)
            .ok_or(LedgerError::UnknownTransaction(seqno))?;
        let commit_evidence = commit_evidence(meta.view, seqno, &meta.nonce);
        let (proof, record) = if meta.is_signature {
            let (_, record) = self
                .signatures
                .iter()
                .find(|(s, _)| *s == seqno)
                .ok_or(LedgerError::UnknownTransaction(seqno))?;
            leaf = record.root;
            (Vec::new(), record)
        } else {
            let at = self.signatures.partition_point(|(s, _)| *s <= seqno);
            let (sig_seqno, record) = self
                .signatures
                .get(at)
                .ok_or(LedgerError::NotSigned(seqno))?;
            let proof = self
                .tree
                .proof(index, sig_seqno - 1)
                .ok_or(LedgerError::NotSigned(seqno))?;
            (proof, record)
        };
        Ok(ReceiptMaterial {
            view: meta.view,
            seqno,
            is_signature: meta.is_signature,
            write_set_digest: meta.write_set_digest,
            commit_evidence,
            claims_digest: meta.claims_digest,
            leaf,
            proof,
            root: record.root,
            signature: record.signature.clone(),
            node_cert: record.node_cert.clone(),
        })
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.durability.state.lock().expect("flush state").shutdown = true;
        self.durability.work.notify_all();
        if let Some(handle) = self.flusher.take() {
            let _ = handle.join();
        }
    }
}

/// The hook the `ledger_read` fuzz target calls: scan arbitrary bytes as a ledger file (with a
/// fixed service certificate), and read them as a stored write set; must never panic.
#[doc(hidden)]
pub fn fuzz_scan(bytes: &[u8]) {
    let _ = scan(Path::new("fuzz"), bytes, b"", true);
    // The same bytes as one transaction's stored write set (plain or sealed).
    crate::ledger_secret::fuzz_open(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::ServiceIdentity;

    fn config(n: u64) -> LedgerConfig {
        LedgerConfig {
            signature_interval_txs: n,
            signature_interval: Duration::from_secs(3600),
        }
    }

    fn small_ledger(dir: &Path, service: &ServiceIdentity) {
        let (mut ledger, replayed) =
            Ledger::open(dir, config(2), &service.node, &service.service.cert_der).unwrap();
        assert!(replayed.is_empty());
        for i in 0..5u8 {
            ledger.append(vec![i; 3], None).unwrap().wait().unwrap();
        }
        ledger.sign_now().unwrap().wait().unwrap();
    }

    #[test]
    fn append_reopen_replays_and_signs_every_n() {
        let dir = tempfile::tempdir().unwrap();
        let service = ServiceIdentity::generate().unwrap();
        small_ledger(dir.path(), &service);
        let (ledger, replayed) = Ledger::open(
            dir.path(),
            config(2),
            &service.node,
            &service.service.cert_der,
        )
        .unwrap();
        // tx1 tx2 sig3 tx4 tx5 sig6 tx7 sig8
        assert_eq!(ledger.last_seqno(), 8);
        assert_eq!(ledger.last_signed_seqno(), 8);
        let seqnos: Vec<u64> = replayed.iter().map(|t| t.seqno).collect();
        assert_eq!(seqnos, vec![1, 2, 4, 5, 7]);
        assert_eq!(replayed[4].write_set, vec![4u8; 3]);
        let summary = verify_ledger(dir.path(), &service.service.cert_der).unwrap();
        assert_eq!(
            summary,
            LedgerSummary {
                transactions: 8,
                signatures: 3,
                last_signed_seqno: 8,
                torn_tail_bytes: 0
            }
        );
    }

    #[test]
    fn every_flipped_byte_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let service = ServiceIdentity::generate().unwrap();
        small_ledger(dir.path(), &service);
        let path = dir.path().join(LEDGER_FILE);
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x20;
            std::fs::write(&path, &bad).unwrap();
            let err = verify_ledger(dir.path(), &service.service.cert_der);
            assert!(
                matches!(err, Err(LedgerError::Corrupt { .. })),
                "flipped byte {i} of {} not found: {err:?}",
                good.len()
            );
            assert!(
                Ledger::open(
                    dir.path(),
                    config(2),
                    &service.node,
                    &service.service.cert_der
                )
                .is_err(),
                "open accepted flipped byte {i}"
            );
            // open must not have cut anything off.
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bad,
                "open changed the file at flip {i}"
            );
        }
        std::fs::write(&path, &good).unwrap();
        verify_ledger(dir.path(), &service.service.cert_der).unwrap();
    }

    #[test]
    fn random_flips_in_a_larger_ledger_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let service = ServiceIdentity::generate().unwrap();
        let (mut ledger, _) = Ledger::open(
            dir.path(),
            config(10),
            &service.node,
            &service.service.cert_der,
        )
        .unwrap();
        for i in 0..150u32 {
            let _ = ledger
                .append(
                    format!("write set {i}")
                        .repeat(1 + i as usize % 5)
                        .into_bytes(),
                    None,
                )
                .unwrap();
        }
        ledger.sign_now().unwrap().wait().unwrap();
        drop(ledger);
        let path = dir.path().join(LEDGER_FILE);
        let good = std::fs::read(&path).unwrap();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..200 {
            // xorshift64*: deterministic positions and bit masks.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let r = state.wrapping_mul(0x2545_f491_4f6c_dd1d);
            let at = (r % good.len() as u64) as usize;
            let mask = 1u8 << ((r >> 32) % 8);
            let mut bad = good.clone();
            bad[at] ^= mask;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                matches!(
                    verify_ledger(dir.path(), &service.service.cert_der),
                    Err(LedgerError::Corrupt { .. })
                ),
                "flip at {at} (mask {mask:#x}) of {} not found",
                good.len()
            );
        }
    }

    #[test]
    fn a_torn_final_frame_is_cut_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let service = ServiceIdentity::generate().unwrap();
        small_ledger(dir.path(), &service);
        let path = dir.path().join(LEDGER_FILE);
        let good = std::fs::read(&path).unwrap();
        let (ledger, _) = Ledger::open(
            dir.path(),
            config(2),
            &service.node,
            &service.service.cert_der,
        )
        .unwrap();
        drop(ledger);
        // Frame boundaries: re-scan to find the offset of the last frame.
        let full = verify_ledger(dir.path(), &service.service.cert_der).unwrap();
        for cut in (FILE_HEADER_LEN as usize + 1..good.len()).rev().step_by(7) {
            std::fs::write(&path, &good[..cut]).unwrap();
            let summary = verify_ledger(dir.path(), &service.service.cert_der).unwrap();
            assert!(summary.transactions < full.transactions);
            let (ledger, _) = Ledger::open(
                dir.path(),
                config(2),
                &service.node,
                &service.service.cert_der,
            )
            .unwrap();
            assert_eq!(ledger.last_seqno(), summary.transactions);
            drop(ledger);
            let after = std::fs::read(&path).unwrap();
            assert_eq!(after.len() as u64, cut as u64 - summary.torn_tail_bytes);
            assert_eq!(after[..], good[..after.len()]);
        }
        // A zero-filled tail (size extended, data never written) is torn too.
        let mut zeroed = good.clone();
        zeroed.extend_from_slice(&[0u8; 100]);
        std::fs::write(&path, &zeroed).unwrap();
        assert_eq!(
            verify_ledger(dir.path(), &service.service.cert_der)
                .unwrap()
                .torn_tail_bytes,
            100
        );
    }

    #[test]
    fn a_ledger_of_another_service_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let service = ServiceIdentity::generate().unwrap();
        small_ledger(dir.path(), &service);
        let other = ServiceIdentity::generate().unwrap();
        let err = verify_ledger(dir.path(), &other.service.cert_der).unwrap_err();
        assert!(err.to_string().contains("not endorsed"), "{err}");
    }

    #[test]
    fn receipts_material_folds_to_the_signed_root() {
        let dir = tempfile::tempdir().unwrap();
        let service = ServiceIdentity::generate().unwrap();
        let (mut ledger, _) = Ledger::open(
            dir.path(),
            config(3),
            &service.node,
            &service.service.cert_der,
        )
        .unwrap();
        for i in 0..7u8 {
            let _ = ledger.append(vec![i], Some([i; 32])).unwrap();
        }
        // tx1 tx2 tx3 sig4 tx5 tx6 tx7 sig8 tx9 tx10
        assert!(matches!(
            ledger.receipt_material(9),
            Err(LedgerError::NotSigned(9))
        ));
        assert!(matches!(
            ledger.receipt_material(0),
            Err(LedgerError::UnknownTransaction(0))
        ));
        assert!(matches!(
            ledger.receipt_material(99),
            Err(LedgerError::UnknownTransaction(99))
        ));
        for seqno in [1, 2, 3, 4, 5, 7, 8] {
            let m = ledger.receipt_material(seqno).unwrap();
            assert_eq!(
                merkle::root_from_proof(&m.leaf, &m.proof),
                m.root,
                "seqno {seqno}"
            );
            verify_root_signature(&m.root, &m.signature, &m.node_cert).unwrap();
            if !m.is_signature {
                assert_eq!(
                    m.leaf,
                    merkle::leaf_hash(&m.write_set_digest, &m.commit_evidence, &m.claims_digest)
                );
                assert!(m.commit_evidence.starts_with(&format!("ce:1.{seqno}:")));
            }
        }
        assert!(ledger.receipt_material(4).unwrap().is_signature);
    }

    #[test]
    fn group_commit_completes_concurrent_tickets() {
        let dir = tempfile::tempdir().unwrap();
        let service = ServiceIdentity::generate().unwrap();
        let (ledger, _) = Ledger::open(
            dir.path(),
            config(50),
            &service.node,
            &service.service.cert_der,
        )
        .unwrap();
        let ledger = Arc::new(Mutex::new(ledger));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let ledger = ledger.clone();
                std::thread::spawn(move || {
                    for i in 0..50u32 {
                        let ticket = ledger
                            .lock()
                            .unwrap()
                            .append(format!("{t}:{i}").into_bytes(), None)
                            .unwrap();
                        ticket.wait().unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let ledger = Arc::try_unwrap(ledger).unwrap().into_inner().unwrap();
        assert_eq!(ledger.last_seqno(), 400 + 8);
        let fsyncs = ledger.fsync_count();
        eprintln!("group commit: 408 frames, {fsyncs} fsyncs");
        assert!(
            fsyncs < 400,
            "{fsyncs} fsyncs for 400 concurrent appends: no group commit"
        );
        drop(ledger);
        let (_, replayed) = Ledger::open(
            dir.path(),
            config(50),
            &service.node,
            &service.service.cert_der,
        )
        .unwrap();
        assert_eq!(replayed.len(), 400);
    }

    #[test]
    fn async_wait_and_time_based_signatures() {
        let dir = tempfile::tempdir().unwrap();
        let service = ServiceIdentity::generate().unwrap();
        let cfg = LedgerConfig {
            signature_interval_txs: 1000,
            signature_interval: Duration::from_millis(20),
        };
        let (mut ledger, _) =
            Ledger::open(dir.path(), cfg, &service.node, &service.service.cert_der).unwrap();
        let ticket = ledger.append(b"a".to_vec(), None).unwrap();
        assert!(ledger.durable_seqno() <= 1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(ticket.wait_async()).unwrap();
        assert_eq!(ledger.durable_seqno(), 1);
        assert!(ledger.sign_if_due().unwrap().is_none());
        std::thread::sleep(Duration::from_millis(30));
        let sig = ledger.sign_if_due().unwrap().expect("due by time");
        assert_eq!(sig.seqno(), 2);
        assert!(ledger.sign_if_due().unwrap().is_none(), "nothing unsigned");
    }

    #[test]
    fn the_root_signature_is_ccfs_prehashed_sha256() {
        let service = ServiceIdentity::generate().unwrap();
        let signer = RootSigner::new(&service.node).unwrap();
        let root = merkle::sha256(&[b"root"]);
        let sig = signer.sign_root(&root).unwrap();
        verify_root_signature(&root, &sig, &service.node.cert_der).unwrap();
        let other = merkle::sha256(&[b"other"]);
        assert!(verify_root_signature(&other, &sig, &service.node.cert_der).is_err());
        // Not a plain SHA-384 signature over the root bytes.
        let plain = UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_ASN1, {
            use x509_parser::prelude::FromDer;
            let (_, c) =
                x509_parser::certificate::X509Certificate::from_der(&service.node.cert_der)
                    .unwrap();
            c.public_key().subject_public_key.data.to_vec()
        });
        assert!(plain.verify(&root, &sig).is_err());
    }
}

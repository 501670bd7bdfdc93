//! The transactional key-value state of the governance service, shaped like CCF's KV.
//!
//! The state is a set of named maps (CCF names such as `public:ccf.gov.proposals`,
//! `public:contracts`; a name without the `public:` prefix is a *private* map, which CCF encrypts
//! in the ledger) from string keys to JSON values. Every key carries the [`Version`]
//! `(view, seqno)` of the transaction that last wrote it: the contracts app exposes it as the
//! optimistic-concurrency `version` string `"{view}.{seqno}"`.
//!
//! A [`Tx`] reads the committed state plus its own writes (read-your-writes) and produces a
//! [`WriteSet`]. Nothing reaches the [`Store`] until the caller applies that write set at a version
//! ([`Store::commit`], or [`Store::apply`] when replaying the ledger at start-up), so a failed
//! (rolled-back) transaction is simply dropped and leaves no trace. The write set has a canonical
//! byte encoding ([`WriteSet::to_bytes`]) that the ledger stores opaquely: equal write sets give
//! equal bytes, and [`WriteSet::from_bytes`] refuses any other encoding of the same content, so a
//! ledger byte changed inside a write set cannot decode to the same state silently.
//!
//! Format (all integers big-endian; see `docs/governance.md`):
//! `"EGWS" ‖ 0x01 ‖ u32 map count ‖ { u32 len ‖ map name ‖ u32 entry count ‖ { u32 len ‖ key ‖
//! op (0 = remove, 1 = put) ‖ [u32 len ‖ canonical JSON] } }`, maps and keys in byte order.
//! Canonical JSON: no whitespace, object members sorted by key bytes, strings and numbers as
//! `serde_json` writes them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde_json::Value;

/// The version of a committed transaction: `(view, seqno)`, written `"{view}.{seqno}"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version {
    /// The consensus view (term) the transaction was committed in.
    pub view: u64,
    /// The transaction's sequence number, unique and increasing over the whole ledger.
    pub seqno: u64,
}

impl Version {
    /// A version from its parts.
    pub fn new(view: u64, seqno: u64) -> Self {
        Self { view, seqno }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.view, self.seqno)
    }
}

impl FromStr for Version {
    type Err = KvError;
    fn from_str(text: &str) -> Result<Self, KvError> {
        let bad = || KvError::BadVersion(text.to_owned());
        let (view, seqno) = text.split_once('.').ok_or_else(bad)?;
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(view) || !digits(seqno) {
            return Err(bad());
        }
        Ok(Self {
            view: view.parse().map_err(|_| bad())?,
            seqno: seqno.parse().map_err(|_| bad())?,
        })
    }
}

/// Errors of the KV layer: decoding a write set or snapshot, or applying one out of order.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The bytes do not start with the expected magic.
    #[error("not a governance {what}: bad magic")]
    BadMagic {
        /// "write set" or "snapshot".
        what: &'static str,
    },
    /// An unknown format byte.
    #[error("unknown {what} format {format}")]
    UnknownFormat {
        /// "write set" or "snapshot".
        what: &'static str,
        /// The format byte found.
        format: u8,
    },
    /// The bytes end inside a field.
    #[error("truncated at offset {offset}")]
    Truncated {
        /// Where the missing field starts.
        offset: usize,
    },
    /// A map name or key is not UTF-8.
    #[error("invalid UTF-8 at offset {offset}")]
    InvalidUtf8 {
        /// Where the string starts.
        offset: usize,
    },
    /// An operation byte other than 0 (remove) or 1 (put).
    #[error("invalid operation {op} at offset {offset}")]
    InvalidOperation {
        /// Where the byte is.
        offset: usize,
        /// The byte found.
        op: u8,
    },
    /// A value that is not JSON.
    #[error("invalid JSON value for {map}[{key}]: {reason}")]
    InvalidJson {
        /// The map.
        map: String,
        /// The key.
        key: String,
        /// The parser's message.
        reason: String,
    },
    /// Decodable bytes that are not the canonical encoding (order, duplicates, JSON spelling).
    #[error("not the canonical encoding (at or before offset {offset})")]
    NotCanonical {
        /// Where the first difference is.
        offset: usize,
    },
    /// Bytes after the end of the encoding.
    #[error("{extra} trailing bytes at offset {offset}")]
    TrailingBytes {
        /// Where they start.
        offset: usize,
        /// How many.
        extra: usize,
    },
    /// A write set applied at a version not after the last applied one.
    #[error("write set at {given} is not after the last applied version {last}")]
    VersionNotAfter {
        /// The last applied version.
        last: Version,
        /// The version given.
        given: Version,
    },
    /// A version string that is not `"{view}.{seqno}"`.
    #[error("not a version \"view.seqno\": {0:?}")]
    BadVersion(String),
}

/// A committed value and the version of its last write.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The JSON value.
    pub value: Value,
    /// The version of the transaction that wrote it.
    pub version: Version,
}

/// The status of a transaction id, as CCF's `GET /gov/service/transactions/{txid}` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxStatus {
    /// Not known to this node (in the future).
    Unknown,
    /// Known but not yet committed (never produced by [`Store`]: the store holds committed state).
    Pending,
    /// Committed.
    Committed,
    /// That seqno was committed in another view, or the view ended before it: it never will be.
    Invalid,
}

impl TxStatus {
    /// CCF's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TxStatus::Unknown => "Unknown",
            TxStatus::Pending => "Pending",
            TxStatus::Committed => "Committed",
            TxStatus::Invalid => "Invalid",
        }
    }
}

/// The committed state: named maps of versioned JSON values.
#[derive(Clone, Debug, PartialEq)]
pub struct Store {
    maps: BTreeMap<String, BTreeMap<String, Entry>>,
    /// The view new transactions are committed in.
    view: u64,
    /// The last applied version (`0.0` when empty).
    last: Version,
    /// `(view, first seqno of that view)`, in order: the view history for transaction status.
    views: Vec<(u64, u64)>,
    /// Every write to a map whose name starts with [`HISTORY_PREFIX`] (the events), kept so a
    /// seqno range can be listed without reading the ledger. Rebuilt by replaying the ledger; not
    /// part of a snapshot.
    history: BTreeMap<(String, String), Vec<(Version, Value)>>,
}

/// The maps whose write history the store keeps (the clean-room events).
pub const HISTORY_PREFIX: &str = "public:events-";

impl Default for Store {
    fn default() -> Self {
        Self::new(Self::FIRST_VIEW)
    }
}

impl Store {
    /// The view a fresh service starts in.
    pub const FIRST_VIEW: u64 = 1;

    /// An empty store whose new transactions commit in `view`.
    pub fn new(view: u64) -> Self {
        Self {
            maps: BTreeMap::new(),
            view,
            last: Version::default(),
            views: Vec::new(),
            history: BTreeMap::new(),
        }
    }

    /// The view new transactions commit in.
    pub fn view(&self) -> u64 {
        self.view
    }

    /// Moves new transactions to a later view (e.g. after a restart). Earlier views are ignored.
    pub fn advance_view(&mut self, view: u64) {
        self.view = self.view.max(view);
    }

    /// The last applied version.
    pub fn last_version(&self) -> Version {
        self.last
    }

    /// The version the next [`Store::commit`] will use.
    pub fn next_version(&self) -> Version {
        Version::new(self.view.max(self.last.view), self.last.seqno + 1)
    }

    /// A new transaction over the current state.
    pub fn transaction(&self) -> Tx<'_> {
        Tx {
            store: self,
            writes: BTreeMap::new(),
        }
    }

    /// A committed entry.
    pub fn entry(&self, map: &str, key: &str) -> Option<&Entry> {
        self.maps.get(map)?.get(key)
    }

    /// The committed entries of a map, in key order.
    pub fn entries(&self, map: &str) -> impl Iterator<Item = (&String, &Entry)> {
        self.maps.get(map).into_iter().flat_map(|m| m.iter())
    }

    /// Applies a write set at the next version and returns that version.
    pub fn commit(&mut self, write_set: &WriteSet) -> Version {
        let version = self.next_version();
        self.apply_unchecked(version, write_set);
        version
    }

    /// Applies a write set at a given version (ledger replay, or a version the ledger assigned).
    /// The seqno must be after the last applied one; the view must not go back.
    pub fn apply(&mut self, version: Version, write_set: &WriteSet) -> Result<(), KvError> {
        if version.seqno <= self.last.seqno || version.view < self.last.view {
            return Err(KvError::VersionNotAfter {
                last: self.last,
                given: version,
            });
        }
        self.apply_unchecked(version, write_set);
        Ok(())
    }

    /// The recorded writes to `map[key]` with `from ≤ seqno ≤ to` (only maps under
    /// [`HISTORY_PREFIX`]; a removal is not listed).
    pub fn key_history(&self, map: &str, key: &str, from: u64, to: u64) -> Vec<(Version, Value)> {
        self.history
            .get(&(map.to_owned(), key.to_owned()))
            .map(|writes| {
                writes
                    .iter()
                    .filter(|(v, _)| v.seqno >= from && v.seqno <= to)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    fn apply_unchecked(&mut self, version: Version, write_set: &WriteSet) {
        for (map_name, writes) in &write_set.maps {
            if map_name.starts_with(HISTORY_PREFIX) {
                for (key, write) in writes {
                    if let Some(value) = write {
                        self.history
                            .entry((map_name.clone(), key.clone()))
                            .or_default()
                            .push((version, value.clone()));
                    }
                }
            }
            let map = self.maps.entry(map_name.clone()).or_default();
            for (key, write) in writes {
                match write {
                    Some(value) => {
                        map.insert(
                            key.clone(),
                            Entry {
                                value: value.clone(),
                                version,
                            },
                        );
                    }
                    None => {
                        map.remove(key);
                    }
                }
            }
            if map.is_empty() {
                self.maps.remove(map_name);
            }
        }
        if self
            .views
            .last()
            .is_none_or(|&(view, _)| view != version.view)
        {
            self.views.push((version.view, version.seqno));
        }
        self.last = version;
        self.view = self.view.max(version.view);
    }

    /// The status of a transaction id against this store's history.
    pub fn tx_status(&self, version: Version) -> TxStatus {
        if version.seqno == 0 || version.view == 0 {
            return TxStatus::Invalid;
        }
        if version.seqno > self.last.seqno {
            return if version.view < self.view.max(self.last.view) {
                TxStatus::Invalid
            } else {
                TxStatus::Unknown
            };
        }
        let view_at = self
            .views
            .iter()
            .rev()
            .find(|&&(_, first)| first <= version.seqno)
            .map(|&(v, _)| v);
        if view_at == Some(version.view) {
            TxStatus::Committed
        } else {
            TxStatus::Invalid
        }
    }

    /// The whole state in a canonical encoding (equal states, equal bytes): a snapshot.
    /// `"EGSS" ‖ 0x01 ‖ u64 view ‖ u64 last view ‖ u64 last seqno ‖ u32 n ‖ n × (u64 view ‖ u64
    /// first seqno) ‖ u32 map count ‖ { name ‖ u32 count ‖ { key ‖ u64 view ‖ u64 seqno ‖ JSON } }`.
    pub fn snapshot_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.push(FORMAT_1);
        for n in [self.view, self.last.view, self.last.seqno] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        put_u32(&mut out, self.views.len());
        for &(view, first) in &self.views {
            out.extend_from_slice(&view.to_be_bytes());
            out.extend_from_slice(&first.to_be_bytes());
        }
        put_u32(&mut out, self.maps.len());
        for (name, map) in &self.maps {
            put_bytes(&mut out, name.as_bytes());
            put_u32(&mut out, map.len());
            for (key, entry) in map {
                put_bytes(&mut out, key.as_bytes());
                out.extend_from_slice(&entry.version.view.to_be_bytes());
                out.extend_from_slice(&entry.version.seqno.to_be_bytes());
                put_bytes(&mut out, canonical_json(&entry.value).as_bytes());
            }
        }
        out
    }

    /// Decodes [`Store::snapshot_bytes`]; refuses any non-canonical encoding.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Self, KvError> {
        let what = "snapshot";
        let mut r = Reader { bytes, pos: 0 };
        r.magic(SNAPSHOT_MAGIC, what)?;
        let view = r.u64()?;
        let last = Version::new(r.u64()?, r.u64()?);
        let mut views = Vec::new();
        for _ in 0..r.u32()? {
            views.push((r.u64()?, r.u64()?));
        }
        let mut maps = BTreeMap::new();
        for _ in 0..r.u32()? {
            let name = r.string()?;
            let mut map = BTreeMap::new();
            for _ in 0..r.u32()? {
                let key = r.string()?;
                let version = Version::new(r.u64()?, r.u64()?);
                let value = r.json(&name, &key)?;
                map.insert(key, Entry { value, version });
            }
            maps.insert(name, map);
        }
        r.end()?;
        let store = Self {
            maps,
            view,
            last,
            views,
            history: BTreeMap::new(),
        };
        let again = store.snapshot_bytes();
        if again != bytes {
            return Err(KvError::NotCanonical {
                offset: first_difference(&again, bytes),
            });
        }
        Ok(store)
    }
}

/// The names of the maps the governance state uses (CCF's names where CCF has the map, the CGS
/// app's names otherwise). A name without `public:` is private (CCF encrypts it in the ledger).
pub mod maps {
    /// Proposal id → the raw proposal body (a JSON string holding the payload text).
    pub const PROPOSALS: &str = "public:ccf.gov.proposals";
    /// Proposal id → `{proposer_id, state, ballots:{member: js}, final_votes?, vote_failures?, failure?}`.
    pub const PROPOSALS_INFO: &str = "public:ccf.gov.proposals_info";
    /// Replay window: `"{created_at:0>10}:{hex sha256(signature)}"` → proposal id.
    pub const COSE_RECENT_PROPOSALS: &str = "public:ccf.gov.cose_recent_proposals";
    /// Member id → the whole COSE envelope of its last governance request (base64), by the glue.
    pub const COSE_HISTORY: &str = "public:ccf.gov.cose_history";
    /// Member id → certificate PEM.
    pub const MEMBER_CERTS: &str = "public:ccf.gov.members.certs";
    /// Member id → `{status: "Accepted"|"Active", member_data?, recovery_role?}`.
    pub const MEMBER_INFO: &str = "public:ccf.gov.members.info";
    /// Member id → RSA encryption public key PEM.
    pub const MEMBER_ENCRYPTION_KEYS: &str = "public:ccf.gov.members.encryption_public_keys";
    /// Member id → `{state_digest, signed?}` (issued by `:update`, acknowledged by `:ack`).
    pub const MEMBER_ACKS: &str = "public:ccf.gov.members.acks";
    /// `"0"` → `{recovery_threshold}`.
    pub const SERVICE_CONFIG: &str = "public:ccf.gov.service.config";
    /// Draft contracts: id → `{data}`.
    pub const CONTRACTS: &str = "public:contracts";
    /// Accepted contracts: id → `{data, proposalId, finalVotes:{member: bool}}`.
    pub const ACCEPTED_CONTRACTS: &str = "public:ccf.gov.accepted_contracts";
    /// Contract id → `{serializedMemberToStatusMap: JSON [[member, "enabled"|"disabled"], …]}`.
    pub const CONTRACTS_EXECUTION_STATUS: &str = "public:contracts_execution_status";
    /// Contract id → `{status}`.
    pub const CONTRACTS_LOGGING_STATUS: &str = "public:ccf.gov.contracts_logging_status";
    /// Contract id → `{status}`.
    pub const CONTRACTS_TELEMETRY_STATUS: &str = "public:ccf.gov.contracts_telemetry_status";
    /// Option name → `{status}` (the `autoapprove-*` options).
    pub const CGS_RUNTIME_OPTIONS: &str = "public:ccf.gov.cgs_runtime_options";
    /// Contract id → `{data}`.
    pub const DEPLOYMENT_SPECS: &str = "public:ccf.gov.deployment_specs";
    /// Contract id → `{data}`.
    pub const DEPLOYMENT_INFO: &str = "public:ccf.gov.deployment_info";
    /// Draft member documents: id → `{contractId, data}`.
    pub const DOCUMENTS: &str = "public:documents";
    /// Accepted member documents: id → `{contractId, data, proposalId, finalVotes}`.
    pub const ACCEPTED_DOCUMENTS: &str = "public:ccf.gov.accepted_member_documents";
    /// Registered jwt callers: `oid` → `{tid?, …}`.
    pub const USER_IDENTITIES: &str = "public:ccf.gov.user_identities";

    /// The clean-room policy of a contract: claim → JSON array of allowed values.
    pub fn clean_room_policy(contract_id: &str) -> String {
        format!("public:ccf.gov.policies.cleanroom-{contract_id}")
    }

    /// A delegate policy of a contract (`<type>` e.g. `events`, `secrets`; `<delegateId>` e.g.
    /// `writer`, a secret id): claim → allowed values.
    pub fn delegate_policy(contract_id: &str, kind: &str, delegate_id: &str) -> String {
        format!("public:policies.cleanroom-delegates-{contract_id}_{kind}_{delegate_id}")
    }

    /// The delegate policies of a contract: `"<type>_<delegateId>"` → `{type, id}`.
    pub fn delegate_policy_list(contract_id: &str) -> String {
        format!("public:policies.cleanroom-delegates-list-{contract_id}")
    }

    /// The events of a contract and scope: id → `{timestamp, data}`.
    pub fn events(contract_id: &str, scope: &str) -> String {
        if scope.is_empty() {
            format!("public:events-{contract_id}")
        } else {
            format!("public:events-{contract_id}-{scope}")
        }
    }

    /// The secrets of a contract (private): secret id → `{value}`.
    pub fn secrets(contract_id: &str) -> String {
        format!("secrets-{contract_id}")
    }
}

const WRITE_SET_MAGIC: &[u8; 4] = b"EGWS";
const SNAPSHOT_MAGIC: &[u8; 4] = b"EGSS";
const FORMAT_1: u8 = 1;
const OP_REMOVE: u8 = 0;
const OP_PUT: u8 = 1;

type Writes = BTreeMap<String, BTreeMap<String, Option<Value>>>;

/// A transaction: reads see the committed state plus this transaction's own writes.
pub struct Tx<'a> {
    store: &'a Store,
    writes: Writes,
}

/// A point to roll a transaction back to (e.g. an action's apply that failed).
pub struct Checkpoint(Writes);

impl<'a> Tx<'a> {
    /// The store this transaction reads.
    pub fn store(&self) -> &'a Store {
        self.store
    }

    /// The value of a key, seeing this transaction's writes.
    pub fn get(&self, map: &str, key: &str) -> Option<&Value> {
        if let Some(write) = self.writes.get(map).and_then(|m| m.get(key)) {
            return write.as_ref();
        }
        self.store.entry(map, key).map(|e| &e.value)
    }

    /// Whether a key exists, seeing this transaction's writes.
    pub fn contains(&self, map: &str, key: &str) -> bool {
        self.get(map, key).is_some()
    }

    /// The committed version of a key (the version of its last committed write), or `None` if the
    /// key is absent or this transaction wrote it (its version is not known until commit).
    pub fn committed_version(&self, map: &str, key: &str) -> Option<Version> {
        if self.writes.get(map).is_some_and(|m| m.contains_key(key)) {
            return None;
        }
        self.store.entry(map, key).map(|e| e.version)
    }

    /// Writes a key.
    pub fn put(&mut self, map: &str, key: &str, value: Value) {
        self.writes
            .entry(map.to_owned())
            .or_default()
            .insert(key.to_owned(), Some(value));
    }

    /// Removes a key (a no-op on commit if it is absent).
    pub fn remove(&mut self, map: &str, key: &str) {
        self.writes
            .entry(map.to_owned())
            .or_default()
            .insert(key.to_owned(), None);
    }

    /// The keys and values of a map in key order, seeing this transaction's writes.
    pub fn entries(&self, map: &str) -> Vec<(String, Value)> {
        let mut merged: BTreeMap<&str, &Value> = self
            .store
            .entries(map)
            .map(|(k, e)| (k.as_str(), &e.value))
            .collect();
        if let Some(writes) = self.writes.get(map) {
            for (key, write) in writes {
                match write {
                    Some(value) => {
                        merged.insert(key, value);
                    }
                    None => {
                        merged.remove(key.as_str());
                    }
                }
            }
        }
        merged
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect()
    }

    /// The keys of a map in order.
    pub fn keys(&self, map: &str) -> Vec<String> {
        self.entries(map).into_iter().map(|(k, _)| k).collect()
    }

    /// A checkpoint of the writes so far.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint(self.writes.clone())
    }

    /// Drops every write made since the checkpoint.
    pub fn rollback_to(&mut self, checkpoint: Checkpoint) {
        self.writes = checkpoint.0;
    }

    /// Whether this transaction wrote nothing.
    pub fn is_read_only(&self) -> bool {
        self.writes.is_empty()
    }

    /// The write set to commit.
    pub fn into_write_set(self) -> WriteSet {
        WriteSet { maps: self.writes }
    }
}

/// The writes of one transaction: per map, key → new value (`None` = removed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteSet {
    maps: Writes,
}

impl WriteSet {
    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// The writes, map by map, in order.
    pub fn maps(&self) -> impl Iterator<Item = (&str, &BTreeMap<String, Option<Value>>)> {
        self.maps.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The writes to public maps (names starting `public:`), which the ledger stores in the clear.
    pub fn public_part(&self) -> WriteSet {
        self.filtered(true)
    }

    /// The writes to private maps (e.g. `secrets-<contractId>`), which CCF encrypts in the ledger.
    pub fn private_part(&self) -> WriteSet {
        self.filtered(false)
    }

    /// Both parts back together (`public_part().merged(&private_part())` is the whole set).
    pub fn merged(&self, other: &WriteSet) -> WriteSet {
        let mut maps = self.maps.clone();
        for (name, writes) in &other.maps {
            maps.entry(name.clone()).or_default().extend(writes.clone());
        }
        WriteSet { maps }
    }

    fn filtered(&self, public: bool) -> WriteSet {
        let maps = self
            .maps
            .iter()
            .filter(|(name, _)| name.starts_with("public:") == public)
            .map(|(n, w)| (n.clone(), w.clone()))
            .collect();
        WriteSet { maps }
    }

    /// The canonical encoding (module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(WRITE_SET_MAGIC);
        out.push(FORMAT_1);
        let maps: Vec<_> = self.maps.iter().filter(|(_, m)| !m.is_empty()).collect();
        put_u32(&mut out, maps.len());
        for (name, writes) in maps {
            put_bytes(&mut out, name.as_bytes());
            put_u32(&mut out, writes.len());
            for (key, write) in writes {
                put_bytes(&mut out, key.as_bytes());
                match write {
                    None => out.push(OP_REMOVE),
                    Some(value) => {
                        out.push(OP_PUT);
                        put_bytes(&mut out, canonical_json(value).as_bytes());
                    }
                }
            }
        }
        out
    }

    /// Decodes [`WriteSet::to_bytes`]; refuses trailing bytes and any non-canonical encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KvError> {
        let mut r = Reader { bytes, pos: 0 };
        r.magic(WRITE_SET_MAGIC, "write set")?;
        let mut maps = Writes::new();
        for _ in 0..r.u32()? {
            let name = r.string()?;
            let mut writes = BTreeMap::new();
            for _ in 0..r.u32()? {
                let key = r.string()?;
                let at = r.pos;
                let write = match r.u8()? {
                    OP_REMOVE => None,
                    OP_PUT => Some(r.json(&name, &key)?),
                    op => return Err(KvError::InvalidOperation { offset: at, op }),
                };
                writes.insert(key, write);
            }
            maps.insert(name, writes);
        }
        r.end()?;
        let set = Self { maps };
        let again = set.to_bytes();
        if again != bytes {
            return Err(KvError::NotCanonical {
                offset: first_difference(&again, bytes),
            });
        }
        Ok(set)
    }
}

/// JSON with no whitespace and object members sorted by key, so equal values give equal text
/// whichever order `serde_json`'s map keeps.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(members) => {
            let mut sorted: Vec<_> = members.iter().collect();
            sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, member)) in sorted.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(member, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Counts and lengths come from in-memory maps and values; over 4 GiB is not representable
    // in a ledger entry anyway.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn first_difference(a: &[u8], b: &[u8]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

struct Reader<'b> {
    bytes: &'b [u8],
    pos: usize,
}

impl<'b> Reader<'b> {
    fn take(&mut self, n: usize) -> Result<&'b [u8], KvError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(KvError::Truncated { offset: self.pos })?;
        let slice = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(slice)
    }
    fn magic(&mut self, magic: &[u8; 4], what: &'static str) -> Result<(), KvError> {
        if self.take(4)? != magic {
            return Err(KvError::BadMagic { what });
        }
        match self.u8()? {
            FORMAT_1 => Ok(()),
            format => Err(KvError::UnknownFormat { what, format }),
        }
    }
    fn u8(&mut self) -> Result<u8, KvError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, KvError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, KvError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(a))
    }
    fn field(&mut self) -> Result<&'b [u8], KvError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, KvError> {
        let offset = self.pos;
        let bytes = self.field()?;
        String::from_utf8(bytes.to_vec()).map_err(|_| KvError::InvalidUtf8 { offset })
    }
    fn json(&mut self, map: &str, key: &str) -> Result<Value, KvError> {
        let bytes = self.field()?;
        serde_json::from_slice(bytes).map_err(|e| KvError::InvalidJson {
            map: map.to_owned(),
            key: key.to_owned(),
            reason: e.to_string(),
        })
    }
    fn end(&self) -> Result<(), KvError> {
        if self.pos != self.bytes.len() {
            return Err(KvError::TrailingBytes {
                offset: self.pos,
                extra: self.bytes.len() - self.pos,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn read_your_writes_and_versions() {
        let mut store = Store::default();
        let mut tx = store.transaction();
        tx.put("public:contracts", "c1", json!({"data": "a"}));
        assert_eq!(
            tx.get("public:contracts", "c1"),
            Some(&json!({"data": "a"}))
        );
        assert_eq!(tx.committed_version("public:contracts", "c1"), None);
        let ws = tx.into_write_set();
        let v1 = store.commit(&ws);
        assert_eq!(v1.to_string(), "1.1");
        assert_eq!(store.entry("public:contracts", "c1").unwrap().version, v1);

        let mut tx = store.transaction();
        assert_eq!(tx.committed_version("public:contracts", "c1"), Some(v1));
        tx.put("public:contracts", "c2", json!(2));
        tx.remove("public:contracts", "c1");
        assert_eq!(tx.get("public:contracts", "c1"), None);
        assert_eq!(tx.keys("public:contracts"), vec!["c2".to_owned()]);
        let v2 = store.commit(&tx.into_write_set());
        assert_eq!(v2, Version::new(1, 2));
        assert!(store.entry("public:contracts", "c1").is_none());
    }

    #[test]
    fn a_dropped_transaction_leaves_no_trace() {
        let mut store = Store::default();
        let before = store.clone();
        {
            let mut tx = store.transaction();
            tx.put("public:x", "k", json!(1));
        }
        assert_eq!(store, before);
        let mut tx = store.transaction();
        tx.put("public:x", "a", json!(1));
        let cp = tx.checkpoint();
        tx.put("public:x", "b", json!(2));
        tx.rollback_to(cp);
        assert_eq!(tx.keys("public:x"), vec!["a".to_owned()]);
        let ws = tx.into_write_set();
        store.commit(&ws);
        assert!(store.entry("public:x", "b").is_none());
    }

    #[test]
    fn private_maps_split_out() {
        let store = Store::default();
        let mut tx = store.transaction();
        tx.put("public:contracts", "c", json!(1));
        tx.put("secrets-c", "m_s", json!({"value": "v"}));
        let ws = tx.into_write_set();
        let (public, private) = (ws.public_part(), ws.private_part());
        assert_eq!(
            public.maps().map(|(n, _)| n).collect::<Vec<_>>(),
            vec!["public:contracts"]
        );
        assert_eq!(
            private.maps().map(|(n, _)| n).collect::<Vec<_>>(),
            vec!["secrets-c"]
        );
        assert_eq!(public.merged(&private), ws);
    }

    #[test]
    fn versions_parse_and_print() {
        assert_eq!("2.45".parse::<Version>().unwrap(), Version::new(2, 45));
        for bad in ["", "2", "2.", ".4", "a.1", "1.2.3", "-1.2", "+1.2"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn apply_refuses_old_versions_and_replays_equal() {
        let mut store = Store::default();
        let mut tx = store.transaction();
        tx.put("public:a", "k", json!({"b": 1, "a": [true, null, "x"]}));
        let ws = tx.into_write_set();
        let v = store.commit(&ws);
        let bytes = ws.to_bytes();
        let mut replay = Store::default();
        replay
            .apply(v, &WriteSet::from_bytes(&bytes).unwrap())
            .unwrap();
        assert_eq!(replay, store);
        assert_eq!(replay.snapshot_bytes(), store.snapshot_bytes());
        assert!(matches!(
            replay.apply(v, &ws),
            Err(KvError::VersionNotAfter { .. })
        ));
        assert_eq!(
            Store::from_snapshot(&store.snapshot_bytes()).unwrap(),
            store
        );
    }

    #[test]
    fn write_set_decoding_refuses_bad_bytes() {
        let mut tx_store = Store::default();
        let mut tx = tx_store.transaction();
        tx.put("public:a", "k", json!({"x": 1}));
        tx.remove("public:a", "gone");
        let ws = tx.into_write_set();
        tx_store.commit(&ws);
        let bytes = ws.to_bytes();
        assert_eq!(WriteSet::from_bytes(&bytes).unwrap(), ws);
        for cut in 0..bytes.len() {
            assert!(WriteSet::from_bytes(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            WriteSet::from_bytes(&longer),
            Err(KvError::TrailingBytes { .. })
        ));
        let mut bad_magic = bytes.clone();
        bad_magic[0] = b'X';
        assert!(matches!(
            WriteSet::from_bytes(&bad_magic),
            Err(KvError::BadMagic { .. })
        ));
        // The same content with whitespace in the JSON is not canonical.
        let text = "{\"x\":1}";
        let spaced = "{\"x\": 1}";
        let pos = bytes
            .windows(text.len())
            .position(|w| w == text.as_bytes())
            .unwrap();
        let mut other = bytes[..pos - 4].to_vec();
        other.extend_from_slice(&(spaced.len() as u32).to_be_bytes());
        other.extend_from_slice(spaced.as_bytes());
        other.extend_from_slice(&bytes[pos + text.len()..]);
        assert!(matches!(
            WriteSet::from_bytes(&other),
            Err(KvError::NotCanonical { .. })
        ));
    }

    #[test]
    fn transaction_status_follows_the_view_history() {
        let mut store = Store::new(2);
        let ws = {
            let mut tx = store.transaction();
            tx.put("public:a", "k", json!(1));
            tx.into_write_set()
        };
        store.commit(&ws);
        store.commit(&ws);
        store.advance_view(3);
        store.commit(&ws);
        assert_eq!(store.tx_status(Version::new(2, 1)), TxStatus::Committed);
        assert_eq!(store.tx_status(Version::new(3, 3)), TxStatus::Committed);
        assert_eq!(store.tx_status(Version::new(3, 2)), TxStatus::Invalid);
        assert_eq!(store.tx_status(Version::new(3, 9)), TxStatus::Unknown);
        assert_eq!(store.tx_status(Version::new(2, 9)), TxStatus::Invalid);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            "[a-z\"\\\\é\u{1}]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]{0,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        /// Encoding round-trips, and applying the decoded write sets reproduces the state of a
        /// reference model (a plain map updated in the same order).
        #[test]
        fn write_sets_round_trip_against_a_model(
            txs in prop::collection::vec(
                prop::collection::vec(("[ab]", "[a-d]{1,2}", prop::option::of(json_value())), 0..5),
                1..6,
            )
        ) {
            let mut store = Store::default();
            let mut replay = Store::default();
            let mut model: BTreeMap<(String, String), Value> = BTreeMap::new();
            for writes in txs {
                let mut tx = store.transaction();
                for (map, key, value) in &writes {
                    let map = format!("public:{map}");
                    match value {
                        Some(v) => tx.put(&map, key, v.clone()),
                        None => tx.remove(&map, key),
                    }
                }
                let ws = tx.into_write_set();
                let bytes = ws.to_bytes();
                let decoded = WriteSet::from_bytes(&bytes).unwrap();
                prop_assert_eq!(decoded.to_bytes(), bytes);
                let v = store.commit(&ws);
                replay.apply(v, &decoded).unwrap();
                for (map, key, value) in writes {
                    let k = (format!("public:{map}"), key);
                    match value { Some(v) => { model.insert(k, v); } None => { model.remove(&k); } }
                }
            }
            prop_assert_eq!(replay.snapshot_bytes(), store.snapshot_bytes());
            let flat: BTreeMap<(String, String), Value> = store.maps.iter()
                .flat_map(|(m, es)| es.iter().map(move |(k, e)| ((m.clone(), k.clone()), e.value.clone())))
                .collect();
            prop_assert_eq!(flat, model);
        }
    }
}

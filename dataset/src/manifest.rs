//! The manifest itself and its payload: canonical JSON, one encoding per manifest.
//!
//! JSON rather than CBOR because the payload is what people read (`encfs dataset show`, an
//! auditor with `jq`), and the envelope is already CBOR; canonical so that a manifest has exactly
//! one encoding: fields in a fixed order, no white space, names as `serde_json` escapes them, byte
//! strings as lower-case hex, entries sorted by name (byte order) and unique. [`Manifest::from_payload`]
//! re-encodes what it parsed and refuses the payload unless the bytes are the same, so two
//! readers can never disagree on what a signed payload says. Layout: `docs/format.md`.

use encfs_crypto::format::{HEADER_LEN, Header};
use serde::{Deserialize, Serialize};

use crate::{Error, from_hex, manifest_blob_name};

/// The payload format this crate writes and reads.
pub const FORMAT: u32 = 1;

/// From this many entries on, [`Manifest::to_payload`] encodes on two threads.
const PARALLEL_ENTRIES: usize = 4096;
/// The encoded length of the usual entry (a short name, the 76-byte header and the digest in
/// hex), to size the output once instead of doubling it a dozen times up to 28 MB.
const ENTRY_BYTES: usize = HEADER_LEN * 2 + 140;

/// One blob of the dataset, in exactly one version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Full blob name (it starts with the manifest's `store_prefix`).
    pub name: String,
    /// Stored length of the blob in bytes.
    pub size: u64,
    /// The blob's 76-byte EBF header; its random salt names the version.
    pub header: Vec<u8>,
    /// SHA-256 of the blob's segment tags, in order ([`crate::tags`]).
    pub tags_sha256: [u8; 32],
}

/// A dataset: every blob under a prefix, sorted by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Payload format, [`FORMAT`].
    pub format: u32,
    /// The prefix of the datastore the manifest covers (empty: the whole container).
    pub store_prefix: String,
    /// When it was made (unix seconds).
    pub created_at: u64,
    /// The blobs, sorted by name, unique.
    pub entries: Vec<Entry>,
}

/// The JSON shape, field order as encoded (read through it; written through [`WireOut`]).
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    format: u32,
    store_prefix: String,
    created_at: u64,
    entries: Vec<WireEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEntry {
    name: String,
    size: u64,
    header: String,
    tags_sha256: String,
}

/// [`Wire`] as written, up to its entries: the object with an empty `entries`, whose closing
/// `]}` [`Manifest::write_payload`] cuts to write the entries in their place.
#[derive(Serialize)]
struct WireHead<'a> {
    format: u32,
    store_prefix: &'a str,
    created_at: u64,
    entries: [(); 0],
}

/// `entries` as the elements of a JSON array, comma-separated, without the brackets: the bytes
/// serde_json writes for [`WireEntry`] (tested), framed here because the fields are fixed and
/// the hex needs no escaping, so only the name goes through serde_json's escaper (for 100,000
/// entries that is half the encoding time).
pub(crate) fn write_entries(out: &mut Vec<u8>, entries: &[Entry]) {
    for (index, e) in entries.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        write_entry(out, &e.name, e.size, &e.header, &e.tags_sha256);
    }
}

/// One entry of [`write_entries`], from its parts.
pub(crate) fn write_entry(out: &mut Vec<u8>, name: &str, size: u64, header: &[u8], tags: &[u8]) {
    out.extend_from_slice(b"{\"name\":");
    serde_json::to_writer(&mut *out, name).expect("a name serialises");
    out.extend_from_slice(b",\"size\":");
    serde_json::to_writer(&mut *out, &size).expect("a number serialises");
    out.extend_from_slice(b",\"header\":\"");
    push_hex(out, header);
    out.extend_from_slice(b"\",\"tags_sha256\":\"");
    push_hex(out, tags);
    out.extend_from_slice(b"\"}");
}

/// Appends `bytes` as lower-case hex.
fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    out.reserve(bytes.len() * 2);
    for &b in bytes {
        out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0x0f)]]);
    }
}

fn payload_error(message: impl Into<String>) -> Error {
    Error::Payload(message.into())
}

impl Manifest {
    /// A manifest of `entries` (in any order) under `store_prefix`, made now.
    ///
    /// # Errors
    /// [`Error::Payload`] when an entry breaks a rule of the format (a duplicate name, one outside
    /// the prefix, a header or size no EBF blob has).
    pub fn new(store_prefix: &str, entries: Vec<Entry>) -> Result<Self, Error> {
        let manifest = Self::assemble(store_prefix, entries);
        manifest.validate()?;
        Ok(manifest)
    }

    /// [`Self::new`] without the check (for a caller whose manifest is checked when signed).
    pub(crate) fn assemble(store_prefix: &str, mut entries: Vec<Entry>) -> Self {
        if !entries.is_sorted_by(|a, b| a.name <= b.name) {
            entries.sort_by(|a, b| a.name.cmp(&b.name));
        }
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            format: FORMAT,
            store_prefix: store_prefix.to_owned(),
            created_at,
            entries,
        }
    }

    /// The entry of blob `name`, if listed.
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// Checks every rule of the format: version, order and uniqueness of names, names under the
    /// prefix (and not the manifest blob itself), headers that parse as EBF, sizes an EBF blob
    /// with that header can have.
    ///
    /// # Errors
    /// [`Error::Payload`] naming the first entry at fault.
    pub fn validate(&self) -> Result<(), Error> {
        if self.format != FORMAT {
            return Err(payload_error(format!(
                "format {} is not supported (this build reads format {FORMAT})",
                self.format
            )));
        }
        let own = manifest_blob_name(&self.store_prefix);
        for (index, entry) in self.entries.iter().enumerate() {
            let name = &entry.name;
            if let Some(previous) = index.checked_sub(1).map(|i| &self.entries[i].name) {
                if previous == name {
                    return Err(payload_error(format!("entry {name:?} is listed twice")));
                }
                if previous > name {
                    return Err(payload_error(format!(
                        "entries are not sorted by name: {previous:?} comes before {name:?}"
                    )));
                }
            }
            if !name.starts_with(&self.store_prefix) || name.len() == self.store_prefix.len() {
                return Err(payload_error(format!(
                    "entry {name:?} is not a blob under the prefix {:?}",
                    self.store_prefix
                )));
            }
            if *name == own {
                return Err(payload_error(format!(
                    "entry {name:?} is the manifest blob itself"
                )));
            }
            entry
                .check_shape()
                .map_err(|reason| payload_error(format!("entry {name:?}: {reason}")))?;
        }
        Ok(())
    }

    /// The canonical JSON payload.
    pub fn to_payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.payload_len_estimate());
        self.write_payload(&mut out);
        out
    }

    /// About how long the payload is (exact for entries of the usual shape), to size buffers.
    pub fn payload_len_estimate(&self) -> usize {
        64 + self.store_prefix.len() + self.entries.len() * ENTRY_BYTES
    }

    /// Appends the canonical JSON payload to `out` (the signer writes it straight into the
    /// message buffer: a fresh copy of 28 MB costs as much as encoding it).
    pub fn write_payload(&self, out: &mut Vec<u8>) {
        self.write_payload_head(out);
        let entries = &self.entries;
        if entries.len() < PARALLEL_ENTRIES {
            write_entries(out, entries);
        } else {
            // Large manifests (an upload that seals 100,000 files waits for this) are encoded
            // in two halves on two threads and joined with a comma.
            let (first, second) = entries.split_at(entries.len() / 2);
            let second = std::thread::scope(|scope| {
                let second = scope.spawn(|| {
                    let mut bytes = Vec::with_capacity(second.len() * ENTRY_BYTES);
                    write_entries(&mut bytes, second);
                    bytes
                });
                write_entries(out, first);
                second.join().expect("the encoding thread panicked")
            });
            out.push(b',');
            out.extend_from_slice(&second);
        }
        out.extend_from_slice(b"]}");
    }

    /// Appends the payload up to its first entry (`…,"entries":[`).
    pub(crate) fn write_payload_head(&self, out: &mut Vec<u8>) {
        let head = WireHead {
            format: self.format,
            store_prefix: &self.store_prefix,
            created_at: self.created_at,
            entries: [],
        };
        serde_json::to_writer(&mut *out, &head).expect("a manifest serialises");
        out.truncate(out.len() - 2); // `]}`
    }

    /// Parses and checks a payload: it must be canonical (re-encoding gives the same bytes) and
    /// pass [`Self::validate`].
    ///
    /// # Errors
    /// [`Error::Payload`] saying what is wrong.
    pub fn from_payload(bytes: &[u8]) -> Result<Self, Error> {
        let manifest = Self::parse_payload(bytes)?;
        manifest.validate()?;
        if manifest.to_payload() != bytes {
            return Err(payload_error(
                "not in canonical form (white space, field order, escapes or number spelling differ from the encoding of the same manifest)",
            ));
        }
        Ok(manifest)
    }

    /// [`Self::from_payload`] without its checks (for bytes this crate encoded).
    pub(crate) fn parse_payload(bytes: &[u8]) -> Result<Self, Error> {
        let wire: Wire = serde_json::from_slice(bytes)
            .map_err(|e| payload_error(format!("not a manifest: {e}")))?;
        let entries = wire
            .entries
            .into_iter()
            .map(|e| {
                let bad = |field: &str| {
                    payload_error(format!(
                        "entry {:?}: {field} is not lower-case hex of the right length",
                        e.name
                    ))
                };
                let header = from_hex(&e.header)
                    .filter(|h| h.len() == HEADER_LEN)
                    .ok_or_else(|| bad("header"))?;
                let tags_sha256 = from_hex(&e.tags_sha256)
                    .and_then(|t| <[u8; 32]>::try_from(t).ok())
                    .ok_or_else(|| bad("tags_sha256"))?;
                Ok(Entry {
                    name: e.name,
                    size: e.size,
                    header,
                    tags_sha256,
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(Self {
            format: wire.format,
            store_prefix: wire.store_prefix,
            created_at: wire.created_at,
            entries,
        })
    }
}

impl Entry {
    /// The exact length [`write_entries`] gives the entry of blob `name` of `size` bytes (its
    /// header and digest have fixed lengths), with `scratch` as room to escape the name in.
    pub(crate) fn encoded_len(name: &str, size: u64, scratch: &mut Vec<u8>) -> usize {
        // serde_json escapes `"`, `\` and control characters, nothing else: a name without
        // them is itself in quotes.
        let quoted = if name.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            scratch.clear();
            serde_json::to_writer(&mut *scratch, name).expect("a name serialises");
            scratch.len()
        } else {
            name.len() + 2
        };
        let digits = size.checked_ilog10().map_or(1, |d| d as usize + 1);
        r#"{"name":,"size":,"header":"","tags_sha256":""}"#.len()
            + quoted
            + digits
            + HEADER_LEN * 2
            + 64
    }

    /// The parsed EBF header.
    ///
    /// # Errors
    /// The format's error when the bytes are no EBF header.
    pub fn parsed_header(&self) -> Result<Header, encfs_crypto::Error> {
        if self.header.len() != HEADER_LEN {
            return Err(encfs_crypto::Error::InvalidLength(self.header.len() as u64));
        }
        Header::parse(&self.header)
    }

    /// The header parses, and an EBF blob with it can be `size` bytes long.
    pub(crate) fn check_shape(&self) -> Result<(), String> {
        let header = self.parsed_header().map_err(|e| format!("header: {e}"))?;
        header
            .segment_size
            .plaintext_len(self.size)
            .map_err(|e| format!("size: {e}"))?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::hex;
    use encfs_crypto::DataKey;
    use encfs_crypto::format::{SegmentSize, seal};

    /// An entry of a real sealed blob of `plaintext`.
    pub(crate) fn sample_entry(name: &str, plaintext: &[u8]) -> Entry {
        let key = DataKey::generate().unwrap();
        let blob = seal(&key, plaintext, SegmentSize::MIN).unwrap();
        crate::tags::entry_of_bytes(name, &blob).unwrap()
    }

    pub(crate) fn sample() -> Manifest {
        Manifest::new(
            "data/",
            vec![
                sample_entry("data/b.csv", b"bee"),
                sample_entry("data/a.csv", &[7u8; 10_000]),
            ],
        )
        .unwrap()
    }

    #[test]
    fn borrowed_encoding_is_the_owned_one() {
        let mut entries = sample().entries;
        // A name serde_json escapes: a quote, a control character, a backslash, non-ASCII.
        entries.push(sample_entry("data/q\"\u{1}\\é.csv", b"odd"));
        entries.push(sample_entry("data/\u{7f}\t\n\u{1f} ~.csv", b"odd"));
        check_borrowed_encoding(&Manifest::new("data/", entries.clone()).unwrap());
        // Enough entries for the two-thread encoding, odd so the halves differ.
        let many = (0..PARALLEL_ENTRIES * 2 + 1).map(|i| Entry {
            name: format!("data/{i:05}"),
            ..entries[i % entries.len()].clone()
        });
        check_borrowed_encoding(&Manifest::new("data/", many.collect()).unwrap());
    }

    fn check_borrowed_encoding(manifest: &Manifest) {
        let owned = Wire {
            format: manifest.format,
            store_prefix: manifest.store_prefix.clone(),
            created_at: manifest.created_at,
            entries: manifest
                .entries
                .iter()
                .map(|e| WireEntry {
                    name: e.name.clone(),
                    size: e.size,
                    header: hex(&e.header),
                    tags_sha256: hex(&e.tags_sha256),
                })
                .collect(),
        };
        assert_eq!(manifest.to_payload(), serde_json::to_vec(&owned).unwrap());
        // The length a streamed seal plans with is the encoded one.
        let mut scratch = Vec::new();
        for entry in &manifest.entries {
            let mut one = Vec::new();
            write_entries(&mut one, std::slice::from_ref(entry));
            assert_eq!(
                Entry::encoded_len(&entry.name, entry.size, &mut scratch),
                one.len(),
                "{}",
                entry.name
            );
        }
    }

    #[test]
    fn payload_round_trips_and_is_sorted() {
        let manifest = sample();
        assert_eq!(manifest.entries[0].name, "data/a.csv");
        let payload = manifest.to_payload();
        assert_eq!(Manifest::from_payload(&payload).unwrap(), manifest);
        let text = std::str::from_utf8(&payload).unwrap();
        assert!(text.starts_with("{\"format\":1,\"store_prefix\":\"data/\",\"created_at\":"));
        assert!(manifest.entry("data/b.csv").is_some());
        assert!(manifest.entry("data/c.csv").is_none());
    }

    fn payload_error_of(manifest: &Manifest) -> String {
        // Encoded without the checks, as a forger would.
        let bytes = manifest.to_payload();
        Manifest::from_payload(&bytes).unwrap_err().to_string()
    }

    #[test]
    fn unsorted_or_duplicated_entries_are_refused() {
        let mut manifest = sample();
        manifest.entries.swap(0, 1);
        assert!(payload_error_of(&manifest).contains("not sorted"));
        let mut manifest = sample();
        manifest.entries[1] = manifest.entries[0].clone();
        assert!(payload_error_of(&manifest).contains("listed twice"));
        let err = Manifest::new("", vec![sample_entry("x", b""), sample_entry("x", b"")]);
        assert!(
            err.unwrap_err()
                .to_string()
                .contains("\"x\" is listed twice")
        );
    }

    #[test]
    fn entries_outside_the_prefix_or_of_bad_shape_are_refused() {
        let mut manifest = sample();
        manifest.entries[0].name = "elsewhere/a.csv".into();
        manifest.entries.sort_by(|a, b| a.name.cmp(&b.name));
        assert!(payload_error_of(&manifest).contains("not a blob under the prefix"));
        let mut manifest = sample();
        // Cut inside a segment's overhead: no EBF blob has this length.
        manifest.entries[0].size = HEADER_LEN as u64 + 10;
        assert!(payload_error_of(&manifest).contains("size"));
        let mut manifest = sample();
        manifest.entries[0].header[0] ^= 1;
        assert!(payload_error_of(&manifest).contains("header"));
        let mut manifest = sample();
        manifest
            .entries
            .push(sample_entry("data/.encfs-manifest", b""));
        manifest.entries.sort_by(|a, b| a.name.cmp(&b.name));
        assert!(payload_error_of(&manifest).contains("manifest blob itself"));
        let mut manifest = sample();
        manifest.format = 2;
        assert!(payload_error_of(&manifest).contains("format 2 is not supported"));
    }

    #[test]
    fn non_canonical_payloads_are_refused() {
        let payload = String::from_utf8(sample().to_payload()).unwrap();
        for edited in [
            payload.replacen(",", ", ", 1),
            payload.replacen("\"data/a.csv\"", "\"data\\/a.csv\"", 1),
            format!("{payload}\n"),
        ] {
            let err = Manifest::from_payload(edited.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("canonical"), "{err}");
        }
        let upper = payload.replacen("\"header\":\"656e", "\"header\":\"656E", 1);
        assert!(
            Manifest::from_payload(upper.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("lower-case hex")
        );
        let extra = payload.replacen("{\"format\":1,", "{\"format\":1,\"x\":1,", 1);
        assert!(
            Manifest::from_payload(extra.as_bytes())
                .unwrap_err()
                .to_string()
                .contains("unknown field")
        );
        assert!(
            Manifest::from_payload(b"[]")
                .unwrap_err()
                .to_string()
                .starts_with("manifest payload: not a manifest")
        );
    }
}

//! Sealing while an upload runs: `upload --seal` knows, before it writes anything, every blob
//! name and every sealed length its manifest will list, so the payload's exact length (and with it
//! the COSE framing and the head of the `Sig_structure`) is known up front. A worker thread then
//! encodes each entry as soon as every entry before it (in name order) has arrived, and hashes
//! the bytes as it goes: the SHA-384 the signature needs and the SHA-256 that names the message.
//! When the upload ends, what is left is the last few entries and one ECDSA signature, instead
//! of encoding and hashing tens of megabytes after the last file.
//!
//! The upload's own threads only push each entry into an inbox (what collecting them for the
//! usual path costs): the worker sorts the plan, finds each entry's place and does all the
//! encoding and hashing, at idle priority where the platform allows it, so that it runs in the
//! time an upload's threads spend waiting on the store and does not take a core from them.
//!
//! Anything unexpected (a plan the format refuses, a blob not in the plan, a second entry for
//! one name, a size other than the plan's, a file skipped as unchanged) makes
//! [`StreamingSeal::finish`] hand back every entry it received, for the caller to seal the usual
//! way ([`crate::build_from`], [`crate::Manifest::into_signed`]): the bytes are the same either
//! way (a test checks), only the timing differs.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use aws_lc_rs::digest;
use coset::iana;

use encfs_crypto::format::{HEADER_LEN, TAG_LEN};

use crate::manifest::{Entry, FORMAT, Manifest, write_entry};
use crate::signed::{
    append_signature, cbor_head, message_head, protected_header, sig_structure_frame,
};
use crate::tags::{one_segment_digest, one_segment_tag};
use crate::{Error, ManifestSigner, manifest_blob_name};

/// How often the worker looks for arrived entries (it is not woken per entry: a wake-up for
/// each of 100,000 files cost more than the encoding it saved).
const POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Entries an inbox holds before it grows (an upload's threads that had to grow it would fault
/// in fresh memory, which cost more than the recording), and the worker's buffer (2 MiB).
const INBOX: usize = 4 * 1024;
const ARRIVED: usize = 16 * 1024;

/// Inboxes, one per recording thread up to this many: a single lock, passed from core to core
/// 100,000 times, was most of what recording cost an upload's threads.
const SHARDS: usize = 8;

/// A manifest sealed as the entries of a planned upload arrive (see the module docs).
pub struct StreamingSeal {
    prefix: String,
    shared: Arc<Shared>,
    worker: Mutex<Option<JoinHandle<Worked>>>,
}

impl std::fmt::Debug for StreamingSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamingSeal").finish_non_exhaustive()
    }
}

struct Shared {
    /// Entries received and not yet taken by the worker.
    inboxes: Vec<Inbox>,
    /// No more entries will come.
    finished: Mutex<bool>,
    ready: Condvar,
}

/// One inbox, on a cache line of its own.
#[repr(align(128))]
struct Inbox(Mutex<Vec<Pending>>);

impl Shared {
    fn inbox(&self) -> std::sync::MutexGuard<'_, Vec<Pending>> {
        static THREADS: AtomicUsize = AtomicUsize::new(0);
        thread_local! {
            static SHARD: usize = THREADS.fetch_add(1, Ordering::Relaxed) % SHARDS;
        }
        let shard = SHARD.with(|shard| *shard);
        self.inboxes[shard]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn finished(&self) -> std::sync::MutexGuard<'_, bool> {
        self.finished.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// No more entries will come: the worker is told.
    fn finish(&self) {
        *self.finished() = true;
        self.ready.notify_one();
    }
}

/// One blob's entry as the upload hands it over: a small file's costs it a name and a copy of
/// 92 bytes, its digest and the header's own allocation being left to the worker.
enum Pending {
    Entry(Entry),
    OneSegment {
        name: String,
        size: u64,
        header: [u8; HEADER_LEN],
        tag: [u8; TAG_LEN],
    },
}

impl Pending {
    fn name(&self) -> &str {
        match self {
            Self::Entry(entry) => &entry.name,
            Self::OneSegment { name, .. } => name,
        }
    }

    fn size(&self) -> u64 {
        match self {
            Self::Entry(entry) => entry.size,
            Self::OneSegment { size, .. } => *size,
        }
    }

    fn into_entry(self) -> Entry {
        match self {
            Self::Entry(entry) => entry,
            Self::OneSegment {
                name,
                size,
                header,
                tag,
            } => Entry {
                name,
                size,
                header: header.to_vec(),
                tags_sha256: one_segment_digest(&tag),
            },
        }
    }

    /// Appends the entry as [`write_entries`] does, or `false` for one the format refuses.
    fn encode(&self, out: &mut Vec<u8>) -> bool {
        match self {
            Self::Entry(entry) => {
                let fits = entry.check_shape().is_ok();
                if fits {
                    write_entry(
                        out,
                        &entry.name,
                        entry.size,
                        &entry.header,
                        &entry.tags_sha256,
                    );
                }
                fits
            }
            // Its header parsed and its body is one segment: a shape EBF has.
            Self::OneSegment {
                name,
                size,
                header,
                tag,
            } => {
                write_entry(out, name, *size, header, &one_segment_digest(tag));
                true
            }
        }
    }
}

/// A manifest sealed while its upload ran: the signed message (the bytes
/// [`crate::Manifest::into_signed`] gives for the same entries) and what a caller reports of it.
/// Its entries are not kept: they are in the message.
#[derive(Debug)]
pub struct Streamed {
    /// The COSE_Sign1 message, tagged.
    pub bytes: Vec<u8>,
    /// The prefix its manifest covers.
    pub store_prefix: String,
    /// How many blobs it lists.
    pub entries: usize,
    /// [`crate::SignedManifest::digest`] of the message.
    pub digest: String,
    /// [`crate::SignedManifest::signer_digest`] of the message.
    pub signer_digest: Option<String>,
}

/// What the worker ends with.
enum Worked {
    /// Every planned entry (`entries` of them), encoded into the message up to its signature.
    Whole {
        message: Box<Message>,
        entries: usize,
    },
    /// The plan did not hold: every entry received.
    Diverged(Vec<Entry>),
}

impl StreamingSeal {
    /// Starts sealing the manifest of `prefix` that lists exactly the blobs `planned` (name and
    /// stored length, in any order), signed by `signer`. `None` when the signer cannot stream (it
    /// does not sign SHA-384 digests); a plan the format refuses (a name twice, outside the
    /// prefix, the manifest blob itself) streams nothing and hands the entries back at the end,
    /// for the usual path to report.
    ///
    /// # Errors
    /// [`Error::Signing`] when the protected header cannot be encoded or the thread not started.
    pub fn start(
        prefix: &str,
        planned: Vec<(String, u64)>,
        signer: &dyn ManifestSigner,
    ) -> Result<Option<Self>, Error> {
        let probe = digest::digest(&digest::SHA384, b"");
        if signer.algorithm() != iana::Algorithm::ES384
            || signer.certificate_der().is_none() && signer.attestation_token().is_none()
            || signer.sign_sha384_digest(&probe).is_none()
        {
            return Ok(None);
        }
        let manifest = Manifest {
            format: FORMAT,
            store_prefix: prefix.to_owned(),
            created_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            entries: Vec::new(),
        };
        let protected = protected_header(signer, manifest.created_at)?;
        let shared = Arc::new(Shared {
            inboxes: (0..SHARDS)
                .map(|_| Inbox(Mutex::new(Vec::with_capacity(INBOX))))
                .collect(),
            finished: Mutex::new(false),
            ready: Condvar::new(),
        });
        let worker = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("encfs-seal".into())
                .spawn(move || {
                    lower_priority();
                    work(&shared, manifest, &protected, planned)
                })
                .map_err(|e| Error::Signing(format!("cannot start the sealing thread: {e}")))?
        };
        Ok(Some(Self {
            prefix: prefix.to_owned(),
            shared,
            worker: Mutex::new(Some(worker)),
        }))
    }

    /// Takes the entry of a blob the upload has written.
    pub fn record(&self, entry: Entry) {
        self.shared.inbox().push(Pending::Entry(entry));
    }

    /// Takes the entry of blob `name`, written as the sealed bytes `blob` ([`crate::tags::entry_of_bytes`],
    /// with the work of a small file's entry left to the worker). A blob that is not EBF is not
    /// recorded.
    pub fn record_blob(&self, name: &str, blob: &[u8]) {
        let pending = match one_segment_tag(blob) {
            Some((header, tag)) => Pending::OneSegment {
                name: name.to_owned(),
                size: blob.len() as u64,
                header,
                tag,
            },
            None => match crate::tags::entry_of_bytes(name, blob) {
                Ok(entry) => Pending::Entry(entry),
                Err(_) => return,
            },
        };
        self.shared.inbox().push(pending);
    }

    /// After the upload: the signed message, or (`Ok(Err(entries))`) every entry received, for
    /// the caller to seal the usual way.
    ///
    /// # Errors
    /// [`Error::Signing`] when the signer fails.
    pub fn finish(
        &self,
        signer: &dyn ManifestSigner,
    ) -> Result<Result<Streamed, Vec<Entry>>, Error> {
        self.shared.finish();
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| Error::Signing("the streaming seal was finished twice".into()))?;
        let worked = worker
            .join()
            .map_err(|_| Error::Signing("the sealing thread panicked".into()))?;
        let (message, entries) = match worked {
            Worked::Whole { message, entries } => (message, entries),
            Worked::Diverged(entries) => return Ok(Err(entries)),
        };
        let Message {
            mut bytes,
            sha384,
            mut sha256,
            ..
        } = *message;
        let signature = signer
            .sign_sha384_digest(&sha384.finish())
            .ok_or_else(|| Error::Signing("the signer stopped signing digests".into()))??;
        append_signature(&mut bytes, &signature, &mut sha256);
        Ok(Ok(Streamed {
            bytes,
            store_prefix: self.prefix.clone(),
            entries,
            digest: crate::digest_name(sha256.finish().as_ref()),
            signer_digest: signer.certificate_der().map(crate::sha256_digest),
        }))
    }
}

impl Drop for StreamingSeal {
    /// An upload that failed never finishes its seal: the worker is told to stop.
    fn drop(&mut self) {
        self.shared.finish();
    }
}

/// Runs the calling thread at idle priority (Linux `SCHED_IDLE`): it gets a core only when no
/// other thread wants one. Best effort: elsewhere, or if refused, it runs as before.
#[allow(unsafe_code)]
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `sched_setscheduler` reads the one `sched_param` passed, which lives for the
        // call; pid 0 is the calling thread. A failure leaves the policy unchanged.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &raw const param) };
    }
}

/// Takes every entry that has arrived, waiting up to [`POLL`] for one; `true` once no more
/// will come (and none are left).
fn take_arrived(shared: &Shared, into: &mut Vec<Pending>) -> bool {
    // Read before the inboxes: every entry recorded before the upload finished is in them.
    let done = *shared.finished();
    for inbox in &shared.inboxes {
        into.append(&mut inbox.0.lock().unwrap_or_else(PoisonError::into_inner));
    }
    if into.is_empty() && !done {
        let finished = shared.finished();
        if !*finished {
            drop(shared.ready.wait_timeout(finished, POLL));
        }
        return false;
    }
    done && into.is_empty()
}

/// Collects every entry still to come after the plan failed.
fn diverge(shared: &Shared, mut entries: Vec<Entry>) -> Worked {
    let mut arrived = Vec::new();
    loop {
        let done = take_arrived(shared, &mut arrived);
        entries.extend(arrived.drain(..).map(Pending::into_entry));
        if done {
            return Worked::Diverged(entries);
        }
    }
}

/// The index of `name` in the sorted plan: entries arrive nearly in plan order, so the names
/// around the last one placed (`hint`) are searched first.
fn place(planned: &[(String, u64)], name: &str, hint: &mut usize) -> Option<usize> {
    const NEAR: usize = 64;
    let search = |from: usize, to: usize| {
        planned[from..to]
            .binary_search_by(|(planned, _)| planned.as_str().cmp(name))
            .ok()
            .map(|i| from + i)
    };
    let (from, to) = (hint.saturating_sub(NEAR), (*hint + NEAR).min(planned.len()));
    let near = from < to && planned[from].0.as_str() <= name && name <= planned[to - 1].0.as_str();
    let found = if near {
        search(from, to)
    } else {
        search(0, planned.len())
    }?;
    *hint = found + 1;
    Some(found)
}

/// The message being built: its bytes, where the payload starts, and how far it is hashed.
struct Message {
    bytes: Vec<u8>,
    payload_at: usize,
    hashed: usize,
    sha256: digest::Context,
    sha384: digest::Context,
}

impl Message {
    fn hash(&mut self) {
        self.sha256.update(&self.bytes[self.hashed..]);
        self.sha384.update(&self.bytes[self.hashed..]);
        self.hashed = self.bytes.len();
    }

    /// The `encoded` entries so far, every one complete (the message is abandoned): parsed back
    /// from the payload.
    fn into_entries(mut self, encoded: usize) -> Vec<Entry> {
        if encoded == 0 {
            return Vec::new();
        }
        self.bytes.extend_from_slice(b"]}");
        Manifest::parse_payload(&self.bytes[self.payload_at..])
            .expect("the worker's own encoding parses")
            .entries
    }
}

/// The worker: checks the plan and frames the message for its payload length, then places,
/// encodes and hashes the entries in name order as they arrive. Only the entries that arrive
/// out of order are held; the others are in the message once encoded.
fn work(
    shared: &Shared,
    manifest: Manifest,
    protected: &[u8],
    mut planned: Vec<(String, u64)>,
) -> Worked {
    if !planned.is_sorted_by(|a, b| a.0 <= b.0) {
        planned.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
    let prefix = manifest.store_prefix.as_str();
    let own = manifest_blob_name(prefix);
    let fits = planned.windows(2).all(|w| w[0].0 != w[1].0)
        && planned
            .iter()
            .all(|(name, _)| name.starts_with(prefix) && name.len() > prefix.len() && *name != own);
    if !fits {
        return diverge(shared, Vec::new());
    }
    let mut scratch = Vec::new();
    let mut head = Vec::new();
    manifest.write_payload_head(&mut head);
    let entries_len: usize = planned
        .iter()
        .map(|(name, size)| Entry::encoded_len(name, *size, &mut scratch))
        .sum();
    let payload_len = head.len() + entries_len + planned.len().saturating_sub(1) + 2;
    let payload_head = cbor_head(2, payload_len as u64);
    let mut bytes = message_head(protected, &payload_head);
    let payload_at = bytes.len();
    bytes.reserve_exact(payload_len + 2 + 96);
    bytes.extend_from_slice(&head);
    let mut sha384 = digest::Context::new(&digest::SHA384);
    let (tbs_head, tbs_middle) = sig_structure_frame(protected, &payload_head);
    sha384.update(&tbs_head);
    sha384.update(protected);
    sha384.update(&tbs_middle);
    let mut sha256 = digest::Context::new(&digest::SHA256);
    sha256.update(&bytes[..payload_at]);
    let mut message = Message {
        bytes,
        payload_at,
        hashed: payload_at,
        sha256,
        sha384,
    };

    let mut hint = 0;
    // Arrived ahead of an entry not yet here, by planned index.
    let mut waiting: BTreeMap<usize, Pending> = BTreeMap::new();
    let mut next = 0;
    let mut arrived = Vec::with_capacity(ARRIVED);
    let give_back = |message: Message,
                     next: usize,
                     waiting: BTreeMap<usize, Pending>,
                     rest: &mut dyn Iterator<Item = Pending>| {
        let mut entries = message.into_entries(next);
        entries.extend(waiting.into_values().map(Pending::into_entry));
        entries.extend(rest.map(Pending::into_entry));
        diverge(shared, entries)
    };
    loop {
        let done = take_arrived(shared, &mut arrived);
        let mut drained = arrived.drain(..);
        while let Some(pending) = drained.next() {
            let placed = place(&planned, pending.name(), &mut hint)
                .filter(|&i| i >= next && pending.size() == planned[i].1)
                .filter(|i| !waiting.contains_key(i));
            let Some(i) = placed else {
                // Off the plan: everything received goes back.
                return give_back(
                    message,
                    next,
                    waiting,
                    &mut std::iter::once(pending).chain(drained),
                );
            };
            let mut ready = if i == next {
                Some(pending)
            } else {
                waiting.insert(i, pending);
                None
            };
            while let Some(pending) = ready {
                let mark = message.bytes.len();
                if next > 0 {
                    message.bytes.push(b',');
                }
                if !pending.encode(&mut message.bytes) {
                    message.bytes.truncate(mark);
                    return give_back(
                        message,
                        next,
                        waiting,
                        &mut std::iter::once(pending).chain(drained),
                    );
                }
                next += 1;
                ready = waiting
                    .first_entry()
                    .filter(|first| *first.key() == next)
                    .map(|first| first.remove());
            }
        }
        drop(drained);
        message.hash();
        if done {
            break;
        }
    }
    message.bytes.extend_from_slice(b"]}");
    message.hash();
    if next != planned.len() || message.bytes.len() - payload_at != payload_len {
        message.bytes.truncate(message.bytes.len() - 2);
        let mut entries = message.into_entries(next);
        entries.extend(waiting.into_values().map(Pending::into_entry));
        return Worked::Diverged(entries);
    }
    Worked::Whole {
        message: Box::new(message),
        entries: next,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::sample_entry;
    use crate::signed::tests::member;

    /// The entry of a real sealed blob of `len` bytes.
    fn entry(name: &str, len: usize) -> Entry {
        sample_entry(name, &vec![len as u8; len])
    }

    /// A real sealed blob of `len` bytes and its entry.
    fn blob(name: &str, len: usize) -> (Entry, Vec<u8>) {
        let key = encfs_crypto::DataKey::generate().unwrap();
        let sealed = encfs_crypto::format::seal(
            &key,
            &vec![len as u8; len],
            encfs_crypto::format::SegmentSize::MIN,
        )
        .unwrap();
        (crate::tags::entry_of_bytes(name, &sealed).unwrap(), sealed)
    }

    fn planned(entries: &[Entry]) -> Vec<(String, u64)> {
        entries.iter().map(|e| (e.name.clone(), e.size)).collect()
    }

    /// Finishes `seal`, which must hand back exactly the entries `recorded`.
    fn hands_back(seal: &StreamingSeal, signer: &dyn ManifestSigner, recorded: &[Entry]) {
        let key = |e: &Entry| (e.name.clone(), e.size, e.header.clone(), e.tags_sha256);
        let mut back = seal.finish(signer).unwrap().unwrap_err();
        let mut recorded = recorded.to_vec();
        back.sort_by_key(key);
        recorded.sort_by_key(key);
        assert_eq!(back, recorded);
    }

    #[test]
    fn streamed_bytes_are_the_usual_seals_and_verify() {
        let (signer, _) = member();
        // Sizes of one segment and of several.
        let (entries, blobs): (Vec<Entry>, Vec<Vec<u8>>) = (0..2000u32)
            .map(|i| {
                blob(
                    &format!("p/d{:02}/\"f{i:05}\".csv", i % 7),
                    100 + i as usize * 41 % 9000,
                )
            })
            .unzip();
        let seal = StreamingSeal::start("p/", planned(&entries), &signer)
            .expect("start")
            .expect("streams");
        // Out of order, as an upload's files finish; half as whole entries, half as blobs.
        for (i, e) in entries.iter().enumerate().rev() {
            match i % 2 {
                0 => seal.record(e.clone()),
                _ => seal.record_blob(&e.name, &blobs[i]),
            }
        }
        let streamed = seal.finish(&signer).expect("signs").expect("whole");
        // `verify` refuses any payload but the canonical encoding of its manifest.
        let again =
            crate::SignedManifest::verify(&streamed.bytes, &crate::Trust::EmbeddedCertificate)
                .expect("verifies");
        assert_eq!(streamed.digest, crate::sha256_digest(&streamed.bytes));
        assert_eq!(streamed.digest, again.digest());
        assert_eq!(streamed.signer_digest, again.signer_digest());
        assert_eq!((streamed.entries, &*streamed.store_prefix), (2000, "p/"));
        let mut sorted = entries.clone();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(again.manifest.entries, sorted);
    }

    /// Streams `recorded` against `plan` (pausing between entries, so that those before an odd
    /// one are encoded already), which must hand every entry back.
    fn off_plan(prefix: &str, plan: Vec<(String, u64)>, recorded: &[Entry], pause: bool) {
        let (signer, _) = member();
        let seal = StreamingSeal::start(prefix, plan, &signer)
            .unwrap()
            .unwrap();
        for e in recorded {
            seal.record(e.clone());
            if pause {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
        hands_back(&seal, &signer, recorded);
    }

    #[test]
    fn anything_off_plan_hands_every_entry_back() {
        let (signer, _) = member();
        let entries: Vec<Entry> = (0..10).map(|i| entry(&format!("f{i}"), 2000 + i)).collect();
        // A missing entry (a file skipped as unchanged).
        off_plan("", planned(&entries), &entries[1..], false);
        // A size other than planned, after entries already encoded.
        let mut recorded = entries.clone();
        recorded[4].size += 28;
        off_plan("", planned(&entries), &recorded, true);
        // A header no EBF blob has.
        let mut recorded = entries.clone();
        recorded[6].header[0] ^= 1;
        off_plan("", planned(&entries), &recorded, true);
        // A blob outside the plan, and a second entry for one name.
        let mut recorded = entries.clone();
        recorded.extend([entry("other", 2000), entries[3].clone()]);
        off_plan("", planned(&entries), &recorded, false);
        // A plan the format refuses (a name twice, names outside the prefix).
        let mut twice = planned(&entries);
        twice.push(twice[0].clone());
        off_plan("", twice, &entries, false);
        off_plan("p/", planned(&entries), &entries, false);
        // A seal dropped unfinished (a failed upload) stops its worker.
        let seal = StreamingSeal::start("", planned(&entries), &signer)
            .unwrap()
            .unwrap();
        seal.record(entries[0].clone());
        drop(seal);
    }
}

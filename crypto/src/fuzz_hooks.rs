//! Entry points for `fuzz/`: each feeds arbitrary bytes to one parser and must never panic.

use std::io::{Cursor, Read, Seek, SeekFrom};

use crate::format::{Decryptor, Header, Opener};
use crate::{DataKey, legacy_cse};

/// The fixed key the fuzz targets decrypt with.
const FUZZ_KEY: [u8; 32] = [0x42; 32];

/// Parses an EBF header.
pub fn parse_header(data: &[u8]) {
    if let Ok(header) = Header::parse(data) {
        assert_eq!(Header::parse(&header.to_bytes()).ok(), Some(header));
    }
}

/// Opens arbitrary bytes as a blob, whole and through seeks of the random-access reader; then
/// seals the input as plaintext, applies one edit chosen by the input, and checks that the edit is
/// refused (a valid blob lets the fuzzer reach the segment code behind the header tag).
pub fn open_blob(data: &[u8]) {
    let key = DataKey::from_bytes(FUZZ_KEY);
    if let [position_high, position_low, mask, plaintext @ ..] = data {
        let blob =
            crate::format::seal(&key, plaintext, crate::format::SegmentSize::MIN).expect("seal");
        assert_eq!(
            crate::format::open(&key, &blob).expect("own blob opens"),
            plaintext
        );
        let mut edited = blob.clone();
        let position = usize::from(u16::from_be_bytes([*position_high, *position_low]));
        if *mask == 0 {
            edited.truncate(position % blob.len());
        } else {
            let position = position % blob.len();
            edited[position] ^= mask;
        }
        assert!(
            crate::format::open(&key, &edited).is_err(),
            "an edited blob was accepted"
        );
        assert_eq!(open_packed(&key, &blob).as_deref(), Some(plaintext));
        assert!(
            open_packed(&key, &edited).is_none(),
            "an edited blob was accepted as one packed run"
        );
    }
    let _ = crate::format::open(&key, data);
    let _ = open_packed(&key, data);
    if let Ok(mut decryptor) = Decryptor::new(&key, Cursor::new(data)) {
        let len = decryptor.plaintext_len();
        let mut buf = [0u8; 64];
        for offset in [0, len / 2, len.saturating_sub(1), len + 1] {
            let _ = decryptor
                .seek(SeekFrom::Start(offset))
                .and_then(|_| decryptor.read(&mut buf));
        }
    }
}

/// Opens every segment of `blob` as one packed run (`BlobCipher::open_run_packed`, as the
/// mount's streaming read does): the plaintext of a valid blob, `None` for anything else.
fn open_packed(key: &DataKey, blob: &[u8]) -> Option<Vec<u8>> {
    let opener = Opener::new(key, blob, blob.len() as u64).ok()?;
    let count = opener.segment_count();
    let range = opener.sealed_range(0, count);
    let mut run = blob.get(range.start as usize..range.end as usize)?.to_vec();
    let len = opener
        .cipher()
        .open_run_packed(0, count - 1, &mut run)
        .ok()?;
    run.truncate(len);
    Some(run)
}

/// Parses and opens arbitrary bytes as a legacy CSE blob (64-byte blocks, so small inputs reach
/// the block code).
pub fn open_legacy_cse(data: &[u8]) {
    let key = DataKey::from_bytes(FUZZ_KEY);
    let _ = legacy_cse::open_with_block_size(&key, data, 64);
    if data.len() >= 8 {
        let trailer = data[data.len() - 8..].try_into().expect("8 bytes");
        let _ = legacy_cse::Layout::new(data.len() as u64, trailer);
    }
}

#[cfg(test)]
mod tests {
    /// The fuzz entry points on a few inputs, among them edits of a multi-segment blob (each
    /// must be refused whole and as a packed run).
    #[test]
    fn the_blob_hook_refuses_every_edit_of_a_multi_segment_blob() {
        let plaintext: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        for edit in [[0u8, 0, 0], [0, 30, 1], [0x10, 0, 0x80], [0xff, 0xff, 0]] {
            super::open_blob(&[&edit[..], &plaintext[..]].concat());
        }
        super::open_blob(b"");
        super::open_blob(&[7; 200]);
    }
}

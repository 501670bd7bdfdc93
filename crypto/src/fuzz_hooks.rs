//! Entry points for `fuzz/`: each feeds arbitrary bytes to one parser and must never panic.

use std::io::{Cursor, Read, Seek, SeekFrom};

use crate::format::{Decryptor, Header};
use crate::{DataKey, legacy_cse};

/// The fixed key the fuzz targets decrypt with.
const FUZZ_KEY: [u8; 32] = [0x42; 32];

/// Parses an EBF header.
pub fn parse_header(data: &[u8]) {
    if let Ok(header) = Header::parse(data) {
        assert_eq!(Header::parse(&header.to_bytes()).ok(), Some(header));
    }
}

/// Opens arbitrary bytes as a blob, whole and through seeks of the random-access reader.
pub fn open_blob(data: &[u8]) {
    let key = DataKey::from_bytes(FUZZ_KEY);
    let _ = crate::format::open(&key, data);
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

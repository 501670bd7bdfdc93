//! Known-answer vectors for EBF v1 in `tests/vectors/`: `ok_*.json` must reproduce byte for byte
//! from their fixed key, salt and nonces and open to their plaintext; `fail_*.json` must be refused
//! with the recorded error class. `verify_ebf.py` beside them is an independent reader written from
//! docs/format.md with Python's `cryptography`, run over the same files.
//!
//! Regenerate after a deliberate format change with `ENCFS_WRITE_VECTORS=1 cargo test --test vectors`.

use std::fs;
use std::path::{Path, PathBuf};

use encfs_crypto::format::{self, BlobCipher, HEADER_LEN, SEGMENT_OVERHEAD, SegmentSize};
use encfs_crypto::{DataKey, Error};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct OkVector {
    description: String,
    key: String,
    segment_log2: u8,
    salt: String,
    nonces: Vec<String>,
    plaintext: String,
    blob: String,
}

#[derive(Serialize, Deserialize)]
struct FailVector {
    description: String,
    key: String,
    blob: String,
    error: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn vector_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors")
}

const KEY: [u8; 32] = [0x0f; 32];
const OTHER_KEY: [u8; 32] = [0xf0; 32];

/// Seals deterministically: salt and nonces derived from `seed`.
fn build(key: &[u8; 32], log2: u8, plaintext: &[u8], seed: u8) -> OkVector {
    let size = SegmentSize::from_log2(log2).unwrap();
    let salt = [seed; 32];
    let cipher = BlobCipher::dangerous_create_with_salt(&DataKey::from_bytes(*key), size, salt);
    let mut blob = cipher.header().to_bytes().to_vec();
    let segments = size.segment_count(plaintext.len() as u64) as usize;
    let mut nonces = Vec::new();
    for index in 0..segments {
        let nonce: [u8; 12] = std::array::from_fn(|i| seed ^ (index as u8) ^ (i as u8 * 17));
        let piece = &plaintext[(index * size.bytes()).min(plaintext.len())
            ..((index + 1) * size.bytes()).min(plaintext.len())];
        let mut out = vec![0; piece.len() + SEGMENT_OVERHEAD];
        cipher
            .dangerous_seal_segment_with_nonce(
                index as u64,
                index + 1 == segments,
                nonce,
                piece,
                &mut out,
            )
            .unwrap();
        blob.extend_from_slice(&out);
        nonces.push(hex(&nonce));
    }
    OkVector {
        description: String::new(),
        key: hex(key),
        segment_log2: log2,
        salt: hex(&salt),
        nonces,
        plaintext: hex(plaintext),
        blob: hex(&blob),
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 13 + 7) as u8).collect()
}

type Named<T> = Vec<(&'static str, T)>;

fn all_vectors() -> (Named<OkVector>, Named<FailVector>) {
    let mut ok = Vec::new();
    for (name, description, len, seed) in [
        (
            "ok_empty",
            "empty plaintext: header and one empty final segment",
            0,
            1,
        ),
        ("ok_short", "100 bytes: one final segment", 100, 2),
        (
            "ok_exact_segment",
            "exactly one segment: a full segment then an empty final one",
            4096,
            3,
        ),
        (
            "ok_three_segments",
            "9000 bytes: two full segments and an 808-byte final one",
            9000,
            4,
        ),
    ] {
        let mut vector = build(&KEY, 12, &pattern(len), seed);
        vector.description = description.into();
        ok.push((name, vector));
    }
    let base = unhex(&ok[3].1.blob);
    let sealed = 4096 + SEGMENT_OVERHEAD;
    let seg = |i: usize| HEADER_LEN + i * sealed..(HEADER_LEN + (i + 1) * sealed).min(base.len());
    let edit = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut blob = base.clone();
        f(&mut blob);
        hex(&blob)
    };
    let other = unhex(&build(&KEY, 12, &pattern(9000), 9).blob);
    let foreign = unhex(&build(&OTHER_KEY, 12, &pattern(9000), 4).blob);
    let fail = |description: &str, blob: String, error: &str| FailVector {
        description: description.into(),
        key: hex(&KEY),
        blob,
        error: error.into(),
    };
    let fails = vec![
        (
            "fail_bad_magic",
            fail("first byte changed", edit(&|b| b[0] ^= 1), "not_ebf"),
        ),
        (
            "fail_version",
            fail(
                "version byte set to 2",
                edit(&|b| b[8] = 2),
                "unsupported_version",
            ),
        ),
        (
            "fail_header_salt_flip",
            fail("one salt bit flipped", edit(&|b| b[40] ^= 4), "corrupt"),
        ),
        (
            "fail_header_tag_flip",
            fail(
                "one header-tag bit flipped",
                edit(&|b| b[70] ^= 1),
                "corrupt",
            ),
        ),
        (
            "fail_body_flip",
            fail(
                "one ciphertext bit flipped in segment 1",
                edit(&|b| b[seg(1).start + 500] ^= 1),
                "corrupt",
            ),
        ),
        (
            "fail_tag_flip",
            fail(
                "one tag bit of the final segment flipped",
                edit(&|b| {
                    let n = b.len();
                    b[n - 1] ^= 1
                }),
                "corrupt",
            ),
        ),
        (
            "fail_truncated_boundary",
            fail(
                "cut after segment 1 (a segment boundary)",
                hex(&base[..seg(1).end]),
                "invalid_length",
            ),
        ),
        (
            "fail_truncated_final",
            fail(
                "final segment replaced by an empty final segment's worth of its bytes",
                hex(&base[..seg(1).end + SEGMENT_OVERHEAD]),
                "corrupt",
            ),
        ),
        (
            "fail_appended",
            fail("one byte appended", edit(&|b| b.push(0)), "corrupt"),
        ),
        (
            "fail_swapped",
            fail(
                "segments 0 and 1 swapped",
                edit(&|b| {
                    let (a, c) = (base[seg(0)].to_vec(), base[seg(1)].to_vec());
                    b[seg(0)].copy_from_slice(&c);
                    b[seg(1)].copy_from_slice(&a)
                }),
                "corrupt",
            ),
        ),
        (
            "fail_duplicated",
            fail(
                "segment 0 copied over segment 1",
                edit(&|b| b[seg(1)].copy_from_slice(&base[seg(0)])),
                "corrupt",
            ),
        ),
        (
            "fail_spliced_segment",
            fail(
                "segment 1 from another blob under the same key",
                edit(&|b| b[seg(1)].copy_from_slice(&other[seg(1)])),
                "corrupt",
            ),
        ),
        (
            "fail_spliced_header",
            fail(
                "header from another blob under the same key",
                edit(&|b| b[..HEADER_LEN].copy_from_slice(&other[..HEADER_LEN])),
                "corrupt",
            ),
        ),
        (
            "fail_other_key",
            fail(
                "sealed under a different key",
                hex(&foreign),
                "key_mismatch",
            ),
        ),
    ];
    (ok, fails)
}

fn classify(result: Result<Vec<u8>, Error>) -> String {
    match result {
        Ok(_) => "accepted".into(),
        Err(Error::NotEbf) => "not_ebf".into(),
        Err(Error::UnsupportedVersion(_)) => "unsupported_version".into(),
        Err(Error::KeyMismatch { .. }) => "key_mismatch".into(),
        Err(Error::Corrupt { .. }) => "corrupt".into(),
        Err(Error::InvalidLength(_)) => "invalid_length".into(),
        Err(other) => format!("other: {other}"),
    }
}

#[test]
fn vectors_match_the_committed_files() {
    let (ok, fails) = all_vectors();
    let dir = vector_dir();
    if std::env::var_os("ENCFS_WRITE_VECTORS").is_some() {
        for (name, vector) in &ok {
            fs::write(
                dir.join(format!("{name}.json")),
                serde_json::to_string_pretty(vector).unwrap() + "\n",
            )
            .unwrap();
        }
        for (name, vector) in &fails {
            fs::write(
                dir.join(format!("{name}.json")),
                serde_json::to_string_pretty(vector).unwrap() + "\n",
            )
            .unwrap();
        }
    }
    for (name, vector) in &ok {
        let file: OkVector =
            serde_json::from_str(&fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
                .unwrap();
        assert_eq!(
            file.blob, vector.blob,
            "{name}: sealing no longer reproduces the committed vector"
        );
    }
    for (name, vector) in &fails {
        let file: FailVector =
            serde_json::from_str(&fs::read_to_string(dir.join(format!("{name}.json"))).unwrap())
                .unwrap();
        assert_eq!(file.blob, vector.blob, "{name}");
    }
}

#[test]
fn committed_vectors_open_or_fail_as_recorded() {
    let mut seen = (0, 0);
    for entry in fs::read_dir(vector_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).unwrap();
        if name.starts_with("ok_") {
            let vector: OkVector = serde_json::from_str(&text).unwrap();
            let key = DataKey::from_slice(&unhex(&vector.key)).unwrap();
            assert_eq!(
                format::open(&key, &unhex(&vector.blob)).unwrap(),
                unhex(&vector.plaintext),
                "{name}"
            );
            seen.0 += 1;
        } else if name.starts_with("fail_") {
            let vector: FailVector = serde_json::from_str(&text).unwrap();
            let key = DataKey::from_slice(&unhex(&vector.key)).unwrap();
            assert_eq!(
                classify(format::open(&key, &unhex(&vector.blob))),
                vector.error,
                "{name}"
            );
            seen.1 += 1;
        }
    }
    assert!(seen.0 >= 4 && seen.1 >= 14, "vectors missing: {seen:?}");
}

#[test]
fn independent_python_reader_agrees() {
    let script = vector_dir().join("verify_ebf.py");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .arg(vector_dir())
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "verify_ebf.py failed (needs `pip install cryptography`):\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

//! One test per tamper class the EBF format must detect (see docs/format.md, "Threats").

use encfs_crypto::format::{self, BlobCipher, HEADER_LEN, Opener, SEGMENT_OVERHEAD, SegmentSize};
use encfs_crypto::{DataKey, Error};

const SEGMENT: SegmentSize = SegmentSize::MIN;
const SEALED: usize = 4096 + SEGMENT_OVERHEAD;

fn plaintext(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 256) as u8).collect()
}

fn sample() -> (DataKey, Vec<u8>, Vec<u8>) {
    let key = DataKey::from_bytes([0x11; 32]);
    let plain = plaintext(3 * 4096 + 100);
    let blob = format::seal(&key, &plain, SEGMENT).unwrap();
    (key, plain, blob)
}

fn segment(blob: &[u8], index: usize) -> std::ops::Range<usize> {
    let start = HEADER_LEN + index * SEALED;
    start..(start + SEALED).min(blob.len())
}

#[test]
fn every_flipped_bit_position_is_refused() {
    let (key, _, blob) = sample();
    for position in 0..blob.len() {
        let mut bad = blob.clone();
        bad[position] ^= 1 << (position % 8);
        assert!(
            format::open(&key, &bad).is_err(),
            "flip at byte {position} accepted"
        );
    }
}

#[test]
fn truncation_at_every_length_is_refused() {
    let (key, _, blob) = sample();
    for len in 0..blob.len() {
        assert!(
            format::open(&key, &blob[..len]).is_err(),
            "truncation to {len} accepted"
        );
    }
    // Exactly at a segment boundary: the blob then ends with a non-final segment.
    let boundary = segment(&blob, 2).end;
    assert!(matches!(
        format::open(&key, &blob[..boundary]),
        Err(Error::InvalidLength(_) | Error::Corrupt { .. })
    ));
}

#[test]
fn truncation_of_an_empty_final_segment_is_refused() {
    let key = DataKey::generate().unwrap();
    let blob = format::seal(&key, &plaintext(2 * 4096), SEGMENT).unwrap();
    assert_eq!(blob.len(), HEADER_LEN + 2 * SEALED + SEGMENT_OVERHEAD);
    let cut = &blob[..HEADER_LEN + 2 * SEALED];
    assert!(format::open(&key, cut).is_err());
}

#[test]
fn appended_bytes_are_refused() {
    let (key, _, blob) = sample();
    for extra in [1usize, 27, 28, 29, 100, SEALED, SEALED + 28] {
        let mut bad = blob.clone();
        bad.extend(std::iter::repeat_n(0u8, extra));
        assert!(
            format::open(&key, &bad).is_err(),
            "{extra} appended bytes accepted"
        );
    }
    // Appending a genuine segment of the same blob is refused too.
    let mut bad = blob.clone();
    bad.extend_from_slice(&blob[segment(&blob, 1)]);
    assert!(format::open(&key, &bad).is_err());
}

#[test]
fn reordered_segments_are_refused() {
    let (key, _, blob) = sample();
    let mut bad = blob.clone();
    let (a, b) = (segment(&blob, 0), segment(&blob, 1));
    bad[a.clone()].copy_from_slice(&blob[b.clone()]);
    bad[b].copy_from_slice(&blob[a]);
    assert!(matches!(
        format::open(&key, &bad),
        Err(Error::Corrupt {
            segment: Some(0) | Some(1)
        })
    ));
}

#[test]
fn duplicated_segments_are_refused() {
    let (key, _, blob) = sample();
    let mut bad = blob.clone();
    bad[segment(&blob, 2)].copy_from_slice(&blob[segment(&blob, 1)]);
    assert!(matches!(
        format::open(&key, &bad),
        Err(Error::Corrupt { segment: Some(2) })
    ));
}

#[test]
fn segments_and_headers_from_another_blob_are_refused() {
    let (key, plain, blob) = sample();
    let other = format::seal(&key, &plain, SEGMENT).unwrap();
    assert_ne!(blob, other, "fresh salt and nonces per blob");
    let mut spliced = blob.clone();
    spliced[segment(&blob, 1)].copy_from_slice(&other[segment(&other, 1)]);
    assert!(matches!(
        format::open(&key, &spliced),
        Err(Error::Corrupt { segment: Some(1) })
    ));
    let mut header_swapped = blob.clone();
    header_swapped[..HEADER_LEN].copy_from_slice(&other[..HEADER_LEN]);
    assert!(matches!(
        format::open(&key, &header_swapped),
        Err(Error::Corrupt { segment: Some(0) })
    ));
}

#[test]
fn a_different_key_is_reported_as_key_mismatch() {
    let (key, _, blob) = sample();
    let other = DataKey::from_bytes([0x22; 32]);
    match format::open(&other, &blob) {
        Err(Error::KeyMismatch { expected, found }) => {
            assert_eq!(expected, other.id());
            assert_eq!(found, key.id());
        }
        other => panic!("expected KeyMismatch, got {other:?}"),
    }
}

#[test]
fn empty_plaintext_is_a_valid_blob() {
    let key = DataKey::generate().unwrap();
    let blob = format::seal(&key, b"", SegmentSize::DEFAULT).unwrap();
    assert_eq!(blob.len(), HEADER_LEN + SEGMENT_OVERHEAD);
    assert_eq!(format::open(&key, &blob).unwrap(), b"");
    assert!(format::open(&key, &blob[..HEADER_LEN]).is_err());
}

#[test]
fn one_segment_can_be_resealed_in_place_with_a_fresh_nonce() {
    let (key, mut plain, mut blob) = sample();
    let cipher = BlobCipher::open(&key, &blob).unwrap();
    let range = segment(&blob, 1);
    let old_nonce = blob[range.start..range.start + 12].to_vec();
    plain[4096..8192].fill(0xee);
    cipher
        .seal_segment(1, false, &plain[4096..8192], &mut blob[range.clone()])
        .unwrap();
    assert_ne!(blob[range.start..range.start + 12], old_nonce[..]);
    assert_eq!(format::open(&key, &blob).unwrap(), plain);
    // Random access to the rewritten segment verifies without touching the others.
    let opener = Opener::new(&key, &blob, blob.len() as u64).unwrap();
    let mut out = vec![0; 4096];
    opener.open_segments(1, &blob[range], &mut out).unwrap();
    assert_eq!(out, plain[4096..8192]);
}

#[test]
fn a_tampered_segment_leaves_the_rest_readable() {
    let (key, plain, mut blob) = sample();
    let range = segment(&blob, 1);
    blob[range.start + 50] ^= 0x80;
    let opener = Opener::new(&key, &blob, blob.len() as u64).unwrap();
    let mut out = vec![0; 4096];
    assert!(opener.open_segments(1, &blob[range], &mut out).is_err());
    let first = segment(&blob, 0);
    opener.open_segments(0, &blob[first], &mut out).unwrap();
    assert_eq!(out, plain[..4096]);
}

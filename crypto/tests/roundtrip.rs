//! Property tests: round trips at every size around segment boundaries, and random-offset reads
//! through the seekable decryptor, against the plaintext as the reference model.

use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use encfs_crypto::DataKey;
use encfs_crypto::format::{self, Decryptor, Encryptor, SegmentSize};
use proptest::prelude::*;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn size_near_boundary() -> impl Strategy<Value = (u8, usize)> {
    (12u8..=14, 0usize..5, -2i64..=2).prop_map(|(log2, segments, delta)| {
        let len = ((segments << log2) as i64 + delta).max(0) as usize;
        (log2, len)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn seal_open_round_trip((log2, len) in size_near_boundary(), seed in any::<u8>()) {
        let key = DataKey::from_bytes([seed; 32]);
        let size = SegmentSize::from_log2(log2).unwrap();
        let plain = data(len, seed);
        let blob = format::seal(&key, &plain, size).unwrap();
        prop_assert_eq!(blob.len() as u64, size.blob_len(len as u64));
        prop_assert_eq!(format::open(&key, &blob).unwrap(), plain);
    }

    #[test]
    fn streaming_equals_one_shot((log2, len) in size_near_boundary(), chunk in 1usize..10_000, batch in 1usize..40_000) {
        let key = DataKey::generate().unwrap();
        let size = SegmentSize::from_log2(log2).unwrap();
        let plain = data(len, 3);
        let mut encryptor = Encryptor::with_batch(&key, size, batch, Vec::new()).unwrap();
        for piece in plain.chunks(chunk) {
            encryptor.write_all(piece).unwrap();
        }
        let blob = encryptor.finish().unwrap();
        prop_assert_eq!(blob.len() as u64, size.blob_len(len as u64));
        prop_assert_eq!(format::open(&key, &blob).unwrap(), plain);
    }

    #[test]
    fn random_offset_reads(len in 0usize..40_000, reads in prop::collection::vec((any::<prop::sample::Index>(), 0usize..9000), 1..12), batch in 1u64..4) {
        let key = DataKey::generate().unwrap();
        let plain = data(len, 9);
        let blob = format::seal(&key, &plain, SegmentSize::MIN).unwrap();
        let mut decryptor = Decryptor::new(&key, Cursor::new(&blob)).unwrap();
        decryptor.set_batch_segments(batch);
        prop_assert_eq!(decryptor.plaintext_len(), len as u64);
        for (offset, want) in reads {
            let offset = offset.index(len + 2);
            decryptor.seek(SeekFrom::Start(offset as u64)).unwrap();
            let mut buf = vec![0u8; want];
            let mut got = 0;
            while got < want {
                let n = decryptor.read(&mut buf[got..]).unwrap();
                if n == 0 { break; }
                got += n;
            }
            let expected = plain.get(offset.min(len)..(offset + want).min(len)).unwrap_or(&[]);
            prop_assert_eq!(&buf[..got], expected);
        }
    }
}

//! `aead-probe`: in-memory throughput of the raw AEADs and of the EBF format layer, for the
//! comparison scripts (benches/crypto_vs_peers.sh). Prints one `name bytes_per_second` line per
//! measurement; each is the median of several timed rounds over a 64 MiB buffer.

use std::time::{Duration, Instant};

use encfs_crypto::DataKey;
use encfs_crypto::format::{self, Opener, Sealer, SegmentSize};

const BUFFER: usize = 64 << 20;
const CHUNK: usize = 64 << 10;
const ROUNDS: usize = 7;

fn median_rate(bytes: usize, work: impl FnMut()) -> f64 {
    median_rate_after(bytes, || {}, work)
}

/// As [`median_rate`], running an untimed `setup` before each round.
fn median_rate_after(bytes: usize, mut setup: impl FnMut(), mut work: impl FnMut()) -> f64 {
    setup();
    work();
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
            setup();
            let start = Instant::now();
            work();
            start.elapsed()
        })
        .collect();
    times.sort();
    bytes as f64 / times[ROUNDS / 2].as_secs_f64()
}

fn ring_seal(buffer: &mut [u8]) {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).unwrap());
    for (i, chunk) in buffer.chunks_mut(CHUNK).enumerate() {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), chunk)
            .unwrap();
        let _ = std::hint::black_box(tag);
    }
}

fn aws_lc_seal(buffer: &mut [u8]) {
    use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).unwrap());
    for (i, chunk) in buffer.chunks_mut(CHUNK).enumerate() {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&(i as u64).to_be_bytes());
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), chunk)
            .unwrap();
        let _ = std::hint::black_box(tag);
    }
}

/// The CLI's hot path: plaintext already in the sealed layout, sealed where it lies.
fn ebf_seal_in_place(key: &DataKey, sealed: &mut Vec<u8>) {
    let mut sealer = Sealer::new(key, SegmentSize::DEFAULT).unwrap();
    sealed.resize(sealer.sealed_len(BUFFER), 0);
    sealer.seal_segments_in_place(sealed).unwrap();
}

/// The CLI's decrypt hot path: a whole blob opened in place.
fn ebf_open_in_place(key: &DataKey, blob: &mut [u8]) {
    let opener = Opener::new(key, blob, blob.len() as u64).unwrap();
    opener
        .open_segments_in_place(0, &mut blob[format::HEADER_LEN..])
        .unwrap();
}

fn main() {
    let mut buffer = vec![0x5au8; BUFFER];
    println!(
        "ring_aes256gcm_64k_1core {:.0}",
        median_rate(BUFFER, || ring_seal(&mut buffer))
    );
    println!(
        "awslc_aes256gcm_64k_1core {:.0}",
        median_rate(BUFFER, || aws_lc_seal(&mut buffer))
    );
    let key = DataKey::from_bytes([9; 32]);
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let all = rayon::ThreadPoolBuilder::new().build().unwrap();
    let blob = format::seal(&key, &buffer, SegmentSize::DEFAULT).unwrap();
    let mut body = blob.clone();
    for (label, pool) in [("1thread", &one), ("allthreads", &all)] {
        let seal = pool.install(|| median_rate(BUFFER, || ebf_seal_in_place(&key, &mut buffer)));
        println!("ebf_seal_64k_{label} {seal:.0}");
        let open = pool.install(|| {
            let body = std::cell::RefCell::new(&mut body);
            median_rate_after(
                BUFFER,
                || body.borrow_mut().copy_from_slice(&blob),
                || ebf_open_in_place(&key, &mut body.borrow_mut()),
            )
        });
        println!("ebf_open_64k_{label} {open:.0}");
    }
    // Decrypt cost of one random 4 KiB read at each segment size: one whole segment is opened.
    for log2 in [12u8, 16, 20, 24] {
        let size = SegmentSize::from_log2(log2).unwrap();
        let cipher = encfs_crypto::format::BlobCipher::create(&key, size).unwrap();
        let mut sealed = vec![0u8; size.sealed_bytes()];
        cipher
            .seal_segment(3, false, &buffer[..size.bytes()], &mut sealed)
            .unwrap();
        let mut out = vec![0u8; size.bytes()];
        let per_second = one.install(|| {
            median_rate(100, || {
                for _ in 0..100 {
                    std::hint::black_box(cipher.open_segment(3, false, &sealed, &mut out).unwrap());
                }
            })
        });
        println!(
            "random_4k_read_decrypt_us_{}k {:.3}",
            size.bytes() >> 10,
            1e6 / per_second
        );
    }
    println!("threads {}", all.current_num_threads());
}

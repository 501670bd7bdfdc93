//! `aead-probe`: in-memory throughput of the raw AEADs and of the EBF format layer, for the
//! comparison scripts (benches/crypto_vs_peers.sh). Prints one `name bytes_per_second` line per
//! measurement; each is the median of several timed rounds over a 64 MiB buffer.

use std::time::{Duration, Instant};

use encfs_crypto::DataKey;
use encfs_crypto::format::{self, SegmentSize};

const BUFFER: usize = 64 << 20;
const CHUNK: usize = 64 << 10;
const ROUNDS: usize = 7;

fn median_rate(bytes: usize, mut work: impl FnMut()) -> f64 {
    work();
    let mut times: Vec<Duration> = (0..ROUNDS)
        .map(|_| {
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

fn main() {
    if std::env::var_os("EXPERIMENT").is_some() {
        experiment();
        return;
    }
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
    let blob = format::seal(&key, &buffer, SegmentSize::DEFAULT).unwrap();
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    one.install(|| {
        println!(
            "ebf_seal_64k_1thread {:.0}",
            median_rate(BUFFER, || drop(
                format::seal(&key, &buffer, SegmentSize::DEFAULT).unwrap()
            ))
        );
        println!(
            "ebf_open_64k_1thread {:.0}",
            median_rate(BUFFER, || drop(format::open(&key, &blob).unwrap()))
        );
    });
    println!(
        "ebf_seal_64k_allthreads {:.0}",
        median_rate(BUFFER, || drop(
            format::seal(&key, &buffer, SegmentSize::DEFAULT).unwrap()
        ))
    );
    println!(
        "ebf_open_64k_allthreads {:.0}",
        median_rate(BUFFER, || drop(format::open(&key, &blob).unwrap()))
    );
    println!("threads {}", rayon::current_num_threads());
}

#[allow(dead_code)]
pub fn experiment() {
    use encfs_crypto::format::Sealer;
    let key = DataKey::from_bytes([9; 32]);
    let plain = vec![1u8; BUFFER];
    let mut sealer = Sealer::new(&key, SegmentSize::DEFAULT).unwrap();
    let mut out = vec![0u8; sealer.sealed_len(BUFFER)];
    let one = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    one.install(|| {
        println!(
            "prealloc_seal_1thread {:.0}",
            median_rate(BUFFER, || sealer.seal_segments(&plain, &mut out).unwrap())
        )
    });
    let mut nonce = [0u8; 12];
    let n = 100_000;
    let start = Instant::now();
    for _ in 0..n {
        aws_lc_rs::rand::fill(&mut nonce).unwrap();
    }
    println!(
        "awslc rand per call ns {:.0}",
        start.elapsed().as_nanos() as f64 / n as f64
    );
    let rng = ring::rand::SystemRandom::new();
    let start = Instant::now();
    for _ in 0..n {
        ring::rand::SecureRandom::fill(&rng, &mut nonce).unwrap();
    }
    println!(
        "ring rand per call ns {:.0}",
        start.elapsed().as_nanos() as f64 / n as f64
    );
}

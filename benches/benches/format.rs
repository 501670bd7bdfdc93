//! criterion benchmarks of the EBF primitives: one segment sealed and opened at 4 KiB, 64 KiB and
//! 1 MiB, and a 16 MiB buffer sealed and opened on all cores at each segment size.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use encfs_crypto::DataKey;
use encfs_crypto::format::{self, BlobCipher, SEGMENT_OVERHEAD, SegmentSize};

const SIZES: [u64; 3] = [4 << 10, 64 << 10, 1 << 20];

fn segments(c: &mut Criterion) {
    let key = DataKey::from_bytes([1; 32]);
    let mut group = c.benchmark_group("segment");
    for size in SIZES {
        let segment = SegmentSize::new(size).unwrap();
        let cipher = BlobCipher::create(&key, segment).unwrap();
        let plain = vec![0xa5u8; size as usize];
        let mut sealed = vec![0u8; size as usize + SEGMENT_OVERHEAD];
        let mut opened = vec![0u8; size as usize];
        group.throughput(Throughput::Bytes(size));
        group.bench_with_input(BenchmarkId::new("seal", size), &size, |b, _| {
            b.iter(|| cipher.seal_segment(1, false, &plain, &mut sealed).unwrap())
        });
        cipher.seal_segment(1, false, &plain, &mut sealed).unwrap();
        group.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
            b.iter(|| cipher.open_segment(1, false, &sealed, &mut opened).unwrap())
        });
    }
    group.finish();
}

fn bulk(c: &mut Criterion) {
    let key = DataKey::from_bytes([2; 32]);
    let plain = vec![0x3cu8; 16 << 20];
    let mut group = c.benchmark_group("bulk_16MiB");
    group
        .throughput(Throughput::Bytes(plain.len() as u64))
        .sample_size(10);
    for size in SIZES {
        let segment = SegmentSize::new(size).unwrap();
        let blob = format::seal(&key, &plain, segment).unwrap();
        group.bench_with_input(BenchmarkId::new("seal", size), &size, |b, _| {
            b.iter(|| format::seal(&key, &plain, segment).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("open", size), &size, |b, _| {
            b.iter(|| format::open(&key, &blob).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, segments, bulk);
criterion_main!(benches);

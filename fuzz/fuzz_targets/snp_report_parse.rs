//! Fuzzes the SEV-SNP report parser (`encfs_attestation::snp`): any bytes give a typed error or a
//! report that writes back as the same bytes, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    encfs_attestation::snp::fuzz_parse(data);
});

//! Fuzz target: `encfs_crypto::fuzz_hooks::open_blob` must never panic on any input.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    encfs_crypto::fuzz_hooks::open_blob(data);
});

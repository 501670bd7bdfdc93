//! Fuzzes the JWS/JWT decoding the key vault applies to untrusted tokens: the compact-JWS
//! splitter (`encfs_keyvault::release::decode_jws_unverified`), jsonwebtoken's header decoder,
//! and the signature check of a release JWS (`verify_release_jws`). Errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = encfs_keyvault::release::decode_jws_unverified(text);
        let _ = jsonwebtoken::decode_header(text);
        let _ = encfs_keyvault::release::verify_release_jws(text);
    }
});

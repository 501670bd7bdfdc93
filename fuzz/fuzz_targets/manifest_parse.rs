//! Fuzzes the dataset manifest parser (`encfs_dataset::SignedManifest::parse`, the COSE_Sign1
//! envelope and its canonical JSON payload) and the signature check after it: a manifest read
//! from a store anyone may have written must give an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(signed) = encfs_dataset::SignedManifest::parse(data) {
        // What parses re-encodes to the same payload, and the signature check must not panic.
        let payload = signed.manifest.to_payload();
        assert!(encfs_dataset::Manifest::from_payload(&payload).is_ok());
        let _ =
            encfs_dataset::SignedManifest::verify(data, &encfs_dataset::Trust::EmbeddedCertificate);
    }
    let _ = encfs_dataset::Manifest::from_payload(data);
});

//! Fuzzes the governance COSE_Sign1 decoder (`encfs_governance::cose::parse`) and the signature
//! check that follows it: untrusted HTTP bodies must give an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    encfs_governance::cose::fuzz_parse_and_verify(data);
});

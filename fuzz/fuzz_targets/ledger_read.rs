//! Fuzzes the ledger reader (`encfs_governance::ledger::fuzz_scan`, which also reads the bytes as
//! one stored write set, plain or sealed by the ledger secret): any file contents must give
//! a ledger, a torn tail or an error naming the offset, never a panic or a huge allocation.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    encfs_governance::ledger::fuzz_scan(data);
});

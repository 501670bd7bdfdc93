//! Fuzzes the secure key release policy parser (`encfs_keyvault::policy::ReleasePolicy::parse`)
//! and the evaluation of what it accepts: a policy imported with a key is untrusted input and
//! must give an error, never a panic (deep nesting included).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(policy) = encfs_keyvault::policy::ReleasePolicy::parse(data) {
        let claims = serde_json::json!({
            "iss": "https://authority", "x-ms-sevsnpvm-hostdata": "aa", "n": 3,
            "nested": {"claim": true}
        });
        let _ = policy.evaluate("https://authority", &claims);
    }
});

//! The clean room: the specification the parties agree on (`spec`), the deployment generated from
//! it with its security policy (`deployment`, `policy`), the sandbox the untrusted application runs
//! in (`sandbox`, bound to the launcher by `sandbox_runner`) and the code launcher API that starts
//! it after the consent checks (`launcher`).

pub mod deployment;
pub mod launcher;
pub mod otel;
pub mod policy;
pub mod sandbox;
pub mod sandbox_runner;
pub mod spec;

//! The clean room: the specification the parties agree on (`spec`), the deployment generated from
//! it with its security policy (`deployment`, `policy`), the sandbox the untrusted application runs
//! in (`sandbox`) and the code launcher API that starts it after the consent checks (`launcher`).

pub mod sandbox;
pub mod spec;

//! The `encfs` binary: parses arguments and hands off to [`encfs_cli::run`].

/// mimalloc keeps freed multi-MiB transfer buffers for reuse; glibc returns them to the kernel and
/// pays page faults to get them back, which measured as most of the system time of large uploads
/// (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    encfs_cli::run()
}

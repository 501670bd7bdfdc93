//! The `encfs` binary: parses arguments and hands off to [`encfs_cli::run`].

fn main() -> std::process::ExitCode {
    encfs_cli::run()
}

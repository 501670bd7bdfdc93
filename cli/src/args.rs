//! Command-line grammar (clap derive). Verb names follow the reference system where it has them.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// encfs: keys, key wrapping and authenticated encrypted blobs for confidential data collaboration.
#[derive(Parser, Debug)]
#[command(name = "encfs", version, propagate_version = true)]
pub struct Cli {
    /// Worker threads for encryption and decryption (default: all cores).
    #[arg(long, global = true, value_name = "N")]
    pub threads: Option<usize>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Data encryption keys (DEKs): generate, wrap, unwrap, show id.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Key-encryption keys (RSA KEKs).
    #[command(subcommand)]
    Kek(KekCommand),
    /// Encrypt a file into an EBF v1 blob.
    Encrypt(EncryptArgs),
    /// Decrypt an EBF v1 blob; nothing is written unless every segment verifies.
    Decrypt(DecryptArgs),
    /// Show an EBF blob's header and plaintext length (no key needed).
    Inspect(InspectArgs),
    /// Convert a blob in another format to EBF v1.
    Convert(ConvertArgs),
}

#[derive(Subcommand, Debug)]
pub enum KeyCommand {
    /// Generate a new 256-bit DEK into a new file (mode 0600).
    Generate {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Write the raw 32 bytes (the reference system's `.bin` form) instead of the text form.
        #[arg(long)]
        raw: bool,
    },
    /// Wrap a DEK with an RSA public KEK (RSA-OAEP, SHA-256, MGF1-SHA-256).
    Wrap {
        /// PEM public key (`BEGIN PUBLIC KEY`).
        #[arg(long, value_name = "FILE")]
        kek_public: PathBuf,
        /// The DEK to wrap (text or raw 32-byte file).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Where to write the wrapped key (raw RSA ciphertext, as `openssl pkeyutl` writes).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Unwrap a wrapped DEK with the RSA private KEK.
    Unwrap {
        /// PEM PKCS#8 private key (`BEGIN PRIVATE KEY`).
        #[arg(long, value_name = "FILE")]
        kek_private: PathBuf,
        /// The wrapped key.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the DEK (mode 0600, never overwritten).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Write the raw 32 bytes instead of the text form.
        #[arg(long)]
        raw: bool,
    },
    /// Print a DEK's key id (the id stored in every blob it seals).
    Id {
        /// The DEK.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
pub enum KekCommand {
    /// Generate an RSA key pair: PKCS#8 private key (mode 0600) and public key, both PEM.
    Generate {
        /// Private key output.
        #[arg(long, value_name = "FILE")]
        out_private: PathBuf,
        /// Public key output.
        #[arg(long, value_name = "FILE")]
        out_public: PathBuf,
        /// Modulus size: 3072 (default), 4096, or 2048 for the reference system.
        #[arg(long, default_value_t = 3072)]
        bits: usize,
    },
}

#[derive(Args, Debug)]
pub struct Durability {
    /// Skip the fsync before the output is renamed into place (faster, not crash-safe).
    #[arg(long)]
    pub no_fsync: bool,
}

#[derive(Args, Debug)]
pub struct SegmentArg {
    /// Plaintext bytes per segment of the output: a power of two from 4KiB to 16MiB.
    #[arg(long, default_value = "64KiB", value_parser = crate::size::parse_size)]
    pub segment_size: u64,
}

#[derive(Args, Debug)]
pub struct EncryptArgs {
    /// The DEK (text or raw 32-byte file).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Plaintext input.
    pub input: PathBuf,
    /// Encrypted output (written to a temporary name, renamed when complete).
    pub output: PathBuf,
    #[command(flatten)]
    pub segments: SegmentArg,
    #[command(flatten)]
    pub durability: Durability,
}

#[derive(Args, Debug)]
pub struct DecryptArgs {
    /// The DEK.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// EBF blob.
    pub input: PathBuf,
    /// Plaintext output (written to a temporary name, renamed only after every segment verified).
    pub output: PathBuf,
    #[command(flatten)]
    pub durability: Durability,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object.
    Json,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The blob to inspect.
    pub file: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceFormat {
    /// The reference clean-room system's client-side encryption format (16 MiB blocks).
    CleanroomCse,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// The source format.
    #[arg(long, value_enum)]
    pub from: SourceFormat,
    /// The DEK (the reference system's raw `.bin` files work as they are).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Source blob.
    pub input: PathBuf,
    /// EBF output.
    pub output: PathBuf,
    #[command(flatten)]
    pub segments: SegmentArg,
    #[command(flatten)]
    pub durability: Durability,
}

//! `encfs encrypt`, `decrypt`, `inspect` and `convert`: whole files through the EBF format.
//!
//! Regular files go through the three-stage [`crate::pipeline`] in batches of whole segments, so
//! reading, sealing on all cores and writing overlap; anything else (a pipe) is streamed through
//! [`Encryptor`]. Outputs are [`AtomicOutput`]s: they appear only once complete.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use encfs_crypto::format::{
    Encryptor, HEADER_LEN, Header, Opener, SEGMENT_OVERHEAD, Sealer, SegmentSize, plaintext_slots,
    plaintext_slots_mut,
};
use encfs_crypto::legacy_cse::{self, LegacyCipher};
use encfs_crypto::{DataKey, Error};

use super::keys::load_data_key;
use crate::args::{ConvertArgs, DecryptArgs, EncryptArgs, InspectArgs};
use crate::output::{AtomicOutput, open_input, progress_bar};
use crate::pipeline;
use crate::size::format_size;

/// Plaintext per pipeline batch: large enough to keep every core busy on 64 KiB segments.
const BATCH_BYTES: usize = 8 << 20;

fn segment_size(bytes: u64) -> Result<SegmentSize> {
    SegmentSize::new(bytes).map_err(|e| anyhow!("--segment-size: {e}"))
}

fn batch_bytes(segment: SegmentSize) -> usize {
    BATCH_BYTES.max(segment.bytes()) / segment.bytes() * segment.bytes()
}

/// Reads exactly `buf.len()` bytes, naming the file and calling an early end a change of size.
fn read_exact_named(file: &mut File, buf: &mut [u8], path: &Path) -> Result<()> {
    file.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => anyhow!("{} shrank while being read", path.display()),
        _ => anyhow::Error::new(e).context(format!("cannot read {}", path.display())),
    })
}

pub fn encrypt(args: &EncryptArgs) -> Result<()> {
    let key = load_data_key(&args.key)?;
    let segment = segment_size(args.segments.segment_size)?;
    let (mut input, metadata) = open_input(&args.input)?;
    if metadata.is_dir() {
        bail!(
            "{} is a directory; encrypt takes one file",
            args.input.display()
        );
    }
    let mut output = AtomicOutput::create(&args.output)?;
    if metadata.is_file() {
        encrypt_file(
            &key,
            segment,
            &mut input,
            &args.input,
            metadata.len(),
            output.file(),
            &args.output,
        )?;
    } else {
        let writer = BufWriter::with_capacity(1 << 20, output.file());
        let mut encryptor = Encryptor::new(&key, segment, writer)?;
        io::copy(&mut input, &mut encryptor)
            .with_context(|| format!("cannot encrypt {}", args.input.display()))?;
        encryptor
            .finish()?
            .flush()
            .with_context(|| format!("cannot write {}", args.output.display()))?;
    }
    output.commit(!args.durability.no_fsync)
}

fn encrypt_file(
    key: &DataKey,
    segment: SegmentSize,
    input: &mut File,
    input_path: &Path,
    len: u64,
    output: &mut File,
    output_path: &Path,
) -> Result<()> {
    let mut sealer = Some(Sealer::new(key, segment)?);
    let header = sealer.as_ref().expect("sealer").header_bytes();
    output
        .write_all(&header)
        .with_context(|| format!("cannot write {}", output_path.display()))?;
    let batch = batch_bytes(segment) as u64;
    let bar = progress_bar(len, "encrypt");
    let (mut remaining, mut done) = (len, false);
    pipeline::run(
        |buf| {
            if done {
                let mut probe = [0u8; 1];
                if input.read(&mut probe).unwrap_or(0) != 0 {
                    bail!("{} grew while being read", input_path.display());
                }
                return Ok(None);
            }
            let take = remaining.min(batch);
            remaining -= take;
            done = remaining == 0;
            // Read straight into the plaintext slots of the sealed layout: sealing is in place.
            let take = take as usize;
            let sealed_len = if done {
                segment.sealed_len_last(take)
            } else {
                segment.sealed_len(take)
            };
            buf.resize(sealed_len, 0);
            for slot in plaintext_slots_mut(buf, segment) {
                read_exact_named(input, slot, input_path)?;
            }
            Ok(Some(done))
        },
        |sealed, last| {
            if last {
                sealer
                    .take()
                    .expect("one last batch")
                    .seal_last_in_place(sealed)?;
            } else {
                sealer
                    .as_mut()
                    .expect("sealer")
                    .seal_segments_in_place(sealed)?;
            }
            Ok(())
        },
        |sealed| {
            output
                .write_all(sealed)
                .with_context(|| format!("cannot write {}", output_path.display()))?;
            bar.inc(sealed.len() as u64);
            Ok(())
        },
    )
    .with_context(|| format!("cannot encrypt {}", input_path.display()))?;
    bar.finish_and_clear();
    Ok(())
}

/// Reads up to `HEADER_LEN` bytes from the start of `file`.
fn read_header(file: &mut File, path: &Path) -> Result<Vec<u8>> {
    let mut header = Vec::with_capacity(HEADER_LEN);
    file.take(HEADER_LEN as u64)
        .read_to_end(&mut header)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(header)
}

pub fn decrypt(args: &DecryptArgs) -> Result<()> {
    let key = load_data_key(&args.key)?;
    let (mut input, metadata) = open_input(&args.input)?;
    let len = metadata.len();
    let header = read_header(&mut input, &args.input)?;
    let opener = Opener::new(&key, &header, len)
        .with_context(|| format!("cannot decrypt {}", args.input.display()))?;
    input.seek(SeekFrom::Start(opener.sealed_range(0, 1).start))?;
    let segment = opener.segment_size();
    let per_batch = (batch_bytes(segment) / segment.bytes()) as u64;
    let mut output = AtomicOutput::create(&args.output)?;
    let out = output.file();
    let bar = progress_bar(opener.plaintext_len(), "decrypt");
    let mut next = 0u64;
    pipeline::run(
        |buf| {
            if next >= opener.segment_count() {
                return Ok(None);
            }
            let range = opener.sealed_range(next, per_batch);
            buf.resize((range.end - range.start) as usize, 0);
            read_exact_named(&mut input, buf, &args.input)?;
            let first = next;
            next += per_batch;
            Ok(Some(first))
        },
        |sealed, first| Ok(opener.open_segments_in_place(first, sealed)?),
        |opened| {
            for plain in plaintext_slots(opened, segment) {
                out.write_all(plain)
                    .with_context(|| format!("cannot write {}", args.output.display()))?;
                bar.inc(plain.len() as u64);
            }
            Ok(())
        },
    )
    .with_context(|| format!("cannot decrypt {}", args.input.display()))?;
    bar.finish_and_clear();
    output.commit(!args.durability.no_fsync)
}

pub fn inspect(args: &InspectArgs) -> Result<()> {
    let (mut file, metadata) = open_input(&args.file)?;
    let len = metadata.len();
    let bytes = read_header(&mut file, &args.file)?;
    let header = match Header::parse(&bytes) {
        Ok(header) => header,
        Err(Error::NotEbf) if looks_like_legacy_cse(&mut file, len) => bail!(
            "{} is not an EBF blob; its length fits the reference system's CSE format \
             (convert it with: encfs convert --from cleanroom-cse)",
            args.file.display()
        ),
        Err(error) => {
            return Err(anyhow::Error::new(error)
                .context(format!("cannot inspect {}", args.file.display())));
        }
    };
    let size = header.segment_size;
    let plaintext_len = size.plaintext_len(len);
    match args.output.structured() {
        Some(format) => {
            let value = serde_json::json!({
                "file": args.file.display().to_string(),
                "format": "EBF",
                "version": encfs_crypto::format::VERSION,
                "algorithm": "AES-256-GCM/HKDF-SHA-256",
                "segment_size": size.bytes(),
                "key_id": header.key_id.to_string(),
                "salt": header.salt.iter().map(|b| format!("{b:02x}")).collect::<String>(),
                "blob_len": len,
                "plaintext_len": plaintext_len.as_ref().ok(),
                "segments": plaintext_len.as_ref().ok().map(|&p| size.segment_count(p)),
            });
            args.output.print(&value, format)?;
        }
        None => {
            println!("file:           {}", args.file.display());
            println!("format:         EBF v{}", encfs_crypto::format::VERSION);
            println!("algorithm:      AES-256-GCM segments, HKDF-SHA-256 per-blob key");
            println!(
                "segment size:   {} ({} bytes)",
                format_size(size.bytes() as u64),
                size.bytes()
            );
            println!("key id:         {}", header.key_id);
            println!(
                "salt:           {}",
                header
                    .salt
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            );
            println!("blob length:    {len}");
            if let Ok(p) = plaintext_len {
                let segments = size.segment_count(p);
                println!("plaintext:      {p} bytes ({})", format_size(p));
                println!(
                    "segments:       {segments} ({} bytes overhead)",
                    HEADER_LEN as u64 + segments * SEGMENT_OVERHEAD as u64
                );
            }
        }
    }
    plaintext_len
        .map(drop)
        .with_context(|| format!("{} is truncated or has extra bytes", args.file.display()))
}

fn looks_like_legacy_cse(file: &mut File, len: u64) -> bool {
    let mut trailer = [0u8; legacy_cse::TRAILER_LEN];
    len >= trailer.len() as u64
        && file
            .seek(SeekFrom::Start(len - trailer.len() as u64))
            .is_ok()
        && file.read_exact(&mut trailer).is_ok()
        && legacy_cse::Layout::new(len, trailer).is_ok()
}

pub fn convert(args: &ConvertArgs) -> Result<()> {
    let key = load_data_key(&args.key)?;
    let segment = segment_size(args.segments.segment_size)?;
    let (mut input, metadata) = open_input(&args.input)?;
    let len = metadata.len();
    let mut trailer = [0u8; legacy_cse::TRAILER_LEN];
    if len < trailer.len() as u64 {
        bail!(
            "{} is too short to be a CSE blob ({len} bytes)",
            args.input.display()
        );
    }
    input.seek(SeekFrom::Start(len - trailer.len() as u64))?;
    read_exact_named(&mut input, &mut trailer, &args.input)?;
    input.seek(SeekFrom::Start(0))?;
    let layout = legacy_cse::Layout::new(len, trailer)
        .with_context(|| format!("{} is not a valid cleanroom-cse blob", args.input.display()))?;
    let legacy = LegacyCipher::new(&key);
    let mut sealer = Some(Sealer::new(&key, segment)?);
    let mut output = AtomicOutput::create(&args.output)?;
    let out = output.file();
    out.write_all(&sealer.as_ref().expect("sealer").header_bytes())?;
    let bar = progress_bar(layout.plaintext_len, "convert");
    let mut plain = Vec::new();
    let mut next = 0u64;
    pipeline::run(
        |buf| {
            if next > 0 && next >= layout.block_count {
                return Ok(None);
            }
            let index = next;
            next += 1;
            if layout.block_count == 0 {
                buf.clear();
                return Ok(Some(None));
            }
            buf.resize(layout.stored_block_len(), 0);
            read_exact_named(&mut input, buf, &args.input)?;
            Ok(Some(Some(index)))
        },
        |buf, index| {
            let kept = match index {
                Some(index) => {
                    plain.resize(layout.block_size, 0);
                    legacy.open_block(&layout, index, buf, &mut plain)?
                }
                None => 0,
            };
            let last = index.is_none_or(|i| i + 1 == layout.block_count);
            if last {
                let sealer = sealer.take().expect("one last block");
                buf.resize(sealer.sealed_len_last(kept), 0);
                sealer.seal_last(&plain[..kept], buf)?;
            } else {
                let sealer = sealer.as_mut().expect("sealer");
                buf.resize(sealer.sealed_len(kept), 0);
                sealer.seal_segments(&plain[..kept], buf)?;
            }
            bar.inc(kept as u64);
            Ok(())
        },
        |sealed| {
            out.write_all(sealed)
                .with_context(|| format!("cannot write {}", args.output.display()))
        },
    )
    .with_context(|| format!("cannot convert {}", args.input.display()))?;
    bar.finish_and_clear();
    output.commit(!args.durability.no_fsync)
}

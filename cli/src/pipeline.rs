//! A three-stage read → transform → write pipeline for large files.
//!
//! Reading and writing run on their own threads while the calling thread transforms (seals or
//! opens a batch of segments in place, itself spread over the rayon pool), so I/O overlaps with
//! crypto even with `--threads 1`. A fixed set of buffers circulates reader → transform → writer →
//! reader: memory stays at `BUFFERS` batches whatever the file size, and transforms work in place,
//! so no byte is copied between stages. Any stage's error stops the others; the reader's and
//! writer's errors win over the "channel closed" they cause downstream.

use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread;

use anyhow::{Result, anyhow};

/// Batches in circulation: one being read, one transformed, one written, one spare.
const BUFFERS: usize = 4;

/// Runs the pipeline. `read` fills a buffer and returns `Some(tag)`, or `None` when done;
/// `transform` rewrites a filled buffer in place; `write` consumes buffers in order.
pub fn run<T: Send>(
    read: impl FnMut(&mut Vec<u8>) -> Result<Option<T>> + Send,
    mut transform: impl FnMut(&mut Vec<u8>, T) -> Result<()>,
    write: impl FnMut(&[u8]) -> Result<()> + Send,
) -> Result<()> {
    let (free_tx, free_rx) = sync_channel::<Vec<u8>>(BUFFERS);
    let (filled_tx, filled_rx) = sync_channel::<(Vec<u8>, T)>(BUFFERS);
    let (done_tx, done_rx) = sync_channel::<Vec<u8>>(BUFFERS);
    for _ in 0..BUFFERS {
        free_tx.send(Vec::new()).expect("capacity");
    }
    thread::scope(|scope| {
        let reader = scope.spawn(move || read_stage(read, free_rx, filled_tx));
        let writer = scope.spawn(move || write_stage(write, done_rx, free_tx));
        let mut transformed = Ok(());
        for (mut buffer, tag) in filled_rx {
            if let Err(error) = transform(&mut buffer, tag) {
                transformed = Err(error);
                break;
            }
            if done_tx.send(buffer).is_err() {
                break; // The writer failed; its error is reported below.
            }
        }
        drop(done_tx);
        let read = reader
            .join()
            .map_err(|_| anyhow!("reader thread panicked"))?;
        let written = writer
            .join()
            .map_err(|_| anyhow!("writer thread panicked"))?;
        read.and(written).and(transformed)
    })
}

fn read_stage<T>(
    mut read: impl FnMut(&mut Vec<u8>) -> Result<Option<T>>,
    free: Receiver<Vec<u8>>,
    filled: SyncSender<(Vec<u8>, T)>,
) -> Result<()> {
    for mut buffer in free {
        match read(&mut buffer)? {
            Some(tag) => {
                if filled.send((buffer, tag)).is_err() {
                    break;
                }
            }
            None => break,
        }
    }
    Ok(())
}

fn write_stage(
    mut write: impl FnMut(&[u8]) -> Result<()>,
    done: Receiver<Vec<u8>>,
    free: SyncSender<Vec<u8>>,
) -> Result<()> {
    for buffer in done {
        write(&buffer)?;
        // The reader may already have finished; then the buffer is simply dropped.
        let _ = free.send(buffer);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_every_batch_in_order() {
        let mut next = 0u8;
        let mut out = Vec::new();
        run(
            |buf| {
                if next == 10 {
                    return Ok(None);
                }
                buf.clear();
                buf.extend_from_slice(&[next; 3]);
                next += 1;
                Ok(Some(next))
            },
            |buf, tag| {
                buf.iter_mut().for_each(|b| *b += tag);
                Ok(())
            },
            |buf| {
                out.extend_from_slice(buf);
                Ok(())
            },
        )
        .unwrap();
        let expected: Vec<u8> = (0..10u8).flat_map(|i| [i * 2 + 1; 3]).collect();
        assert_eq!(out, expected);
    }

    #[test]
    fn batches_queued_after_the_reader_finished_are_not_lost() {
        let mut left = 3;
        let mut written = 0;
        run(
            |buf| {
                buf.resize(1, 0);
                left -= 1;
                Ok((left >= 0).then_some(()))
            },
            |_, ()| {
                // Slow transform: the reader is done long before the last batches get here.
                std::thread::sleep(std::time::Duration::from_millis(20));
                Ok(())
            },
            |_| {
                written += 1;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(written, 3);
    }

    #[test]
    fn errors_from_any_stage_surface() {
        let fail_read = run(
            |_| Err::<Option<()>, _>(anyhow!("read broke")),
            |_, _| Ok(()),
            |_| Ok(()),
        );
        assert_eq!(fail_read.unwrap_err().to_string(), "read broke");
        let mut n = 0;
        let fail_write = run(
            |_| {
                n += 1;
                Ok((n < 100).then_some(()))
            },
            |_, _| Ok(()),
            |_| Err(anyhow!("disk full")),
        );
        assert_eq!(fail_write.unwrap_err().to_string(), "disk full");
        let fail_transform = run(|_| Ok(Some(())), |_, _| Err(anyhow!("bad tag")), |_| Ok(()));
        assert_eq!(fail_transform.unwrap_err().to_string(), "bad tag");
    }
}

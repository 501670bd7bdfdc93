//! `kill -9` under load loses no acknowledged transaction.
//!
//! The test re-runs its own binary as a child (`ENCFS_LEDGER_CRASH_CHILD=DIR`): the child opens a
//! ledger and appends from several threads, each appending under a shared lock, waiting on its
//! ticket outside it and only then printing `seqno payload` — its acknowledgement. The parent
//! reads those lines, kills the child with SIGKILL mid-load, reopens the ledger (which verifies
//! every frame, root and signature, and cuts a torn tail) and checks that every acknowledged
//! transaction is there with its payload.
//!
//! SIGKILL kills the process, not the machine: the page cache survives, so this proves that
//! acknowledgements follow the appends (ordering, locking, torn-tail handling), while the fsync
//! itself is what makes them survive a power cut.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use encfs_governance::identity::ServiceIdentity;
use encfs_governance::ledger::{Ledger, LedgerConfig, verify_ledger};

const CHILD_ENV: &str = "ENCFS_LEDGER_CRASH_CHILD";

fn config() -> LedgerConfig {
    LedgerConfig {
        signature_interval_txs: 25,
        signature_interval: Duration::from_millis(50),
    }
}

fn run_child(dir: &Path) -> ! {
    let service = ServiceIdentity::load_from_dir(dir).expect("identity");
    let (ledger, _) = Ledger::open(
        &dir.join("ledger"),
        config(),
        &service.node,
        &service.service.cert_der,
    )
    .expect("open");
    let ledger = Arc::new(Mutex::new(ledger));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..6)
        .map(|t| {
            let ledger = ledger.clone();
            let out = out.clone();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let payload = format!("t{t}-{i}-{}", "x".repeat((i % 97) as usize));
                    let ticket = ledger
                        .lock()
                        .unwrap()
                        .append(payload.clone().into_bytes(), None)
                        .unwrap();
                    let seqno = ticket.seqno();
                    ticket.wait().unwrap();
                    let mut out = out.lock().unwrap();
                    writeln!(out, "ACK {seqno} {payload}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    std::process::exit(0)
}

/// `ACK seqno payload` → (seqno, payload); the test harness's own lines are skipped.
fn parse_ack(line: &str) -> Option<(u64, String)> {
    let (seqno, payload) = line.strip_prefix("ACK ")?.split_once(' ')?;
    Some((seqno.parse().ok()?, payload.to_string()))
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_transaction() {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        run_child(Path::new(&dir));
    }
    let dir = tempfile::tempdir().unwrap();
    let service = ServiceIdentity::generate().unwrap();
    service.write_to_dir(dir.path()).unwrap();

    let mut acknowledged: HashMap<u64, String> = HashMap::new();
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sigkill_under_load_loses_no_acknowledged_transaction",
                "--nocapture",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let start = Instant::now();
        let mut this_round = 0;
        // Kill after a fixed number of acknowledgements (or time), mid-load.
        while this_round < 300 + 100 * round && start.elapsed() < Duration::from_secs(60) {
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some((seqno, payload)) = parse_ack(&line) {
                        acknowledged.insert(seqno, payload);
                        this_round += 1;
                    }
                }
                Err(_) => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        let _ = child.wait();
        // Lines already in the pipe were acknowledged before the kill: count them too.
        for line in rx.try_iter() {
            if let Some((seqno, payload)) = parse_ack(&line) {
                acknowledged.insert(seqno, payload);
            }
        }
        let _ = reader.join();
        assert!(
            this_round > 0,
            "round {round}: the child acknowledged nothing"
        );

        let (ledger, replayed) = Ledger::open(
            &dir.path().join("ledger"),
            config(),
            &service.node,
            &service.service.cert_der,
        )
        .expect("reopen after SIGKILL");
        let by_seqno: HashMap<u64, &[u8]> = replayed
            .iter()
            .map(|t| (t.seqno, t.write_set.as_slice()))
            .collect();
        for (seqno, payload) in &acknowledged {
            assert_eq!(
                by_seqno.get(seqno).copied(),
                Some(payload.as_bytes()),
                "round {round}: acknowledged transaction {seqno} is missing or changed"
            );
        }
        assert!(ledger.last_seqno() >= acknowledged.keys().copied().max().unwrap());
        drop(ledger);
        verify_ledger(&dir.path().join("ledger"), &service.service.cert_der).unwrap();
    }
}

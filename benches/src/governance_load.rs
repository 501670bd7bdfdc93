//! Load generator for `benches/governance_load.sh`: N members, each on its own HTTPS connection,
//! submit signed governance requests to a running service as fast as it acknowledges them (a
//! proposal, a ballot on it, its withdrawal; every acknowledgement is durable), and the tool
//! prints one JSON line: requests, throughput, p50 and p99 latency.
//!
//! ```text
//! governance-load --endpoint URL --service-cert PEM --keys DIR --members N --seconds S [--activate]
//! ```
//! `DIR` holds `m0_cert.pem`, `m0_privk.pem`, … (`encfs governance member keygenerator`).
//!
//! `governance-load --fsync-rate DIR --seconds S` measures the disk's limit instead: appends of
//! 4 KiB each followed by `fdatasync`, as the ledger does, per second.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use encfs_governance::client::GovernanceClient;
use encfs_governance::identity::MemberIdentity;
use serde_json::json;

struct Options {
    endpoint: String,
    service_cert: PathBuf,
    keys: PathBuf,
    members: usize,
    seconds: f64,
    activate: bool,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        endpoint: String::new(),
        service_cert: PathBuf::new(),
        keys: PathBuf::new(),
        members: 1,
        seconds: 3.0,
        activate: false,
    };
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--endpoint" => options.endpoint = value()?,
            "--service-cert" => options.service_cert = value()?.into(),
            "--keys" => options.keys = value()?.into(),
            "--members" => {
                options.members = value()?.parse().map_err(|e| format!("--members: {e}"))?
            }
            "--seconds" => {
                options.seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?
            }
            "--activate" => options.activate = true,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if options.endpoint.is_empty() {
        return Err("--endpoint is required".into());
    }
    Ok(options)
}

fn client(options: &Options, pem: &str, index: usize) -> Result<GovernanceClient, String> {
    let cert = options.keys.join(format!("m{index}_cert.pem"));
    let key = options.keys.join(format!("m{index}_privk.pem"));
    let identity = MemberIdentity::load(&cert, &key).map_err(|e| e.to_string())?;
    GovernanceClient::new(&options.endpoint, pem, identity).map_err(|e| e.to_string())
}

/// One member's loop: propose, vote, withdraw, until the deadline; the latency of each request.
async fn member_loop(client: GovernanceClient, deadline: Instant) -> Result<Vec<Duration>, String> {
    let mut latencies = Vec::new();
    let mut round = 0u64;
    let member = client.member_id();
    while Instant::now() < deadline {
        round += 1;
        let data = json!({"identifier": member, "round": round});
        let actions = json!([{"name": "set_member_data", "args": {"member_id": member, "member_data": data}}]);
        let started = Instant::now();
        let proposal = client.propose(actions).await.map_err(|e| e.to_string())?;
        latencies.push(started.elapsed());
        let id = proposal["proposalId"]
            .as_str()
            .ok_or("no proposalId")?
            .to_owned();
        let started = Instant::now();
        client.vote(&id, true).await.map_err(|e| e.to_string())?;
        latencies.push(started.elapsed());
        let started = Instant::now();
        client.withdraw(&id).await.map_err(|e| e.to_string())?;
        latencies.push(started.elapsed());
    }
    Ok(latencies)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at].as_secs_f64() * 1000.0
}

/// Appends 4 KiB and `fdatasync`s, in a loop, in a fresh file under `dir`; syncs per second.
fn fsync_rate(dir: &std::path::Path, seconds: f64) -> Result<f64, String> {
    use std::io::Write;
    let path = dir.join(format!(".fsync-rate-{}", std::process::id()));
    let mut file = std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let block = vec![0x5a_u8; 4096];
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        file.write_all(&block)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        syncs += 1;
    }
    let rate = syncs as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(rate)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--fsync-rate") {
        let dir = args.get(2).ok_or("--fsync-rate needs a directory")?;
        let seconds = match args.get(3).map(String::as_str) {
            Some("--seconds") => args
                .get(4)
                .ok_or("--seconds needs a value")?
                .parse()
                .map_err(|e| format!("--seconds: {e}"))?,
            _ => 2.0,
        };
        println!(
            "{}",
            json!({"fsyncs_per_second": fsync_rate(std::path::Path::new(dir), seconds)?})
        );
        return Ok(());
    }
    let options = options()?;
    let pem = std::fs::read_to_string(&options.service_cert)
        .map_err(|e| format!("{}: {e}", options.service_cert.display()))?;
    let clients = (0..options.members)
        .map(|i| client(&options, &pem, i))
        .collect::<Result<Vec<_>, _>>()?;
    if options.activate {
        for c in &clients {
            c.activate().await.map_err(|e| e.to_string())?;
        }
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(options.seconds);
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(member_loop(c, deadline)))
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.map_err(|e| e.to_string())??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    println!(
        "{}",
        json!({
            "members": options.members,
            "requests": latencies.len(),
            "seconds": elapsed,
            "requests_per_second": latencies.len() as f64 / elapsed,
            "p50_ms": percentile(&latencies, 0.5),
            "p99_ms": percentile(&latencies, 0.99),
        })
    );
    Ok(())
}

//! End-to-end log benchmark, one scenario per run so peak memory is the scenario's own:
//!
//! ```sh
//! cargo run --release -p pairs-log --example logbench -- SCENARIO [N]
//! ```
//!
//! Scenarios: `append_one_by_one`, `append_batched`, `replicate_full`, `replicate_one_by_one`,
//! `one_new_entry`. Prints one JSON object. Entries carry 100-byte random payloads. Stores are files in
//! a temporary directory (real fsyncs) unless noted.

use std::time::{Duration, Instant};

use pairs_base::SecretKey;
use pairs_log::{Log, Payload, SyncStats};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PAYLOAD: usize = 100;
const BATCH: usize = 1000;
const ONE_WAY_DELAY: Duration = Duration::from_millis(50);

fn payload(i: u64) -> Payload {
    let mut bytes = vec![0u8; PAYLOAD];
    let mut xof = blake3::Hasher::new()
        .update(&i.to_le_bytes())
        .finalize_xof();
    xof.fill(&mut bytes);
    Payload::Data(bytes)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// CPU seconds this process has used (user and system, all threads), from `/proc/self/stat`, whose
/// times are in ticks of 1/100 s.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn fill(log: &Log, key: &SecretKey, n: u64) {
    let mut i = 0;
    while i < n {
        let count = (n - i).min(BATCH as u64);
        log.append_batch(key, (i..i + count).map(payload).collect())
            .unwrap();
        i += count;
    }
}

async fn sync(a: &Log, b: &Log) -> (SyncStats, SyncStats) {
    let (x, y) = tokio::io::duplex(1 << 20);
    let (ra, rb) = tokio::join!(a.replicate(x, false), b.replicate(y, false));
    (ra.unwrap(), rb.unwrap())
}

/// A pipe that delivers every chunk `delay` after it was written, in order.
fn delayed_pipe(delay: Duration) -> (tokio::io::DuplexStream, tokio::io::DuplexStream) {
    let (a, a_relay) = tokio::io::duplex(1 << 20);
    let (b, b_relay) = tokio::io::duplex(1 << 20);
    let (a_read, a_write) = tokio::io::split(a_relay);
    let (b_read, b_write) = tokio::io::split(b_relay);
    tokio::spawn(relay(a_read, b_write, delay));
    tokio::spawn(relay(b_read, a_write, delay));
    (a, b)
}

async fn relay<R, W>(mut from: R, mut to: W, delay: Duration)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due.into()).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 1 << 16];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0
            || tx
                .send((Instant::now() + delay, buf[..n].to_vec()))
                .is_err()
        {
            break;
        }
    }
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().expect("scenario");
    let n: u64 = args
        .next()
        .map(|v| v.parse().expect("N"))
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let owner = SecretKey::generate();
    let open = |name: &str| Log::open(&dir.path().join(name), owner.node_id()).unwrap();
    let report = match scenario.as_str() {
        "append_one_by_one" => {
            let log = open("a.redb");
            let start = Instant::now();
            for i in 0..n {
                log.append(&owner, payload(i)).unwrap();
            }
            let file = n as f64 / start.elapsed().as_secs_f64();
            let memory_log = Log::in_memory(owner.node_id());
            let start = Instant::now();
            for i in 0..n {
                memory_log.append(&owner, payload(i)).unwrap();
            }
            let memory = n as f64 / start.elapsed().as_secs_f64();
            serde_json::json!({"per_second": file, "per_second_in_memory": memory})
        }
        "append_batched" => {
            let log = open("a.redb");
            let start = Instant::now();
            fill(&log, &owner, n);
            serde_json::json!({"per_second": n as f64 / start.elapsed().as_secs_f64(), "batch": BATCH})
        }
        "replicate_full" => {
            let (a, b) = (open("a.redb"), open("b.redb"));
            fill(&a, &owner, n);
            let start = Instant::now();
            let (sa, sb) = sync(&a, &b).await;
            let seconds = start.elapsed().as_secs_f64();
            assert_eq!(b.len() as u64, n);
            let total = sa.bytes_sent + sb.bytes_sent;
            serde_json::json!({
                "seconds": seconds,
                "bytes_a_to_b": sa.bytes_sent,
                "bytes_b_to_a": sb.bytes_sent,
                "wire_bytes_per_entry": total as f64 / n as f64,
                "payload_ratio": total as f64 / (n as f64 * PAYLOAD as f64),
                "peak_rss_mb": peak_rss_mib(),
            })
        }
        "replicate_one_by_one" => {
            // Every entry signed on its own, as a chat appends them. The source is built in memory
            // (a durable append per entry would make the setup take minutes); the replica is a file.
            let a = Log::in_memory(owner.node_id());
            for i in 0..n {
                a.append(&owner, payload(i)).unwrap();
            }
            let b = open("b.redb");
            let (start, cpu) = (Instant::now(), cpu_seconds());
            let (sa, sb) = sync(&a, &b).await;
            let seconds = start.elapsed().as_secs_f64();
            let cpu = cpu_seconds() - cpu;
            assert_eq!(b.len() as u64, n);
            let total = sa.bytes_sent + sb.bytes_sent;
            serde_json::json!({
                "seconds": seconds,
                // Both sides run on one thread: this is their CPU time together.
                "cpu_seconds": cpu,
                "per_second": n as f64 / seconds,
                "wire_bytes_per_entry": total as f64 / n as f64,
                "payload_ratio": total as f64 / (n as f64 * PAYLOAD as f64),
                "peak_rss_mb": peak_rss_mib(),
            })
        }
        "one_new_entry" => {
            // In memory: building two million-entry replicas on disk would dominate the run.
            let a = Log::in_memory(owner.node_id());
            let b = Log::in_memory(owner.node_id());
            fill(&a, &owner, n);
            sync(&a, &b).await;
            a.append(&owner, payload(u64::MAX)).unwrap();
            let (x, y) = delayed_pipe(ONE_WAY_DELAY);
            let start = Instant::now();
            let (ra, rb) = tokio::join!(a.replicate(x, false), b.replicate(y, false));
            let seconds = start.elapsed().as_secs_f64();
            let (sa, sb) = (ra.unwrap(), rb.unwrap());
            assert_eq!(a.heads(), b.heads());
            serde_json::json!({
                "seconds": seconds,
                "round_trips": (seconds / (2.0 * ONE_WAY_DELAY.as_secs_f64()) * 10.0).round() / 10.0,
                "bytes_total": sa.bytes_sent + sb.bytes_sent,
                "messages": sa.frames_sent + sb.frames_sent,
            })
        }
        other => panic!("unknown scenario {other}"),
    };
    let mut report = report;
    report["impl"] = "pairs".into();
    report["scenario"] = scenario.into();
    report["n"] = n.into();
    println!("{report}");
}

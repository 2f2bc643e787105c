//! Benchmark program (not an example to copy): append rates through a node, one entry at a time,
//! as a chat or feed app appends. Prints one JSON object. Used by `bench/node-bench.sh`.
//!
//! `append_bench embedded N`: `LogHandle::append` in this process, on a file-backed store (each
//! append one durable commit).
//! `append_bench control N CLIENTS`: through the running node's control socket (`PAIRS_HOME`),
//! N appends in all, spread over CLIENTS connections appending concurrently.

use std::time::Instant;

use anyhow::{Context as _, Result, bail};
use pairs::control::Client;
use pairs::log::Payload;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = args
        .get(1)
        .context("usage: append_bench embedded|control N [CLIENTS]")?
        .parse()?;
    match args[0].as_str() {
        "embedded" => embedded(n).await,
        "control" => control(n, args.get(2).map_or(Ok(1), |c| c.parse())?).await,
        other => bail!("unknown mode {other}"),
    }
}

async fn embedded(n: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let node = pairs::Node::builder()
        .data_dir(dir.path())
        .offline()
        .spawn()
        .await?;
    let log = node.create_log().await?;
    let start = Instant::now();
    for i in 0..n {
        log.append(format!("entry {i:0>92}")).await?;
    }
    report("embedded", n, 1, start.elapsed().as_secs_f64());
    Ok(())
}

async fn control(n: usize, clients: usize) -> Result<()> {
    let home = pairs::home::data_dir(
        std::env::var_os("PAIRS_HOME")
            .map(std::path::PathBuf::from)
            .as_deref(),
    )?;
    let mut first = Client::connect(&home)
        .await?
        .context("no node runs on PAIRS_HOME")?;
    let log = first.log_new().await?;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let home = home.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::connect(&home).await?.context("node gone")?;
            for i in (c..n).step_by(clients) {
                let entry = format!("entry {i:0>92}").into_bytes();
                client.append(log, vec![Payload::Data(entry)]).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    report("control", n, clients, start.elapsed().as_secs_f64());
    Ok(())
}

fn report(mode: &str, n: usize, clients: usize, secs: f64) {
    println!(
        "{}",
        serde_json::json!({
            "mode": mode,
            "appends": n,
            "clients": clients,
            "seconds": secs,
            "per_second": n as f64 / secs,
        })
    );
}

//! A log shared over the swarm and kept live: every node that has its ticket finds the others
//! (LAN, DHT, peers in `config.toml`) and replicates with them as entries are appended.
//!
//! `cargo run --example shared_log` creates a log, prints its ticket and appends each stdin line;
//! `cargo run --example shared_log TICKET` elsewhere prints every entry as it arrives.

use pairs::base::Ticket as _;
use pairs::log::{LogTicket, Payload};
use tokio::io::AsyncBufReadExt as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let node = pairs::Node::builder().spawn().await?;
    let log = match std::env::args().nth(1) {
        Some(ticket) => node.log(&LogTicket::from_ticket(&ticket)?).await?,
        None => node.create_log().await?,
    };
    log.share().await?;
    println!("{}", log.ticket().to_ticket());
    let (mut new_entries, writer) = (log.subscribe(), log.clone());
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Some(line) = lines.next_line().await? {
            writer.append(line).await?; // the owner writes; others need `add_writer` first
        }
        anyhow::Ok(())
    });
    while let Some(Ok(entries)) = new_entries.next().await {
        for entry in entries {
            if let Payload::Data(data) = &entry.body().payload {
                println!("{}", String::from_utf8_lossy(data));
            }
        }
    }
    Ok(())
}

//! Benchmark program (not an example to copy): fills a chat room with history for
//! `bench/chat-bench.sh`.
//!
//! `chat_bench fill HOME MESSAGES AUTHORS`: in data directory HOME (no node running there), makes
//! an open room and writes MESSAGES posts by AUTHORS members taking turns, five at a time, each
//! with its own clock spread over the past so no author floods. Prints the room's ticket.

use anyhow::{Context as _, Result, bail};
use pairs::Node;
use pairs::base::{SecretKey, Ticket as _};
use pairs::chat::{ChatOp, RoomTicket};
use pairs::log::Payload;

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [mode, home, messages, authors] = args.as_slice() else {
        bail!("usage: chat_bench fill HOME MESSAGES AUTHORS");
    };
    if mode != "fill" {
        bail!("unknown mode {mode}");
    }
    let messages: usize = messages.parse().context("MESSAGES")?;
    let authors: usize = authors.parse().context("AUTHORS")?;
    let node = Node::builder().data_dir(home).offline().spawn().await?;
    let room = node.create_log().await?;
    let title = ChatOp::Title {
        title: "bench".into(),
    };
    room.append_payloads(vec![Payload::Open, Payload::Data(title.encode()?)])
        .await?;
    let keys: Vec<SecretKey> = (0..authors).map(|_| SecretKey::generate()).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let spacing = 600;
    let start = now - (messages as u64) * spacing;
    let store = room.store().clone();
    let written = tokio::task::spawn_blocking(move || -> Result<usize> {
        let mut written = 0;
        let mut turn = 0;
        while written < messages {
            let key = &keys[turn % keys.len()];
            let count = 5.min(messages - written);
            let payloads = (0..count)
                .map(|i| {
                    let op = ChatOp::Post {
                        text: format!("message {} from author {}", written + i, turn % keys.len()),
                        reply_to: None,
                        attachment: None,
                    };
                    Ok(Payload::Data(op.encode()?))
                })
                .collect::<Result<Vec<_>>>()?;
            store.append_batch_at(key, payloads, start + written as u64 * spacing)?;
            written += count;
            turn += 1;
        }
        Ok(written)
    })
    .await??;
    let ticket = RoomTicket {
        log: room.id(),
        providers: Vec::new(),
    };
    println!("{}", ticket.to_ticket());
    eprintln!("{written} messages by {authors} authors");
    node.shutdown().await;
    Ok(())
}

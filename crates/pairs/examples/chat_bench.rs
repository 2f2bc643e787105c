//! Benchmark program (not an example to copy): fills a chat room with history for
//! `bench/chat-bench.sh`.
//!
//! `chat_bench fill HOME MESSAGES AUTHORS`: in data directory HOME (no node running there), makes
//! an open room and writes MESSAGES posts by AUTHORS members taking turns, one signed entry per
//! post as people post (not sealed batches, which a receiver checks far faster), with clocks spread
//! over the past so no author floods. Prints the room's ticket.

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
        for n in 0..messages {
            let author = n % keys.len();
            let op = ChatOp::Post {
                text: format!("message {n} from author {author}"),
                reply_to: None,
                attachment: None,
            };
            let payload = Payload::Data(op.encode()?);
            store.append_batch_at(&keys[author], vec![payload], start + n as u64 * spacing)?;
        }
        Ok(messages)
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

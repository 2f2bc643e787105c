//! A chat room in an application: a room is a log shared on the swarm, and `pairs::chat::Room`
//! folds its entries into what every member shows alike.
//!
//! `cargo run --example chat_room NAME` makes an open room, prints its ticket and posts each stdin
//! line as NAME; `cargo run --example chat_room NAME TICKET` elsewhere joins it. Both print every
//! message as `name: text` once it arrives.

use std::collections::HashSet;

use pairs::base::Ticket as _;
use pairs::chat::{ChatOp, Line, Room, RoomTicket};
use pairs::log::{LogTicket, Payload};
use tokio::io::AsyncBufReadExt as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "me".into());
    let node = pairs::Node::builder().spawn().await?;
    let log = match args.next() {
        Some(ticket) => {
            let ticket = RoomTicket::parse(&ticket)?;
            node.log(&LogTicket { log: ticket.log }).await?
        }
        None => {
            let log = node.create_log().await?;
            log.append_payloads(vec![Payload::Open]).await?; // anyone with the ticket may post
            log
        }
    };
    log.share().await?;
    println!(
        "{}",
        RoomTicket {
            log: log.id(),
            providers: Vec::new()
        }
        .to_ticket()
    );

    let mut room = Room::new(log.id());
    let mut shown = HashSet::new();
    let mut new_entries = log.subscribe();
    room.apply(&log.entries()?);
    let writer = log.clone();
    tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut introduced = false;
        while let Some(text) = lines.next_line().await? {
            let mut ops = Vec::new();
            if !introduced {
                ops.push(ChatOp::Profile {
                    name: name.clone(),
                    link: None,
                });
            }
            ops.push(ChatOp::Post {
                text,
                reply_to: None,
                attachment: None,
            });
            let payloads = ops
                .iter()
                .map(|op| Ok(Payload::Data(op.encode()?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            // Refused until the room's opening has arrived from a member.
            match writer.append_payloads(payloads).await {
                Ok(_) => introduced = true,
                Err(err) => eprintln!("not posted: {err:#}"),
            }
        }
        anyhow::Ok(())
    });
    loop {
        for line in room.timeline(None) {
            if let Line::Message(m) = line
                && shown.insert(m.id)
            {
                println!(
                    "{}: {}",
                    if m.name.is_empty() {
                        m.person.short()
                    } else {
                        m.name
                    },
                    m.text
                );
            }
        }
        match new_entries.next().await {
            Some(Ok(entries)) => {
                room.apply(&entries);
            }
            Some(Err(_)) => {
                room.apply(&log.entries()?); // fell behind: read the log again
            }
            None => return Ok(()),
        }
    }
}

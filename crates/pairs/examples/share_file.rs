//! A file (or a directory) shared by hash: every node with the ticket fetches it from every node that
//! has it, verified 16 KiB at a time, and then serves it too.
//!
//! `cargo run --example share_file PATH` prints a ticket and serves PATH until Ctrl-C;
//! `cargo run --example share_file TICKET OUT` elsewhere fetches it into OUT, then keeps serving it.

use pairs::base::Ticket as _;
use pairs::blobs::BlobTicket;
use pairs::blobs::store::ImportMode;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let node = pairs::Node::builder().fresh_key().spawn().await?;
    let blobs = node.blobs();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let hash = match args.as_slice() {
        [path] => {
            let added = blobs
                .add_named(&[path.into()], ImportMode::Reference)
                .await?;
            blobs.share(added.hash).await?;
            println!("{}", blobs.ticket(added.hash, added.format).to_ticket());
            added.hash
        }
        [ticket, out] => {
            let ticket = BlobTicket::from_ticket(ticket)?;
            let done = blobs.get(&ticket, out.as_ref(), |_| {}).await?;
            println!("got {} bytes in {} files", done.held, done.files);
            ticket.hash
        }
        _ => anyhow::bail!("usage: share_file PATH | share_file TICKET OUT"),
    };
    eprintln!("serving {}; Ctrl-C to stop", hash.short());
    tokio::signal::ctrl_c().await?;
    node.shutdown().await;
    Ok(())
}

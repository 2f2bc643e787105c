//! hyperlog: two replicas of one log, each written by its own key, replicate over one duplex
//! pipe (`s1.pipe(s2).pipe(s1)`) and end up with the same entries.
//!
//! `cargo run --example hyperlog`

use pairs::base::SecretKey;
use pairs::log::{Log, Payload};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (owner, writer) = (SecretKey::generate(), SecretKey::generate());
    let a = Log::in_memory(owner.node_id());
    let b = Log::in_memory(owner.node_id());
    a.append(&owner, Payload::AddWriter(writer.node_id()))?; // b's key may write too
    sync(&a, &b).await?;
    a.append(&owner, Payload::Data(b"hello from a".to_vec()))?;
    b.append(&writer, Payload::Data(b"hello from b".to_vec()))?;
    sync(&a, &b).await?;
    for entry in b.entries()? {
        if let Payload::Data(data) = &entry.body().payload {
            println!("{}", String::from_utf8_lossy(data));
        }
    }
    Ok(())
}

/// `a.replicate(x)` and `b.replicate(y)`, with x and y the two ends of one in-memory pipe.
async fn sync(a: &Log, b: &Log) -> anyhow::Result<()> {
    let (x, y) = tokio::io::duplex(64 * 1024);
    tokio::try_join!(a.replicate(x, false), b.replicate(y, false))?;
    Ok(())
}

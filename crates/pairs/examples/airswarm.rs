//! airswarm: join the topic "testing", say hello to every peer that joins, print what they send.
//!
//! Run it on two machines of a LAN (or twice, with `peers = ["HOST:PORT"]` in `config.toml`):
//! `cargo run --example airswarm`.

use pairs::base::Topic;
use pairs::net::swarm::TopicEvent;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let node = pairs::Node::builder().fresh_key().spawn().await?;
    let mut topic = node.swarm()?.join(Topic::from_name("testing")).await?;
    let hello = format!("hello from {}\n", node.id().short());
    while let Some(event) = topic.next().await {
        let TopicEvent::Joined(mut peer) = event else {
            continue;
        };
        let hello = hello.clone();
        tokio::spawn(async move {
            let mut stream = peer.stream().await?;
            stream.send.write_all(hello.as_bytes()).await?;
            tokio::io::copy(&mut stream.recv, &mut tokio::io::stdout()).await?;
            anyhow::Ok(())
        });
    }
    Ok(())
}

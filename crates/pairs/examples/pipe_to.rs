//! Pipes stdin to a node known only by its id, and what it sends back to stdout. The node's
//! addresses come from wherever this node finds them: the LAN, `config.toml`'s peers, the DHT.
//!
//! There: `pairs listen`. Here: `cargo run --example pipe_to NODE_ID`.

use anyhow::Context as _;
use pairs::base::NodeId;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let id: NodeId = std::env::args()
        .nth(1)
        .context("usage: pipe_to NODE_ID")?
        .parse()?;
    let node = pairs::Node::builder().fresh_key().spawn().await?;
    let connection = node.connect(id, pairs::pipe::ALPN).await?;
    let (mut send, mut recv) = pairs::pipe::open(&connection).await?.split();
    let sending = async {
        tokio::io::copy(&mut tokio::io::stdin(), &mut send).await?;
        send.finish()?;
        let _ = send.stopped().await; // until the peer has it all
        anyhow::Ok(())
    };
    let receiving =
        async { anyhow::Ok(tokio::io::copy(&mut recv, &mut tokio::io::stdout()).await?) };
    tokio::try_join!(sending, receiving)?;
    connection.close(pairs::pipe::DONE, b"done");
    node.shutdown().await; // so the close reaches the peer before we exit
    Ok(())
}

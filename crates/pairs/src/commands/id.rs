//! `pairs id`: print this node's id.

use std::path::Path;

use anyhow::Result;

use pairs::home;

pub fn run(data_dir: Option<&Path>) -> Result<()> {
    let key = home::node_key(data_dir)?;
    println!("{}", key.node_id());
    Ok(())
}

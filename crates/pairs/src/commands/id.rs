//! `pairs id`: print this node's id.

use std::path::Path;

use anyhow::Result;

use pairs::home;

pub fn run(data_dir: Option<&Path>, json: bool) -> Result<()> {
    let key = home::node_key(data_dir)?;
    if json {
        // The same field name as every other command's JSON.
        println!(
            "{}",
            serde_json::json!({ "node": key.node_id().to_string() })
        );
    } else {
        println!("{}", key.node_id());
    }
    Ok(())
}

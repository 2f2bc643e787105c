//! `pairs kv ...`: a last-writer-wins map kept in a log.

use std::path::Path;

use anyhow::{Result, bail};
use pairs_log::Op;

use crate::cli::KvCommand;
use crate::commands::log::parse_ticket;

pub async fn run(data_dir: Option<&Path>, command: KvCommand) -> Result<()> {
    let mut client = super::control(data_dir).await?;
    match command {
        KvCommand::Set { ticket, key, value } => {
            let op = Op::MapSet {
                key: key.into_bytes(),
                value: value.into_bytes(),
            };
            client
                .append(parse_ticket(&ticket)?.log, vec![op.to_payload()])
                .await?;
            Ok(())
        }
        KvCommand::Del { ticket, key } => {
            let log = parse_ticket(&ticket)?.log;
            // Deleting what is not there would still append an entry: say so instead.
            if client
                .map_get(log, key.clone().into_bytes())
                .await?
                .is_none()
            {
                bail!("no key {key:?} in this log: nothing deleted");
            }
            let op = Op::MapDelete {
                key: key.into_bytes(),
            };
            client.append(log, vec![op.to_payload()]).await?;
            Ok(())
        }
        KvCommand::Get { ticket, key } => {
            let log = parse_ticket(&ticket)?.log;
            match client.map_get(log, key.clone().into_bytes()).await? {
                Some(value) => {
                    println!("{}", String::from_utf8_lossy(&value));
                    Ok(())
                }
                None => bail!("no key {key:?} in this log"),
            }
        }
        KvCommand::Ls { ticket } => {
            for (key, value) in client.map_list(parse_ticket(&ticket)?.log).await? {
                println!(
                    "{}\t{}",
                    String::from_utf8_lossy(&key),
                    String::from_utf8_lossy(&value)
                );
            }
            Ok(())
        }
    }
}

//! `pairs kv ...`: a last-writer-wins map kept in a log.

use std::path::Path;

use anyhow::{Result, bail};
use pairs_log::{Op, Views};

use crate::cli::KvCommand;
use crate::commands::log::open;
use crate::home;

pub fn run(data_dir: Option<&Path>, command: KvCommand) -> Result<()> {
    match command {
        KvCommand::Set { ticket, key, value } => write(
            data_dir,
            &ticket,
            Op::MapSet {
                key: key.into_bytes(),
                value: value.into_bytes(),
            },
        ),
        KvCommand::Del { ticket, key } => write(
            data_dir,
            &ticket,
            Op::MapDelete {
                key: key.into_bytes(),
            },
        ),
        KvCommand::Get { ticket, key } => {
            let views = Views::of(&open(data_dir, &ticket)?)?;
            match views.map.get(key.as_bytes()).and_then(|v| v.value.as_ref()) {
                Some(value) => {
                    println!("{}", String::from_utf8_lossy(value));
                    Ok(())
                }
                None => bail!("no key {key:?} in this log"),
            }
        }
        KvCommand::Ls { ticket } => {
            let views = Views::of(&open(data_dir, &ticket)?)?;
            for (key, value) in views.map_entries() {
                println!(
                    "{}\t{}",
                    String::from_utf8_lossy(key),
                    String::from_utf8_lossy(value)
                );
            }
            Ok(())
        }
    }
}

fn write(data_dir: Option<&Path>, ticket: &str, op: Op) -> Result<()> {
    let log = open(data_dir, ticket)?;
    let key = home::writer_key(data_dir, &log.id())?;
    log.append(&key, op.to_payload())?;
    Ok(())
}

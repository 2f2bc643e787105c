//! Rooms to chat in, on logs shared through the swarm: `pairs chat`.
//!
//! A room is a log (its owner's key names it) shared on the swarm like any other, so members meet
//! on a LAN by mDNS with no internet, over the internet by the DHT and NAT traversal, and any member
//! that has been on both sides carries the history across: there are no servers. [`model`] is the
//! sans-IO fold (operations, the [`Room`] every replica shows alike); [`RoomTicket`] is what an
//! invitation carries; [`RoomBook`] remembers the rooms joined on this machine and what was read;
//! [`Identity`] is the person this device speaks for.

pub mod model;
pub mod seal;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use pairs_base::{NodeAddr, NodeId, SecretKey, Ticket};
use pairs_log::{EntryId, LogId};
use serde::{Deserialize, Serialize};

pub use model::{Attachment, ChatOp, DeviceLink, Line, Message, OpError, Person, Position, Room};
pub use seal::{KeyBox, RoomKey};

/// An invitation to a room: its log and nodes to ask first (found on the swarm besides).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomTicket {
    /// The room's log.
    pub log: LogId,
    /// Nodes that hold the room.
    pub providers: Vec<NodeAddr>,
}

impl Ticket for RoomTicket {
    const KIND: &'static str = "room";

    fn check(&self) -> Result<(), &'static str> {
        NodeAddr::check_providers(&self.providers, RoomTicket::MAX_PROVIDERS)
    }
}

impl RoomTicket {
    /// Most providers a ticket carries.
    pub const MAX_PROVIDERS: usize = 4;

    /// Reads a room ticket, or a plain log ticket (no providers: members are found on the swarm).
    pub fn parse(text: &str) -> Result<RoomTicket, pairs_base::TicketError> {
        let text = text.trim();
        match RoomTicket::from_ticket(text) {
            Ok(ticket) => Ok(ticket),
            Err(err) => match pairs_log::LogTicket::from_ticket(text) {
                Ok(log) => Ok(RoomTicket {
                    log: log.log,
                    providers: Vec::new(),
                }),
                Err(_) => Err(err),
            },
        }
    }
}

/// A room joined on this machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookEntry {
    /// The room's log.
    pub log: LogId,
    /// Its ticket, as given or made.
    pub ticket: String,
    /// The newest message read here.
    pub read: Option<(u64, EntryId)>,
}

/// The rooms joined on this machine and how far each was read: `chat/rooms.json` in the data
/// directory, written atomically.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct RoomBook {
    /// By local name.
    pub rooms: BTreeMap<String, BookEntry>,
}

impl RoomBook {
    /// The book's file in a data directory.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("chat").join("rooms.json")
    }

    /// Reads the book (empty when there is none yet).
    pub fn load(data_dir: &Path) -> Result<RoomBook> {
        read_json(&Self::path(data_dir))
    }

    /// Writes the book.
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        write_atomic(
            &Self::path(data_dir),
            &serde_json::to_vec_pretty(self).expect("json"),
        )
    }

    /// The room a name, ticket or log id names.
    pub fn find(&self, what: &str) -> Option<(&String, &BookEntry)> {
        let what = what.trim();
        self.rooms.get_key_value(what).or_else(|| {
            let log = RoomTicket::parse(what)
                .ok()
                .map(|t| t.log)
                .or_else(|| what.parse().ok())?;
            self.rooms.iter().find(|(_, room)| room.log == log)
        })
    }

    /// Adds a room under `name`, or a free variant of it; the name used.
    pub fn add(&mut self, name: &str, log: LogId, ticket: String) -> String {
        if let Some((name, _)) = self.rooms.iter().find(|(_, room)| room.log == log) {
            return name.clone();
        }
        let base = clean_name(name);
        let mut name = base.clone();
        let mut n = 2;
        while self.rooms.contains_key(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        self.rooms.insert(
            name.clone(),
            BookEntry {
                log,
                ticket,
                read: None,
            },
        );
        name
    }
}

/// A local room name: lowercase letters, digits and dashes.
fn clean_name(name: &str) -> String {
    let cleaned: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let cleaned = cleaned.trim_matches('-').to_owned();
    if cleaned.is_empty() {
        "room".into()
    } else {
        cleaned
    }
}

/// Who this device speaks as: its name and, if linked, the person it belongs to
/// (`chat/identity.json` in the data directory).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// Display name.
    pub name: String,
    /// The person this device speaks for, signed by the person (none: the device is the person).
    pub link: Option<DeviceLink>,
}

impl Identity {
    fn path(data_dir: &Path) -> PathBuf {
        data_dir.join("chat").join("identity.json")
    }

    /// Reads this device's identity (a default one when none was set).
    pub fn load(data_dir: &Path) -> Result<Identity> {
        read_json(&Self::path(data_dir))
    }

    /// Writes it.
    pub fn save(&self, data_dir: &Path) -> Result<()> {
        write_atomic(
            &Self::path(data_dir),
            &serde_json::to_vec_pretty(self).expect("json"),
        )
    }

    /// The profile operation announcing this identity in a room.
    pub fn profile(&self) -> ChatOp {
        ChatOp::Profile {
            name: self.name.clone(),
            link: self.link.clone(),
        }
    }
}

/// A device link passed from the person's device to the new one, as text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkTicket {
    /// The device linked.
    pub device: NodeId,
    /// The person's statement.
    pub link: DeviceLink,
    /// The person's display name.
    pub name: String,
}

impl Ticket for LinkTicket {
    const KIND: &'static str = "devicelink";

    fn check(&self) -> Result<(), &'static str> {
        if self.link.verify(&self.device) {
            Ok(())
        } else {
            Err("the link's signature does not match")
        }
    }
}

impl LinkTicket {
    /// The person `person` (named `name`) vouches for `device`.
    pub fn new(person: &SecretKey, device: NodeId, name: String) -> Self {
        Self {
            device,
            link: DeviceLink::sign(person, &device),
            name,
        }
    }
}

/// Reads a JSON file (the default when there is none yet).
fn read_json<T: Default + serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} is damaged: move it away", path.display())),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(err) => Err(err).with_context(|| format!("reading {}", path.display())),
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("a file in a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_book_finds_rooms_by_name_ticket_or_id_and_keeps_names_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            SecretKey::generate().node_id(),
            SecretKey::generate().node_id(),
        );
        let ticket = RoomTicket {
            log: a,
            providers: Vec::new(),
        }
        .to_ticket();
        let mut book = RoomBook::load(dir.path()).unwrap();
        assert_eq!(book.add("LAN Party!", a, ticket.clone()), "lan-party");
        assert_eq!(book.add("lan party", b, "x".into()), "lan-party-2");
        assert_eq!(book.add("other", a, ticket.clone()), "lan-party");
        book.save(dir.path()).unwrap();
        let book = RoomBook::load(dir.path()).unwrap();
        assert_eq!(book.find("lan-party").unwrap().1.log, a);
        assert_eq!(book.find(&ticket).unwrap().0, "lan-party");
        assert_eq!(book.find(&b.to_string()).unwrap().0, "lan-party-2");
        assert!(book.find("nothing").is_none());
    }

    #[test]
    fn a_link_ticket_is_checked_when_read() {
        let (person, device) = (SecretKey::generate(), SecretKey::generate().node_id());
        let ticket = LinkTicket::new(&person, device, "camille".into()).to_ticket();
        assert!(LinkTicket::from_ticket(&ticket).is_ok());
        let mut forged = LinkTicket::new(&person, device, "camille".into());
        forged.device = SecretKey::generate().node_id();
        assert!(LinkTicket::from_ticket(&forged.to_ticket()).is_err());
    }
}

//! The sans-IO model of a room: the operations its log carries and the [`Room`] they fold into.
//!
//! A room is a log. Each device writes its own chain in it (its node key is the entry's author), so
//! two devices of one person never fork each other; a person is a key that signs a [`DeviceLink`]
//! for each of its devices. Every operation is an entry's data starting with a marker, and the
//! fold depends only on the set of entries, never on the order they arrived in: the timeline is the
//! log's order (Lamport clock, then id), names and reactions are last-writer-wins by that order,
//! and moderation is the owner's. So every replica shows the same room.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use pairs_base::{NodeId, SecretKey, Signature};
use pairs_log::{Entry, EntryId, LogId, Payload};

use super::seal::{KeyBox, MAX_BOXES, RoomKey};
use serde::{Deserialize, Serialize};

/// What marks a log entry's data as a chat operation.
const MARKER: &[u8] = b"\xffpairs-chat/1\n";
/// What a device link signs, before the person's and the device's keys.
const LINK_CONTEXT: &[u8] = b"pairs chat device link v1\n";

/// Longest message text, in bytes.
pub const MAX_TEXT: usize = 4096;
/// Longest display name or room title, in bytes.
pub const MAX_NAME: usize = 64;
/// Longest reaction, in bytes (an emoji with its modifiers).
pub const MAX_REACTION: usize = 32;
/// Longest attachment ticket, in bytes.
pub const MAX_TICKET: usize = 1024;
/// Longest sealed operation: the longest plain one, with room for its fields and the tag.
const MAX_SEALED: usize = MAX_TEXT + MAX_TICKET + 4 * MAX_NAME + 256;
/// Sealed operations kept for a key that may come later (a non-member never gets one).
const MAX_WAITING_SEALED: usize = 100_000;
/// Posts one device may make within [`FLOOD_WINDOW_MS`] before the rest count as a flood.
pub const FLOOD_POSTS: usize = 12;
/// The window of [`FLOOD_POSTS`], in milliseconds of the author's own clock.
pub const FLOOD_WINDOW_MS: u64 = 10_000;

/// A signed statement that a device (a node key) speaks for a person (another key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceLink {
    /// The person's key.
    pub person: NodeId,
    /// The person's signature over the context, its key and the device's key.
    pub signature: Vec<u8>,
}

impl DeviceLink {
    /// The person `person` vouches for `device`.
    pub fn sign(person: &SecretKey, device: &NodeId) -> Self {
        let signature = person.sign(&link_message(&person.node_id(), device));
        Self {
            person: person.node_id(),
            signature: signature.to_vec(),
        }
    }

    /// Whether this link really comes from its person, for `device`.
    pub fn verify(&self, device: &NodeId) -> bool {
        let Ok(signature) = <Signature>::try_from(self.signature.as_slice()) else {
            return false;
        };
        self.person
            .verify(&link_message(&self.person, device), &signature)
            .is_ok()
    }
}

fn link_message(person: &NodeId, device: &NodeId) -> Vec<u8> {
    let mut message = LINK_CONTEXT.to_vec();
    message.extend_from_slice(person.as_bytes());
    message.extend_from_slice(device.as_bytes());
    message
}

/// A blob offered in a room: what `pairs get` takes, with a name and size to show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// A blob ticket.
    pub ticket: String,
    /// The file's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
}

/// One operation in a room's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatOp {
    /// A message, perhaps a reply, perhaps with a file.
    Post {
        /// The text (may be empty with an attachment).
        text: String,
        /// The message answered.
        reply_to: Option<EntryId>,
        /// A file offered with it.
        attachment: Option<Attachment>,
    },
    /// A reaction set (`on`) or taken back on a message.
    React {
        /// The message.
        to: EntryId,
        /// The reaction, e.g. an emoji.
        reaction: String,
        /// Set or taken back.
        on: bool,
    },
    /// How this device's person is shown, and which person it speaks for.
    Profile {
        /// Display name.
        name: String,
        /// The person this device belongs to (none: the device is its own person).
        link: Option<DeviceLink>,
    },
    /// The room's title (only the owner's count).
    Title {
        /// The title.
        title: String,
    },
    /// The owner mutes a person (or a device with no person), or lifts it: their messages are
    /// hidden on every replica.
    Mute {
        /// The person or device.
        person: NodeId,
        /// Muted, or not any more.
        muted: bool,
    },
    /// A private room's key for an epoch, sealed to members (only the owner's count).
    Keys {
        /// The epoch.
        epoch: u32,
        /// One box per member.
        boxes: Vec<KeyBox>,
    },
    /// Another operation, sealed with a private room's key.
    Sealed {
        /// The key's epoch.
        epoch: u32,
        /// The nonce.
        nonce: [u8; 12],
        /// The operation's encoding, sealed.
        ciphertext: Vec<u8>,
    },
}

/// Why an operation cannot be appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// A field is longer than its limit.
    #[error("{what} is {len} bytes; the most is {max}")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The message says nothing.
    #[error("a message needs text or an attachment")]
    Empty,
    /// A private room whose key this device was never given.
    #[error(
        "this room is private and this device holds none of its keys: its owner admits you with `pairs chat admit ROOM ID` (your id: `pairs id`)"
    )]
    NoKey,
}

impl ChatOp {
    /// The entry data carrying this operation. Checks the limits every replica checks.
    pub fn encode(&self) -> Result<Vec<u8>, OpError> {
        self.check()?;
        let mut out = MARKER.to_vec();
        out.extend(postcard::to_stdvec(self).expect("chat ops always encode"));
        Ok(out)
    }

    /// The operation an entry's data carries; `None` for anything else or anything over a limit.
    pub fn decode(data: &[u8]) -> Option<ChatOp> {
        let op: ChatOp = postcard::from_bytes(data.strip_prefix(MARKER)?).ok()?;
        op.check().ok()?;
        Some(op)
    }

    /// This operation sealed for room `room` with its key of `epoch`.
    pub fn seal(&self, room: &LogId, epoch: u32, key: &RoomKey) -> ChatOp {
        let plain = postcard::to_stdvec(self).expect("chat ops always encode");
        let (nonce, ciphertext) = key.seal(room, epoch, &plain);
        ChatOp::Sealed {
            epoch,
            nonce,
            ciphertext,
        }
    }

    fn check(&self) -> Result<(), OpError> {
        let limit = |what, text: &str, max| {
            if text.len() > max {
                Err(OpError::TooLong {
                    what,
                    len: text.len(),
                    max,
                })
            } else {
                Ok(())
            }
        };
        match self {
            ChatOp::Post {
                text, attachment, ..
            } => {
                limit("the message", text, MAX_TEXT)?;
                if let Some(file) = attachment {
                    limit("the attachment's ticket", &file.ticket, MAX_TICKET)?;
                    limit("the attachment's name", &file.name, MAX_NAME * 4)?;
                } else if text.trim().is_empty() {
                    return Err(OpError::Empty);
                }
                Ok(())
            }
            ChatOp::React { reaction, .. } => limit("the reaction", reaction, MAX_REACTION),
            ChatOp::Profile { name, .. } => limit("the name", name, MAX_NAME),
            ChatOp::Title { title } => limit("the title", title, MAX_NAME),
            ChatOp::Mute { .. } => Ok(()),
            ChatOp::Keys { boxes, .. } if boxes.len() > MAX_BOXES => Err(OpError::TooLong {
                what: "the key share",
                len: boxes.len(),
                max: MAX_BOXES,
            }),
            ChatOp::Keys { .. } => Ok(()),
            ChatOp::Sealed { ciphertext, .. } if ciphertext.len() > MAX_SEALED => {
                Err(OpError::TooLong {
                    what: "the sealed message",
                    len: ciphertext.len(),
                    max: MAX_SEALED,
                })
            }
            ChatOp::Sealed { .. } => Ok(()),
        }
    }
}

/// Where an entry sits in the log's order.
pub type Position = (u64, EntryId);

/// A message as shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The entry.
    pub id: EntryId,
    /// Its place in the room's order.
    pub position: Position,
    /// The device that wrote it.
    pub device: NodeId,
    /// The person it speaks for (the device itself when not linked).
    pub person: NodeId,
    /// The person's display name now (empty when none was given).
    pub name: String,
    /// The author's clock when written, milliseconds since the Unix epoch.
    pub time: u64,
    /// The text.
    pub text: String,
    /// The message answered.
    pub reply_to: Option<EntryId>,
    /// A file offered with it.
    pub attachment: Option<Attachment>,
    /// Reactions: each with the number of people who set it, most first.
    pub reactions: Vec<(String, usize)>,
    /// The device wrote two entries with one sequence number (e.g. a data directory restored from
    /// a backup and used again): both branches are kept and flagged.
    pub forked: bool,
}

/// A line of the timeline: a message, or a run of one author's messages held back as a flood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A message.
    Message(Box<Message>),
    /// Messages held back: more than [`FLOOD_POSTS`] in [`FLOOD_WINDOW_MS`] from one device.
    Flood {
        /// The person.
        person: NodeId,
        /// Their name.
        name: String,
        /// How many messages.
        count: usize,
        /// Where the run starts.
        first: Position,
    },
}

/// A post as stored in the fold (names and reactions are resolved when shown).
#[derive(Debug, Clone)]
struct Post {
    id: EntryId,
    device: NodeId,
    seq: u64,
    time: u64,
    text: String,
    reply_to: Option<EntryId>,
    attachment: Option<Attachment>,
    flood: bool,
}

/// A device's state in the fold.
#[derive(Debug, Default)]
struct Device {
    /// Its newest profile: (where, name, person).
    profile: Option<(Position, String, Option<NodeId>)>,
    /// The author clock of its last posts (monotone), to spot floods.
    recent: VecDeque<u64>,
    /// Sequence numbers seen, to spot forks.
    seqs: HashMap<u64, EntryId>,
    forked: bool,
}

/// A message's reactions: (reaction, device) -> (where the newest word on it is, set or not).
type Reactions = HashMap<(String, NodeId), (Position, bool)>;

/// A room folded from its log's entries.
#[derive(Debug)]
pub struct Room {
    owner: LogId,
    open: bool,
    title: Option<(Position, String)>,
    posts: BTreeMap<Position, Post>,
    positions: HashMap<EntryId, Position>,
    devices: HashMap<NodeId, Device>,
    reactions: HashMap<EntryId, Reactions>,
    mutes: HashMap<NodeId, (Position, bool)>,
    /// The owner's removals: writer -> last sequence number that still counts (none: nothing).
    cuts: HashMap<NodeId, Option<u64>>,
    seen: HashSet<EntryId>,
    ignored: usize,
    /// Whose keys open a private room's boxes.
    reader: Option<SecretKey>,
    /// The keys this reader holds, by epoch.
    keys: BTreeMap<u32, RoomKey>,
    private: bool,
    /// Sealed operations no key here opens yet, by epoch: a member admitted later gets the key
    /// after them, and opens them then.
    sealed: HashMap<u32, Vec<Entry>>,
    /// How many [`Room::sealed`] holds.
    unreadable: usize,
    /// Posts added since [`Room::take_new`] last ran.
    fresh: Vec<Position>,
}

impl Room {
    /// An empty room of the log `owner`.
    pub fn new(owner: LogId) -> Self {
        Self {
            owner,
            open: false,
            title: None,
            posts: BTreeMap::new(),
            positions: HashMap::new(),
            devices: HashMap::new(),
            reactions: HashMap::new(),
            mutes: HashMap::new(),
            cuts: HashMap::new(),
            seen: HashSet::new(),
            ignored: 0,
            reader: None,
            keys: BTreeMap::new(),
            private: false,
            sealed: HashMap::new(),
            unreadable: 0,
            fresh: Vec::new(),
        }
    }

    /// An empty room read with `reader`'s key: a private room's messages open for a member.
    pub fn with_reader(owner: LogId, reader: SecretKey) -> Self {
        Self {
            reader: Some(reader),
            ..Self::new(owner)
        }
    }

    /// Folds entries in, in any order that keeps each author's entries in sequence (the order a log
    /// stores and sends them in). An entry seen before is skipped. Returns how many new posts.
    pub fn apply<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) -> usize {
        let mut posts = 0;
        for entry in entries {
            if !self.seen.insert(entry.id()) {
                continue;
            }
            if self.apply_one(entry) {
                posts += 1;
            }
        }
        posts
    }

    fn apply_one(&mut self, entry: &Entry) -> bool {
        let body = entry.body();
        let device = self.devices.entry(body.author).or_default();
        if let Some(other) = device.seqs.insert(body.seq, entry.id())
            && other != entry.id()
        {
            device.forked = true;
        }
        let data = match &body.payload {
            Payload::Data(data) => data,
            Payload::Open => {
                self.open = true;
                return false;
            }
            Payload::RemoveWriter { writer, keep_until } if body.author == self.owner => {
                // Several removals: the strictest wins, whatever the order they arrive in.
                let cut = self.cuts.entry(*writer).or_insert(*keep_until);
                *cut = match (*cut, *keep_until) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    _ => None,
                };
                return false;
            }
            Payload::AddWriter(_) | Payload::RemoveWriter { .. } => return false,
        };
        let Some(op) = ChatOp::decode(data) else {
            self.ignored += 1;
            return false;
        };
        let op = match op {
            ChatOp::Sealed {
                epoch,
                nonce,
                ciphertext,
            } => {
                let opened = self
                    .keys
                    .get(&epoch)
                    .and_then(|key| key.open(&self.owner, epoch, &nonce, &ciphertext))
                    .and_then(|plain| postcard::from_bytes::<ChatOp>(&plain).ok())
                    .filter(|op| {
                        op.check().is_ok()
                            && !matches!(op, ChatOp::Sealed { .. } | ChatOp::Keys { .. })
                    });
                match opened {
                    Some(op) => op,
                    None if self.keys.contains_key(&epoch) => {
                        // Our key, and it does not open: forged or damaged, like any bad op.
                        self.ignored += 1;
                        return false;
                    }
                    None => {
                        if self.unreadable < MAX_WAITING_SEALED {
                            self.sealed.entry(epoch).or_default().push(entry.clone());
                            self.unreadable += 1;
                        }
                        return false;
                    }
                }
            }
            op => op,
        };
        self.apply_op(entry, op)
    }

    fn apply_op(&mut self, entry: &Entry, op: ChatOp) -> bool {
        let body = entry.body();
        let position = (body.clock, entry.id());
        let from_owner = body.author == self.owner;
        let device = self.devices.entry(body.author).or_default();
        match op {
            ChatOp::Post {
                text,
                reply_to,
                attachment,
            } => {
                // The author's own clock, never going back, decides what is a flood: it is the
                // same on every replica, and going faster than real time only floods sooner.
                let time = device
                    .recent
                    .back()
                    .map_or(body.timestamp, |last| (*last).max(body.timestamp));
                let flood = device.recent.len() >= FLOOD_POSTS
                    && time.saturating_sub(device.recent[device.recent.len() - FLOOD_POSTS])
                        < FLOOD_WINDOW_MS;
                device.recent.push_back(time);
                if device.recent.len() > FLOOD_POSTS {
                    device.recent.pop_front();
                }
                self.positions.insert(entry.id(), position);
                self.fresh.push(position);
                self.posts.insert(
                    position,
                    Post {
                        id: entry.id(),
                        device: body.author,
                        seq: body.seq,
                        time: body.timestamp,
                        text,
                        reply_to,
                        attachment,
                        flood,
                    },
                );
                return true;
            }
            ChatOp::React { to, reaction, on } => {
                let slot = self
                    .reactions
                    .entry(to)
                    .or_default()
                    .entry((reaction, body.author))
                    .or_insert((position, on));
                if slot.0 < position {
                    *slot = (position, on);
                }
            }
            ChatOp::Profile { name, link } => {
                let person = link.filter(|l| l.verify(&body.author)).map(|l| l.person);
                if device
                    .profile
                    .as_ref()
                    .is_none_or(|(at, ..)| *at < position)
                {
                    device.profile = Some((position, name, person));
                }
            }
            ChatOp::Title { title } if from_owner => {
                if self.title.as_ref().is_none_or(|(at, _)| *at < position) {
                    self.title = Some((position, title));
                }
            }
            ChatOp::Mute { person, muted } if from_owner => {
                let slot = self.mutes.entry(person).or_insert((position, muted));
                if slot.0 < position {
                    *slot = (position, muted);
                }
            }
            ChatOp::Keys { epoch, boxes } if from_owner => {
                self.private = true;
                if !self.keys.contains_key(&epoch)
                    && let Some(reader) = &self.reader
                    && let Some(key) = boxes.iter().find_map(|b| b.open(reader))
                {
                    self.keys.insert(epoch, key);
                    // What arrived sealed with it before opens now, in the order it came.
                    let waiting = self.sealed.remove(&epoch).unwrap_or_default();
                    self.unreadable -= waiting.len();
                    for entry in &waiting {
                        self.apply_one(entry);
                    }
                }
            }
            ChatOp::Title { .. }
            | ChatOp::Mute { .. }
            | ChatOp::Keys { .. }
            | ChatOp::Sealed { .. } => self.ignored += 1,
        }
        false
    }

    /// Whether the room is private (its owner shares keys; messages are sealed).
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// The newest key held here and its epoch.
    pub fn current_key(&self) -> Option<(u32, &RoomKey)> {
        self.keys
            .iter()
            .next_back()
            .map(|(epoch, key)| (*epoch, key))
    }

    /// Sealed operations no key held here opens (a private room read by a non-member, or
    /// messages from before this member's first epoch).
    pub fn unreadable(&self) -> usize {
        self.unreadable
    }

    /// The operation to append for `op`: sealed with the newest key in a private room.
    pub fn prepare(&self, op: ChatOp) -> Result<ChatOp, OpError> {
        op.check()?;
        if !self.private {
            return Ok(op);
        }
        let (epoch, key) = self.current_key().ok_or(OpError::NoKey)?;
        Ok(op.seal(&self.owner, epoch, key))
    }

    /// The highest sequence number a device wrote here (for a removal that keeps what it wrote).
    pub fn last_seq(&self, device: &NodeId) -> Option<u64> {
        self.devices.get(device)?.seqs.keys().max().copied()
    }

    /// The log's owner.
    pub fn owner(&self) -> LogId {
        self.owner
    }

    /// Whether anyone with the ticket may post.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The title the owner gave, if any.
    pub fn title(&self) -> Option<&str> {
        self.title.as_ref().map(|(_, title)| title.as_str())
    }

    /// Entries that were not chat operations, or broke a rule (ignored, as on every replica).
    pub fn ignored(&self) -> usize {
        self.ignored
    }

    /// The person a device speaks for: the person of its newest profile, else itself.
    pub fn person_of(&self, device: &NodeId) -> NodeId {
        self.devices
            .get(device)
            .and_then(|d| d.profile.as_ref())
            .and_then(|(_, _, person)| *person)
            .unwrap_or(*device)
    }

    /// What a device's newest profile says: its name and the person it speaks for (itself when
    /// not linked). None before its first profile.
    pub fn profile_of(&self, device: &NodeId) -> Option<(String, NodeId)> {
        let (_, name, person) = self.devices.get(device)?.profile.as_ref()?;
        Some((name.clone(), person.unwrap_or(*device)))
    }

    /// A person's display name: the newest profile among its devices (empty when none).
    pub fn name_of(&self, person: &NodeId) -> String {
        self.devices
            .iter()
            .filter(|(id, _)| self.person_of(id) == *person)
            .filter_map(|(_, d)| d.profile.as_ref())
            .max_by_key(|(at, ..)| *at)
            .map(|(_, name, _)| name.clone())
            .unwrap_or_default()
    }

    /// Whether the owner has muted this person (or device).
    pub fn is_muted(&self, person: &NodeId) -> bool {
        self.mutes.get(person).is_some_and(|(_, muted)| *muted)
    }

    /// The people who have written here: (person, name, devices, muted, forked).
    pub fn people(&self) -> Vec<Person> {
        let mut people: BTreeMap<NodeId, Person> = BTreeMap::new();
        for (id, device) in &self.devices {
            let person = self.person_of(id);
            let entry = people.entry(person).or_insert_with(|| Person {
                id: person,
                name: self.name_of(&person),
                devices: Vec::new(),
                muted: self.is_muted(&person) || self.is_muted(id),
                forked: false,
            });
            entry.devices.push(*id);
            entry.forked |= device.forked;
        }
        people.into_values().collect()
    }

    /// Number of messages (muted or flooding authors' included).
    pub fn len(&self) -> usize {
        self.posts.len()
    }

    /// Whether the room has no messages.
    pub fn is_empty(&self) -> bool {
        self.posts.is_empty()
    }

    /// One message by id, as shown (also when hidden).
    pub fn message(&self, id: &EntryId) -> Option<Message> {
        let position = self.positions.get(id)?;
        Some(self.show(position, &self.posts[position]))
    }

    /// The timeline after `after` (everything for `None`), oldest first: muted people's messages
    /// left out, and each run of a device's flood folded into one line.
    pub fn timeline(&self, after: Option<Position>) -> Vec<Line> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        self.fold_lines(self.posts.range((from, Unbounded)), usize::MAX)
    }

    /// The newest `count` lines of the timeline, oldest first (what a screen shows, without
    /// going through the whole history).
    pub fn tail(&self, count: usize) -> Vec<Line> {
        let mut lines = self.fold_lines(self.posts.iter().rev(), count);
        lines.reverse();
        lines
    }

    /// Lines of `posts` in the order given, up to `count` of them.
    fn fold_lines<'a>(
        &self,
        posts: impl Iterator<Item = (&'a Position, &'a Post)>,
        count: usize,
    ) -> Vec<Line> {
        let mut lines = Vec::new();
        for (position, post) in posts {
            if self.is_hidden(post) {
                continue;
            }
            let person = self.person_of(&post.device);
            if post.flood {
                if let Some(Line::Flood {
                    person: last,
                    count,
                    first,
                    ..
                }) = lines.last_mut()
                    && *last == person
                {
                    *count += 1;
                    *first = (*first).min(*position);
                    continue;
                }
                if lines.len() == count {
                    break;
                }
                lines.push(Line::Flood {
                    person,
                    name: self.name_of(&person),
                    count: 1,
                    first: *position,
                });
                continue;
            }
            if lines.len() == count {
                break;
            }
            lines.push(Line::Message(Box::new(self.show(position, post))));
        }
        lines
    }

    /// The newest message's position.
    pub fn last_position(&self) -> Option<Position> {
        self.posts.keys().next_back().copied()
    }

    /// Messages after `position` that a reader has not seen (muted and flooding authors' left out).
    pub fn unread_after(&self, position: Option<Position>) -> usize {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = position.map_or(Unbounded, Excluded);
        self.posts
            .range((from, Unbounded))
            .filter(|(_, post)| !post.flood && !self.is_hidden(post))
            .count()
    }

    /// The lines of the posts added since the last call, in the room's order (a flood's run as
    /// one line per run within them); muted and removed writers' posts left out.
    pub fn take_new(&mut self) -> Vec<Line> {
        let mut fresh = std::mem::take(&mut self.fresh);
        fresh.sort_unstable();
        let posts: Vec<(&Position, &Post)> = fresh
            .iter()
            .filter_map(|position| self.posts.get_key_value(position))
            .collect();
        self.fold_lines(posts.into_iter(), usize::MAX)
    }

    /// Whether a post is hidden: its person or device muted, or its writer removed before it.
    fn is_hidden(&self, post: &Post) -> bool {
        let person = self.person_of(&post.device);
        self.is_muted(&person) || self.is_muted(&post.device) || self.is_cut(post)
    }

    /// Whether the owner removed the post's writer before it.
    fn is_cut(&self, post: &Post) -> bool {
        match self.cuts.get(&post.device) {
            None => false,
            Some(None) => true,
            Some(Some(last)) => post.seq > *last,
        }
    }

    fn show(&self, position: &Position, post: &Post) -> Message {
        let person = self.person_of(&post.device);
        let mut counts: BTreeMap<&str, HashSet<NodeId>> = BTreeMap::new();
        if let Some(reactions) = self.reactions.get(&post.id) {
            for ((reaction, device), (_, on)) in reactions {
                if *on {
                    counts
                        .entry(reaction.as_str())
                        .or_default()
                        .insert(self.person_of(device));
                }
            }
        }
        let mut reactions: Vec<(String, usize)> = counts
            .into_iter()
            .map(|(reaction, people)| (reaction.to_owned(), people.len()))
            .collect();
        reactions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        Message {
            id: post.id,
            position: *position,
            device: post.device,
            person,
            name: self.name_of(&person),
            time: post.time,
            text: post.text.clone(),
            reply_to: post.reply_to,
            attachment: post.attachment.clone(),
            reactions,
            forked: self.devices.get(&post.device).is_some_and(|d| d.forked),
        }
    }
}

/// Someone who wrote in a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    /// The person's key (a device's own when it is not linked).
    pub id: NodeId,
    /// Display name (empty when none was given).
    pub name: String,
    /// Their devices that wrote here.
    pub devices: Vec<NodeId>,
    /// Muted by the owner.
    pub muted: bool,
    /// One of their devices forked its chain (both branches kept).
    pub forked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::seal::{KeyBox, RoomKey};
    use pairs_log::Log;

    fn post(text: &str) -> Payload {
        Payload::Data(
            ChatOp::Post {
                text: text.into(),
                reply_to: None,
                attachment: None,
            }
            .encode()
            .unwrap(),
        )
    }

    fn op(op: ChatOp) -> Payload {
        Payload::Data(op.encode().unwrap())
    }

    fn texts(room: &Room) -> Vec<String> {
        room.timeline(None)
            .into_iter()
            .map(|line| match line {
                Line::Message(m) => m.text,
                Line::Flood { count, .. } => format!("[{count} held back]"),
            })
            .collect()
    }

    #[test]
    fn every_order_of_the_same_entries_gives_the_same_room() {
        let owner = SecretKey::generate();
        let (alice, bob) = (SecretKey::generate(), SecretKey::generate());
        let log = Log::in_memory(owner.node_id());
        log.append(&owner, Payload::Open).unwrap();
        log.append(
            &owner,
            op(ChatOp::Title {
                title: "lan party".into(),
            }),
        )
        .unwrap();
        let hello = log.append(&alice, post("hello")).unwrap();
        log.append(&bob, post("hi alice")).unwrap();
        for (who, name) in [(&alice, "alice"), (&bob, "bob")] {
            log.append(
                who,
                op(ChatOp::Profile {
                    name: name.into(),
                    link: None,
                }),
            )
            .unwrap();
        }
        log.append(
            &bob,
            op(ChatOp::React {
                to: hello,
                reaction: "👍".into(),
                on: true,
            }),
        )
        .unwrap();
        log.append(
            &alice,
            op(ChatOp::React {
                to: hello,
                reaction: "👍".into(),
                on: true,
            }),
        )
        .unwrap();
        // A stranger's entry in a closed log cannot exist; junk data is ignored.
        log.append(&alice, Payload::Data(b"not chat".to_vec()))
            .unwrap();
        let entries = log.entries().unwrap();
        let mut forward = Room::new(owner.node_id());
        forward.apply(&entries);
        // Another valid order: authors' chains kept, interleaving changed.
        let mut shuffled: Vec<&Entry> = entries.iter().collect();
        shuffled.sort_by_key(|e| (e.body().author, e.body().seq));
        let mut other = Room::new(owner.node_id());
        other.apply(shuffled);
        assert_eq!(forward.timeline(None), other.timeline(None));
        assert_eq!(texts(&forward), ["hello", "hi alice"]);
        let Line::Message(first) = &forward.timeline(None)[0] else {
            panic!("a message")
        };
        assert_eq!(first.name, "alice");
        assert_eq!(first.reactions, vec![("👍".to_string(), 2)]);
        assert_eq!(forward.title(), Some("lan party"));
        assert!(forward.is_open());
        assert_eq!(forward.ignored(), 1);
    }

    #[test]
    fn two_devices_of_one_person_show_as_one_and_forks_are_flagged_not_fatal() {
        let owner = SecretKey::generate();
        let (person, laptop, phone) = (
            SecretKey::generate(),
            SecretKey::generate(),
            SecretKey::generate(),
        );
        let log = Log::in_memory(owner.node_id());
        log.append(&owner, Payload::Open).unwrap();
        for device in [&laptop, &phone] {
            log.append(
                device,
                op(ChatOp::Profile {
                    name: "camille".into(),
                    link: Some(DeviceLink::sign(&person, &device.node_id())),
                }),
            )
            .unwrap();
            log.append(device, post("from a device")).unwrap();
        }
        // A forged link (signed for another device) is ignored.
        let mallory = SecretKey::generate();
        log.append(
            &mallory,
            op(ChatOp::Profile {
                name: "camille".into(),
                link: Some(DeviceLink::sign(&person, &laptop.node_id())),
            }),
        )
        .unwrap();
        let mut room = Room::new(owner.node_id());
        room.apply(&log.entries().unwrap());
        let people = room.people();
        let camille = people.iter().find(|p| p.id == person.node_id()).unwrap();
        assert_eq!(camille.devices.len(), 2);
        assert_eq!(room.person_of(&mallory.node_id()), mallory.node_id());

        // The phone's data restored from an old copy: it writes its sequence number 1 again.
        let stale = Log::in_memory(owner.node_id());
        let entries = log.entries().unwrap();
        let keep: Vec<_> = entries
            .iter()
            .filter(|e| !(e.body().author == phone.node_id() && e.body().seq >= 1))
            .filter(|e| e.body().author != mallory.node_id())
            .cloned()
            .map(|entry| pairs_log::store::Verified { entry, seal: None })
            .collect();
        stale.apply(keep, 0).unwrap();
        let forked = stale.append(&phone, post("after the restore")).unwrap();
        log.apply(
            vec![pairs_log::store::Verified {
                entry: stale.get(&forked).unwrap().unwrap(),
                seal: None,
            }],
            0,
        )
        .unwrap();
        let mut room = Room::new(owner.node_id());
        room.apply(&log.entries().unwrap());
        assert!(texts(&room).contains(&"after the restore".to_string()));
        assert_eq!(texts(&room).len(), 3, "nothing lost: {:?}", texts(&room));
        assert!(
            room.people()
                .iter()
                .any(|p| p.id == person.node_id() && p.forked)
        );
    }

    #[test]
    fn a_flood_is_folded_and_the_owner_mutes_it_on_every_replica() {
        let owner = SecretKey::generate();
        let (flooder, honest) = (SecretKey::generate(), SecretKey::generate());
        let log = Log::in_memory(owner.node_id());
        log.append(&owner, Payload::Open).unwrap();
        for i in 0..200 {
            log.append(&flooder, post(&format!("spam {i}"))).unwrap();
        }
        log.append(&honest, post("still here")).unwrap();
        let mut room = Room::new(owner.node_id());
        room.apply(&log.entries().unwrap());
        let lines = texts(&room);
        assert_eq!(lines.len(), FLOOD_POSTS + 2, "{lines:?}");
        assert_eq!(
            lines[FLOOD_POSTS],
            format!("[{} held back]", 200 - FLOOD_POSTS)
        );
        assert_eq!(lines.last().unwrap(), "still here");
        assert_eq!(room.tail(2), room.timeline(None)[FLOOD_POSTS..].to_vec());
        // Only the owner's mutes count.
        log.append(
            &honest,
            op(ChatOp::Mute {
                person: flooder.node_id(),
                muted: true,
            }),
        )
        .unwrap();
        room.apply(&log.entries().unwrap());
        assert_eq!(texts(&room).len(), FLOOD_POSTS + 2);
        log.append(
            &owner,
            op(ChatOp::Mute {
                person: flooder.node_id(),
                muted: true,
            }),
        )
        .unwrap();
        room.apply(&log.entries().unwrap());
        assert_eq!(texts(&room), ["still here"]);
    }

    #[test]
    fn a_private_room_opens_for_members_only_and_a_removal_starts_an_epoch_they_cannot_read() {
        let owner = SecretKey::generate();
        let (alice, bob, outsider) = (
            SecretKey::generate(),
            SecretKey::generate(),
            SecretKey::generate(),
        );
        let log = Log::in_memory(owner.node_id());
        let first = RoomKey::generate();
        let keys = |epoch, key: &RoomKey, members: &[&SecretKey]| {
            op(ChatOp::Keys {
                epoch,
                boxes: members
                    .iter()
                    .map(|m| KeyBox::seal(key, m.node_id()).unwrap())
                    .collect(),
            })
        };
        log.append(&owner, keys(0, &first, &[&owner, &alice, &bob]))
            .unwrap();
        for member in [&alice, &bob] {
            log.append(&owner, Payload::AddWriter(member.node_id()))
                .unwrap();
        }
        let fold = |reader: &SecretKey| {
            let mut room = Room::with_reader(owner.node_id(), reader.clone());
            room.apply(&log.entries().unwrap());
            room
        };
        let sealed = |room: &Room, text: &str| {
            Payload::Data(
                room.prepare(ChatOp::Post {
                    text: text.into(),
                    reply_to: None,
                    attachment: None,
                })
                .unwrap()
                .encode()
                .unwrap(),
            )
        };
        log.append(&alice, sealed(&fold(&alice), "the plan"))
            .unwrap();
        assert_eq!(texts(&fold(&bob)), ["the plan"]);
        let outside = fold(&outsider);
        assert!(outside.is_private());
        assert_eq!(texts(&outside), Vec::<String>::new());
        assert_eq!(outside.unreadable(), 1);
        assert_eq!(
            outside.prepare(ChatOp::Title { title: "x".into() }),
            Err(OpError::NoKey)
        );
        let raw: Vec<u8> = log
            .entries()
            .unwrap()
            .iter()
            .flat_map(|e| e.body().encode())
            .collect();
        assert!(!raw.windows(8).any(|w| w == b"the plan"));
        // A member admitted later gets the key after the messages, and opens them then.
        let carol = SecretKey::generate();
        log.append(&owner, keys(0, &first, &[&carol])).unwrap();
        let late = fold(&carol);
        assert_eq!(texts(&late), ["the plan"]);
        assert_eq!(late.unreadable(), 0);

        // Bob is removed: what he wrote stays, the next epoch is sealed to the others only.
        let kept = fold(&owner).last_seq(&bob.node_id());
        log.append(
            &owner,
            Payload::RemoveWriter {
                writer: bob.node_id(),
                keep_until: kept,
            },
        )
        .unwrap();
        log.append(&owner, keys(1, &RoomKey::generate(), &[&owner, &alice]))
            .unwrap();
        log.append(&alice, sealed(&fold(&alice), "after bob"))
            .unwrap();
        assert_eq!(texts(&fold(&owner)), ["the plan", "after bob"]);
        assert_eq!(texts(&fold(&bob)), ["the plan"]);
        assert_eq!(fold(&bob).current_key().unwrap().0, 0);
    }

    #[test]
    fn limits_are_checked_when_writing_and_when_reading() {
        let long = "x".repeat(MAX_TEXT + 1);
        let too_long = ChatOp::Post {
            text: long,
            reply_to: None,
            attachment: None,
        };
        assert!(matches!(too_long.encode(), Err(OpError::TooLong { .. })));
        let empty = ChatOp::Post {
            text: "  ".into(),
            reply_to: None,
            attachment: None,
        };
        assert_eq!(empty.encode(), Err(OpError::Empty));
        // A replica decoding a hand-made oversized op ignores it.
        let mut forged = MARKER.to_vec();
        forged.extend(postcard::to_stdvec(&too_long).unwrap());
        assert_eq!(ChatOp::decode(&forged), None);
        assert_eq!(ChatOp::decode(b"hello"), None);
    }
}

//! `pairs chat`: rooms on logs, through the running node when there is one, else with a node of
//! this command's own for as long as it runs. The terminal UI lives in `chat_tui`; this module has
//! the subcommands, the plain line mode and what both share ([`ChatNode`]).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use pairs::Node;
use pairs::base::{NodeAddr, NodeId, SecretKey, Ticket as _};
use pairs::chat::{
    Attachment, BookEntry, ChatOp, DeviceLink, Identity, KeyBox, Line, LinkTicket, Message,
    OpError, Room, RoomBook, RoomKey, RoomTicket,
};
use pairs::control::Client;
use pairs::log::{EntryId, LogId, Payload};
use tokio::io::AsyncBufReadExt as _;
use tokio::sync::mpsc;

use super::stop_requested;
use crate::cli::{ChatArgs, ChatCommand, DiscoveryArgs};

/// What one followed room's stream brought (entries, or the end of what was held), or why it
/// ended.
pub(crate) type Followed = (usize, Result<pairs::control::Followed>);

/// The node a chat talks through: the running one, or one of its own for this command's run.
pub(crate) struct ChatNode {
    home: PathBuf,
    data_dir: Option<PathBuf>,
    node: Option<Node>,
    commands: Client,
    /// This node's id.
    pub me: NodeId,
    /// This node's key: it opens private rooms' keys sealed to this node.
    reader: SecretKey,
}

impl ChatNode {
    /// Connects to the running node, else starts one (online: rooms are shared on the swarm).
    pub(crate) async fn start(
        data_dir: Option<&Path>,
        isolated: bool,
        discovery: &DiscoveryArgs,
    ) -> Result<Self> {
        let home = pairs::home::data_dir(data_dir)?;
        let (node, mut commands) = match Client::connect(&home).await? {
            Some(client) => (None, client),
            None => {
                // The data directory's own key: a device's posts keep one author across runs.
                let node = super::node_with(data_dir, isolated, discovery, false).await?;
                let client = Client::in_process(node.clone());
                (Some(node), client)
            }
        };
        let me = commands.status().await?.id;
        let reader = pairs::home::node_key(data_dir)?;
        Ok(Self {
            home,
            data_dir: data_dir.map(Path::to_path_buf),
            node,
            commands,
            me,
            reader,
        })
    }

    /// An empty room, read with this node's key.
    pub(crate) fn room(&self, log: LogId) -> Room {
        Room::with_reader(log, self.reader.clone())
    }

    /// Whether a separate `pairs node` answers (else this process is the node).
    pub(crate) fn through_running_node(&self) -> bool {
        self.node.is_none()
    }

    /// The data directory.
    pub(crate) fn home(&self) -> &Path {
        &self.home
    }

    /// Another connection to the same node (a followed room takes one for itself).
    async fn connection(&self) -> Result<Client> {
        match &self.node {
            Some(node) => Ok(Client::in_process(node.clone())),
            None => Client::connect(&self.home)
                .await?
                .context("the running node stopped"),
        }
    }

    /// Shares the room on the swarm (remembered by the node) and dials the ticket's providers.
    pub(crate) async fn open(&mut self, room: &BookEntry) -> Result<()> {
        let providers = RoomTicket::parse(&room.ticket)
            .map(|t| t.providers)
            .unwrap_or_default();
        let peers = providers.iter().map(NodeAddr::to_ticket).collect();
        self.commands.share(room.log, peers).await
    }

    /// Streams the room's entries (all, then new ones) to `tx`, tagged `index`.
    pub(crate) async fn follow(
        &self,
        log: LogId,
        index: usize,
        tx: mpsc::Sender<Followed>,
    ) -> Result<()> {
        let mut client = self.connection().await?;
        client.start_entries(log, true).await?;
        tokio::spawn(async move {
            loop {
                let item = match client.next_followed().await {
                    Ok(pairs::control::Followed::End) => {
                        Err(anyhow::anyhow!("the node stopped following the room"))
                    }
                    other => other,
                };
                let end = item.is_err();
                if tx.send((index, item)).await.is_err() || end {
                    break;
                }
            }
        });
        Ok(())
    }

    /// Posts an operation (sealed in a private room); its entry's id once committed here.
    pub(crate) async fn post(&mut self, log: LogId, room: &Room, op: &ChatOp) -> Result<EntryId> {
        let data = room.prepare(op.clone())?.encode()?;
        let ids = self
            .commands
            .append(log, vec![Payload::Data(data)])
            .await
            .map_err(explain_not_a_writer)?;
        ids.into_iter().next().context("the node appended nothing")
    }

    /// Adds a file to the node's blobs, shared, for a post.
    pub(crate) async fn attach(&mut self, path: &Path) -> Result<Attachment> {
        attach(&mut self.commands, path).await
    }

    /// Peers replicating the room now.
    pub(crate) async fn peers(&mut self, log: LogId) -> Result<Vec<NodeId>> {
        Ok(self.commands.info(log).await?.peers)
    }

    /// The ticket of a room with this node as its provider.
    pub(crate) async fn invite(&mut self, log: LogId) -> Result<String> {
        let status = self.commands.status().await?;
        let providers = status
            .ticket
            .and_then(|t| NodeAddr::from_ticket(&t).ok())
            .into_iter()
            .collect();
        Ok(RoomTicket { log, providers }.to_ticket())
    }

    /// Posts this device's profile in the room if the room shows it otherwise.
    pub(crate) async fn introduce(&mut self, log: LogId, room: &Room) -> Result<()> {
        let writer = self.writer(log)?;
        let Some((name, link)) = self.profile_for(writer)? else {
            return Ok(());
        };
        let person = link.as_ref().map_or(writer, |l| l.person);
        if room.profile_of(&writer) == Some((name.clone(), person)) {
            return Ok(());
        }
        self.post(log, room, &ChatOp::Profile { name, link })
            .await
            .map(|_| ())
    }

    /// Who this node writes to `log` as: the room's key in a room it made, else its own.
    fn writer(&self, log: LogId) -> Result<NodeId> {
        Ok(pairs::home::writer_key(self.data_dir.as_deref(), &log)?.node_id())
    }

    /// The profile this device shows in `log` (none when no name was ever set).
    fn profile(&self, log: LogId) -> Result<Option<ChatOp>> {
        Ok(self
            .profile_for(self.writer(log)?)?
            .map(|(name, link)| ChatOp::Profile { name, link }))
    }

    /// The name and device link this device shows when writing as `writer`.
    fn profile_for(&self, writer: NodeId) -> Result<Option<(String, Option<DeviceLink>)>> {
        let identity = Identity::load(&self.home)?;
        if identity.name.is_empty() && identity.link.is_none() {
            return Ok(None);
        }
        let link = if writer == self.me {
            identity.link
        } else if identity.link.is_none() {
            // In a room it made, the node writes with the room's key: the node's key vouches for
            // it, so both show as one person.
            Some(DeviceLink::sign(&self.reader, &writer))
        } else {
            None
        };
        Ok(Some((identity.name, link)))
    }

    /// Stops the node of this run (a running node keeps going).
    pub(crate) async fn shutdown(self) {
        if let Some(node) = self.node {
            node.shutdown().await;
        }
    }
}

fn explain_not_a_writer(err: anyhow::Error) -> anyhow::Error {
    let text = format!("{err:#}");
    if text.contains("not a writer") {
        err.context(
            "this room is closed: its owner admits you with `pairs chat admit ROOM ID` (your id: `pairs id`)",
        )
    } else {
        err
    }
}

fn explain_not_owner(err: anyhow::Error) -> anyhow::Error {
    if format!("{err:#}").contains("only the owner") {
        err.context(
            "only the room's owner admits and removes members, from the machine that made it",
        )
    } else {
        err
    }
}

/// `pairs chat remove ROOM NODE-ID`: the member's later posts stop counting; a private room
/// moves to a new key sealed to everyone else.
async fn remove(data_dir: Option<&Path>, room: &str, node_id: &str) -> Result<()> {
    let home = pairs::home::data_dir(data_dir)?;
    let (name, entry) = find(&home, room)?;
    let member: NodeId = node_id
        .parse()
        .context("NODE-ID is a member's id (`pairs chat who ROOM` lists their devices)")?;
    let mut client = super::control(data_dir).await?;
    let room_now = read_room(&mut client, entry.log, data_dir).await?;
    let info = client.info(entry.log).await?;
    if !info
        .writers
        .iter()
        .any(|(w, removed)| *w == member && !removed)
    {
        bail!("{} is not a member who may post in {name}", member.short());
    }
    let mut payloads = vec![Payload::RemoveWriter {
        writer: member,
        keep_until: room_now.last_seq(&member),
    }];
    if room_now.is_private() {
        let (epoch, _) = room_now.current_key().ok_or(OpError::NoKey)?;
        let key = RoomKey::generate();
        let me = pairs::home::node_key(data_dir)?.node_id();
        let mut members: Vec<NodeId> = info
            .writers
            .iter()
            .filter(|(w, removed)| *w != member && !removed)
            .map(|(w, _)| *w)
            .collect();
        members.push(me);
        let boxes = members
            .into_iter()
            .filter_map(|m| KeyBox::seal(&key, m))
            .collect();
        payloads.push(Payload::Data(
            ChatOp::Keys {
                epoch: epoch + 1,
                boxes,
            }
            .encode()?,
        ));
    }
    client
        .append(entry.log, payloads)
        .await
        .map_err(explain_not_owner)?;
    eprintln!(
        "{} removed from {name}: what they wrote stays{}",
        member.short(),
        if room_now.is_private() {
            "; new messages use a key they do not have"
        } else {
            ""
        }
    );
    Ok(())
}

/// `pairs chat ...`.
pub(crate) async fn run(data_dir: Option<&Path>, isolated: bool, args: ChatArgs) -> Result<()> {
    let discovery = &args.discovery;
    match args.command {
        Some(ChatCommand::New {
            title,
            closed,
            private,
            json,
        }) => {
            new(
                data_dir,
                isolated,
                discovery,
                &title,
                closed || private,
                private,
                json,
            )
            .await
        }
        Some(ChatCommand::Join { ticket, name }) => {
            join(data_dir, isolated, discovery, &ticket, name.as_deref()).await
        }
        Some(ChatCommand::Ls { json }) => list(data_dir, json).await,
        Some(ChatCommand::Post { room, text, file }) => {
            post(data_dir, &room, text, file.as_deref()).await
        }
        Some(ChatCommand::Name { name }) => set_name(data_dir, name),
        Some(ChatCommand::Invite { room }) => {
            let home = pairs::home::data_dir(data_dir)?;
            let (_, entry) = find(&home, &room)?;
            let mut node = ChatNode::start(data_dir, isolated, discovery).await?;
            let ticket = node.invite(entry.log).await;
            node.shutdown().await;
            println!("{}", ticket?);
            Ok(())
        }
        Some(ChatCommand::Admit { room, node_id }) => {
            let home = pairs::home::data_dir(data_dir)?;
            let (name, entry) = find(&home, &room)?;
            let member: NodeId = node_id
                .parse()
                .context("NODE-ID is what `pairs id` prints on the node to admit")?;
            let mut client = super::control(data_dir).await?;
            let room_now = read_room(&mut client, entry.log, data_dir).await?;
            let mut payloads = vec![Payload::AddWriter(member)];
            if room_now.is_private() {
                let (epoch, key) = room_now.current_key().ok_or(OpError::NoKey)?;
                let boxes = vec![KeyBox::seal(key, member).context("that id has no X25519 form")?];
                payloads.push(Payload::Data(ChatOp::Keys { epoch, boxes }.encode()?));
            }
            client
                .append(entry.log, payloads)
                .await
                .map_err(explain_not_owner)?;
            eprintln!("{} may now post in {name}", member.short());
            Ok(())
        }
        Some(ChatCommand::Remove { room, node_id }) => remove(data_dir, &room, &node_id).await,
        Some(ChatCommand::Mute { room, person, undo }) => {
            let home = pairs::home::data_dir(data_dir)?;
            let (name, entry) = find(&home, &room)?;
            let person: NodeId = person
                .parse()
                .context("PERSON is an id from `pairs chat who ROOM`")?;
            let op = ChatOp::Mute {
                person,
                muted: !undo,
            };
            let mut client = super::control(data_dir).await?;
            let data = op.encode()?;
            client.append(entry.log, vec![Payload::Data(data)]).await?;
            let room_owner = pairs::home::writer_key(data_dir, &entry.log)?.node_id();
            if room_owner != entry.log {
                eprintln!(
                    "note: only the owner's mutes count, and {name} is not yours: this changes nothing"
                );
            } else if undo {
                eprintln!("{}'s messages show again in {name}", person.short());
            } else {
                eprintln!(
                    "{}'s messages are hidden in {name}, on every replica (undo: --undo)",
                    person.short()
                );
            }
            Ok(())
        }
        Some(ChatCommand::Who { room, json }) => who(data_dir, &room, json).await,
        Some(ChatCommand::Vouch { node_id }) => {
            let device: NodeId = node_id
                .parse()
                .context("NODE-ID is what `pairs id` prints on the new device")?;
            let key = pairs::home::node_key(data_dir)?;
            let home = pairs::home::data_dir(data_dir)?;
            let name = Identity::load(&home)?.name;
            println!("{}", LinkTicket::new(&key, device, name).to_ticket());
            eprintln!("on the new device: pairs chat link LINK");
            Ok(())
        }
        Some(ChatCommand::Link { link }) => {
            let ticket = LinkTicket::from_ticket(link.trim())
                .context("LINK is what `pairs chat vouch ID` printed on your usual device")?;
            let home = pairs::home::data_dir(data_dir)?;
            let me = pairs::home::node_key(data_dir)?.node_id();
            if ticket.device != me {
                bail!(
                    "this link is for device {}, and this one is {}: run `pairs chat vouch {me}` on your usual device",
                    ticket.device.short(),
                    me.short()
                );
            }
            let mut identity = Identity::load(&home)?;
            identity.link = Some(ticket.link.clone());
            if identity.name.is_empty() {
                identity.name = ticket.name;
            }
            identity.save(&home)?;
            eprintln!(
                "this device now speaks for {} in every room (shown from its next message or visit)",
                ticket.link.person.short()
            );
            Ok(())
        }
        None => match args.room {
            Some(room) if args.lines => {
                lines(
                    data_dir,
                    isolated,
                    discovery,
                    &room,
                    args.json,
                    args.history,
                )
                .await
            }
            None if args.lines => bail!("--lines needs a ROOM: `pairs chat ROOM --lines`"),
            room => tui(data_dir, isolated, discovery, room).await,
        },
    }
}

#[cfg(feature = "tui")]
async fn tui(
    data_dir: Option<&Path>,
    isolated: bool,
    discovery: &DiscoveryArgs,
    room: Option<String>,
) -> Result<()> {
    super::chat_tui::run(data_dir, isolated, discovery, room).await
}

#[cfg(not(feature = "tui"))]
async fn tui(
    _data_dir: Option<&Path>,
    _isolated: bool,
    _discovery: &DiscoveryArgs,
    _room: Option<String>,
) -> Result<()> {
    bail!("this pairs was built without its terminal UI: use `pairs chat ROOM --lines`")
}

/// The room a name or ticket names in the book.
pub(crate) fn find(home: &Path, room: &str) -> Result<(String, BookEntry)> {
    let book = RoomBook::load(home)?;
    match book.find(room) {
        Some((name, entry)) => Ok((name.clone(), entry.clone())),
        None if RoomTicket::parse(room).is_ok() => {
            bail!("not a member of that room yet: pairs chat join TICKET")
        }
        None => {
            let known: Vec<&str> = book.rooms.keys().map(String::as_str).collect();
            if known.is_empty() {
                bail!(
                    "no room named '{room}': there are none here yet (pairs chat new TITLE, or pairs chat join TICKET)"
                )
            }
            bail!("no room named '{room}' here; rooms: {}", known.join(", "))
        }
    }
}

async fn new(
    data_dir: Option<&Path>,
    isolated: bool,
    discovery: &DiscoveryArgs,
    title: &str,
    closed: bool,
    private: bool,
    json: bool,
) -> Result<()> {
    if title.trim().is_empty() {
        bail!("a room needs a title: pairs chat new \"lan party\"");
    }
    let title_op = ChatOp::Title {
        title: title.to_owned(),
    };
    title_op.encode()?;
    let mut node = ChatNode::start(data_dir, isolated, discovery).await?;
    let result = async {
        let log = node.commands.log_new().await?;
        let mut payloads = Vec::new();
        if !closed {
            payloads.push(Payload::Open);
        }
        if private {
            // The first key, sealed to this node; members get it as they are admitted.
            let key = RoomKey::generate();
            let boxes =
                vec![KeyBox::seal(&key, node.me).context("this node's key has no X25519 form")?];
            payloads.push(Payload::Data(ChatOp::Keys { epoch: 0, boxes }.encode()?));
            payloads.push(Payload::Data(title_op.seal(&log, 0, &key).encode()?));
        } else {
            payloads.push(Payload::Data(title_op.encode()?));
        }
        node.commands.append(log, payloads).await?;
        let ticket = node.invite(log).await?;
        let mut book = RoomBook::load(node.home())?;
        let name = book.add(title, log, ticket.clone());
        book.save(node.home())?;
        let entry = book.rooms[&name].clone();
        node.open(&entry).await?;
        let mut room = node.room(log);
        node.commands.start_entries(log, false).await?;
        while let Some(entries) = node.commands.next_entries().await? {
            room.apply(&entries);
        }
        if let Some(profile) = node.profile(log)? {
            node.post(log, &room, &profile).await?;
        }
        Ok::<_, anyhow::Error>((name, ticket))
    }
    .await;
    node.shutdown().await;
    let (name, ticket) = result?;
    if json {
        println!(
            "{}",
            serde_json::json!({ "room": name, "ticket": ticket, "open": !closed, "private": private })
        );
    } else {
        println!("{ticket}");
        eprintln!(
            "room '{name}' made ({}); others join with  pairs chat join TICKET  — open it: pairs chat {name}",
            if private {
                "private: only those you admit (`pairs chat admit`) read or post"
            } else if closed {
                "closed: admit posters with `pairs chat admit`"
            } else {
                "anyone with the ticket may post"
            }
        );
    }
    Ok(())
}

async fn join(
    data_dir: Option<&Path>,
    isolated: bool,
    discovery: &DiscoveryArgs,
    ticket: &str,
    name: Option<&str>,
) -> Result<()> {
    let parsed = RoomTicket::parse(ticket)
        .context("TICKET is what `pairs chat new` or `pairs chat invite` printed")?;
    let home = pairs::home::data_dir(data_dir)?;
    let mut node = ChatNode::start(data_dir, isolated, discovery).await?;
    let result = async {
        let entry = BookEntry {
            log: parsed.log,
            ticket: ticket.trim().to_owned(),
            read: None,
        };
        node.open(&entry).await?;
        // Wait a little for the room to arrive, to name it by its title.
        let (tx, mut rx) = mpsc::channel(16);
        node.follow(parsed.log, 0, tx).await?;
        let mut room = node.room(parsed.log);
        let arrived = tokio::time::timeout(Duration::from_secs(10), async {
            while let Some((_, event)) = rx.recv().await {
                if let pairs::control::Followed::Entries(entries) = event? {
                    room.apply(&entries);
                    if has_history(&room) {
                        return Ok::<_, anyhow::Error>(true);
                    }
                }
            }
            Ok(false)
        })
        .await
        .unwrap_or(Ok(false))?;
        let mut book = RoomBook::load(&home)?;
        let title = room.title().unwrap_or("room").to_owned();
        let name = book.add(name.unwrap_or(&title), parsed.log, entry.ticket);
        book.save(&home)?;
        if arrived && let Err(err) = node.introduce(parsed.log, &room).await {
            eprintln!("could not post your profile yet: {err:#}");
        }
        Ok::<_, anyhow::Error>((name, arrived, room.len()))
    }
    .await;
    node.shutdown().await;
    let (name, arrived, messages) = result?;
    if arrived {
        eprintln!("joined '{name}' ({messages} messages so far): pairs chat {name}");
    } else {
        eprintln!(
            "joined as '{name}'; no member was reached yet: its messages arrive when one is online (pairs chat {name})"
        );
    }
    Ok(())
}

async fn list(data_dir: Option<&Path>, json: bool) -> Result<()> {
    let home = pairs::home::data_dir(data_dir)?;
    let book = RoomBook::load(&home)?;
    if book.rooms.is_empty() {
        if !json {
            eprintln!("no rooms here yet: pairs chat new TITLE, or pairs chat join TICKET");
        }
        return Ok(());
    }
    let mut client = super::control(data_dir).await?;
    for (name, entry) in &book.rooms {
        let room = read_room(&mut client, entry.log, data_dir).await.ok();
        let unread = room.as_ref().map(|r| r.unread_after(entry.read));
        let title = room.as_ref().and_then(|r| r.title().map(str::to_owned));
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "room": name,
                    "title": title,
                    "messages": room.as_ref().map(Room::len),
                    "unread": unread,
                    "ticket": entry.ticket,
                })
            );
        } else {
            let unread = match unread {
                Some(0) => String::new(),
                Some(n) => format!("  ({n} unread)"),
                None => "  (nothing received yet)".into(),
            };
            println!(
                "{name}{}{unread}",
                title.map(|t| format!("  \"{t}\"")).unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// The room as held here now, read with this node's key.
async fn read_room(client: &mut Client, log: LogId, data_dir: Option<&Path>) -> Result<Room> {
    client.start_entries(log, false).await?;
    let mut room = Room::with_reader(log, pairs::home::node_key(data_dir)?);
    while let Some(entries) = client.next_entries().await? {
        room.apply(&entries);
    }
    Ok(room)
}

async fn post(
    data_dir: Option<&Path>,
    room: &str,
    text: String,
    file: Option<&Path>,
) -> Result<()> {
    let home = pairs::home::data_dir(data_dir)?;
    let (name, entry) = find(&home, room)?;
    let mut client = super::control(data_dir).await?;
    let attachment = match file {
        Some(path) => Some(attach(&mut client, path).await?),
        None => None,
    };
    let op = ChatOp::Post {
        text,
        reply_to: None,
        attachment,
    };
    // Sealed in a private room: the room as held here says which key is newest.
    let room_now = read_room(&mut client, entry.log, data_dir).await?;
    if !has_history(&room_now) {
        bail!(
            "{name} has not arrived here yet: open it once while a member is online (pairs chat {name})"
        );
    }
    let data = room_now.prepare(op)?.encode()?;
    let ids = client
        .append(entry.log, vec![Payload::Data(data)])
        .await
        .map_err(explain_not_a_writer)?;
    if let Some(id) = ids.first() {
        println!("{id}");
    }
    if !client.is_remote() {
        eprintln!(
            "posted in {name}; no node runs here, so it goes out the next time this machine runs `pairs node` or `pairs chat {name}`"
        );
    }
    Ok(())
}

/// Adds a file to the node's blobs, shared, and describes it for a post.
pub(crate) async fn attach(client: &mut Client, path: &Path) -> Result<Attachment> {
    let added = client
        .blob_add(&[path.to_path_buf()], false, true, true)
        .await?;
    Ok(Attachment {
        ticket: added.ticket,
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        size: added.size,
    })
}

fn set_name(data_dir: Option<&Path>, name: String) -> Result<()> {
    ChatOp::Profile {
        name: name.clone(),
        link: None,
    }
    .encode()?;
    let home = pairs::home::data_dir(data_dir)?;
    let mut identity = Identity::load(&home)?;
    identity.name = name;
    identity.save(&home)?;
    eprintln!(
        "shown as '{}' in each room from your next visit",
        identity.name
    );
    Ok(())
}

async fn who(data_dir: Option<&Path>, room: &str, json: bool) -> Result<()> {
    let home = pairs::home::data_dir(data_dir)?;
    let (_, entry) = find(&home, room)?;
    let mut client = super::control(data_dir).await?;
    let room = read_room(&mut client, entry.log, data_dir).await?;
    for person in room.people() {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "person": person.id.to_string(),
                    "name": person.name,
                    "devices": person.devices.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    "muted": person.muted,
                    "forked": person.forked,
                    "owner": person.devices.contains(&room.owner()),
                })
            );
        } else {
            let mut flags = Vec::new();
            if person.devices.contains(&room.owner()) {
                flags.push("owner".to_owned());
            }
            if person.devices.len() > 1 {
                flags.push(format!("{} devices", person.devices.len()));
            }
            if person.muted {
                flags.push("muted".into());
            }
            if person.forked {
                flags.push("forked: a device wrote from an old copy; both kept".into());
            }
            let name = if person.name.is_empty() {
                "(no name)"
            } else {
                &person.name
            };
            let flags = if flags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", flags.join(", "))
            };
            println!("{name}  {}{flags}", person.id);
        }
    }
    Ok(())
}

/// `pairs chat ROOM --lines`.
async fn lines(
    data_dir: Option<&Path>,
    isolated: bool,
    discovery: &DiscoveryArgs,
    room: &str,
    json: bool,
    history: usize,
) -> Result<()> {
    let mut stop = stop_requested();
    let home = pairs::home::data_dir(data_dir)?;
    let (name, entry) = find(&home, room)?;
    let mut node = ChatNode::start(data_dir, isolated, discovery).await?;
    let result = async {
        node.open(&entry).await?;
        let (tx, mut rx) = mpsc::channel(16);
        node.follow(entry.log, 0, tx).await?;
        let mut room = node.room(entry.log);
        let mut printer = Printer::new(json);
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut stdin_open = true;
        let mut introduced = false;
        // Until the node has sent what it held, nothing is printed: then the newest `history`.
        let mut caught_up = false;
        // Lines typed before the room's history arrived (a room just joined): posted once it has.
        let mut waiting: Vec<ChatOp> = Vec::new();
        loop {
            tokio::select! {
                followed = rx.recv() => {
                    let Some((_, event)) = followed else { bail!("the node stopped following {name}") };
                    match event? {
                        pairs::control::Followed::Entries(entries) => {
                            room.apply(&entries);
                        }
                        _ if caught_up => {}
                        _ => {
                            caught_up = true;
                            printer.start(&mut room, history)?;
                        }
                    }
                    if caught_up {
                        printer.print_new(&mut room)?;
                    }
                    if !introduced && has_history(&room) {
                        if let Err(err) = node.introduce(entry.log, &room).await {
                            eprintln!("could not post your profile: {err:#}");
                        }
                        introduced = true;
                    }
                    if introduced {
                        for op in std::mem::take(&mut waiting) {
                            if let Err(err) = node.post(entry.log, &room, &op).await {
                                eprintln!("not posted: {err:#}");
                            }
                        }
                    }
                }
                line = stdin.next_line(), if stdin_open => match line? {
                    Some(line) if line.trim().is_empty() => {}
                    Some(line) => {
                        let op = ChatOp::Post { text: line, reply_to: None, attachment: None };
                        if !introduced {
                            eprintln!("(the room's history has not arrived yet: posted once it has)");
                            waiting.push(op);
                        } else if let Err(err) = node.post(entry.log, &room, &op).await {
                            eprintln!("not posted: {err:#}");
                        }
                    }
                    None => stdin_open = false,
                },
                _ = &mut stop => break,
            }
            // The end of stdin ends the run once what was held is printed and what was typed is
            // posted.
            if !stdin_open && caught_up && waiting.is_empty() {
                break;
            }
        }
        mark_read(&home, &name, room.last_position())?;
        Ok(())
    }
    .await;
    node.shutdown().await;
    result
}

/// Whether any of the room's history is here (its opening, title or messages): before that, a
/// member who just joined cannot post yet, and has nothing to introduce itself to.
pub(crate) fn has_history(room: &Room) -> bool {
    room.is_open() || room.title().is_some() || !room.is_empty()
}

/// Remembers how far a room was read.
pub(crate) fn mark_read(
    home: &Path,
    name: &str,
    position: Option<pairs::chat::Position>,
) -> Result<()> {
    let mut book = RoomBook::load(home)?;
    if let Some(entry) = book.rooms.get_mut(name)
        && position > entry.read
    {
        entry.read = position;
        book.save(home)?;
    }
    Ok(())
}

/// Prints each message once, as it becomes known: first the newest of what was held, then what
/// arrives, in the room's order within each arrival.
struct Printer {
    json: bool,
    /// The person whose flood the last printed line announced (its later posts are not printed).
    flooding: Option<NodeId>,
}

impl Printer {
    fn new(json: bool) -> Self {
        Self {
            json,
            flooding: None,
        }
    }

    /// Prints the newest `history` lines of what is held.
    fn start(&mut self, room: &mut Room, history: usize) -> Result<()> {
        room.take_new();
        let lines = room.tail(history);
        self.print(room, lines)
    }

    /// Prints what arrived since the last call.
    fn print_new(&mut self, room: &mut Room) -> Result<()> {
        let lines = room.take_new();
        self.print(room, lines)
    }

    fn print(&mut self, room: &Room, lines: Vec<Line>) -> Result<()> {
        let mut out = std::io::stdout().lock();
        for line in lines {
            let text = match &line {
                Line::Message(m) => {
                    self.flooding = None;
                    if self.json {
                        message_json(m).to_string()
                    } else {
                        format_message(room, m)
                    }
                }
                Line::Flood { person, .. } if self.flooding == Some(*person) => continue,
                Line::Flood {
                    name,
                    count,
                    person,
                    ..
                } => {
                    self.flooding = Some(*person);
                    if self.json {
                        serde_json::json!({
                            "flood": true, "person": person.to_string(), "name": name, "count": count,
                        })
                        .to_string()
                    } else {
                        format!(
                            "… more from {} held back as a flood",
                            display_name(name, person)
                        )
                    }
                }
            };
            writeln!(out, "{text}")?;
        }
        out.flush()?;
        Ok(())
    }
}

/// A name to show: the given one, else the id's first characters.
pub(crate) fn display_name(name: &str, person: &NodeId) -> String {
    if name.is_empty() {
        person.short()
    } else {
        name.to_owned()
    }
}

/// `HH:MM` of a time in milliseconds since the Unix epoch, in UTC.
pub(crate) fn clock(millis: u64) -> String {
    let minutes = millis / 60_000;
    format!("{:02}:{:02}", (minutes / 60) % 24, minutes % 60)
}

/// One message as a line of text.
pub(crate) fn format_message(room: &Room, m: &Message) -> String {
    let mut text = format!("[{}] {}", clock(m.time), display_name(&m.name, &m.person));
    if let Some(answered) = m.reply_to.and_then(|id| room.message(&id)) {
        text.push_str(&format!(
            " ↳ {}",
            display_name(&answered.name, &answered.person)
        ));
    }
    text.push_str(": ");
    text.push_str(&m.text.replace('\n', " "));
    if let Some(file) = &m.attachment {
        text.push_str(&format!(
            " [file {} ({}): pairs get {}]",
            file.name,
            indicatif::HumanBytes(file.size),
            file.ticket
        ));
    }
    if !m.reactions.is_empty() {
        let reactions: Vec<String> = m
            .reactions
            .iter()
            .map(|(r, n)| format!("{r} {n}"))
            .collect();
        text.push_str(&format!("  ({})", reactions.join(", ")));
    }
    if m.forked {
        text.push_str("  [forked device]");
    }
    text
}

fn message_json(m: &Message) -> serde_json::Value {
    serde_json::json!({
        "id": m.id.to_string(),
        "time": m.time,
        "person": m.person.to_string(),
        "device": m.device.to_string(),
        "name": m.name,
        "text": m.text,
        "reply_to": m.reply_to.map(|id| id.to_string()),
        "attachment": m.attachment.as_ref().map(|a| serde_json::json!({
            "ticket": a.ticket, "name": a.name, "size": a.size,
        })),
        "reactions": m.reactions,
        "forked": m.forked,
    })
}

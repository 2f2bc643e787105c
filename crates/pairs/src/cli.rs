//! Command-line syntax.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::NonEmptyStringValueParser;
use clap::{Args, Parser, Subcommand};

/// Help heading of the options every command takes.
const GLOBAL: &str = "Global options";
/// Help heading of the options shared by the commands that find and reach peers.
const NETWORK: &str = "Network options";

/// pairs: peer-to-peer for any application. Every connection is encrypted and authenticated by node key.
#[derive(Debug, Parser)]
#[command(name = "pairs", version, propagate_version = true)]
pub struct Cli {
    /// Directory for this node's key and data [default: the platform's data directory]
    #[arg(long, global = true, env = "PAIRS_HOME", value_name = "DIR", help_heading = GLOBAL)]
    pub data_dir: Option<PathBuf>,

    /// Find peers only through --peer: no LAN multicast or other discovery that reaches the network
    /// (for tests, benchmarks, and networks that must stay quiet)
    #[arg(long, global = true, env = "PAIRS_ISOLATED", value_parser = clap::builder::FalseyValueParser::new(), help_heading = GLOBAL)]
    pub isolated: bool,

    /// More logging on stderr (-v, -vv, -vvv); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print this node's id (created on first use)
    #[command(
        after_help = "Examples:\n  pairs id                          # give it to a log's or share's owner to be admitted\n  pairs id --json                   # {\"node\": ID}\n  pairs --data-dir /srv/pairs id    # the id of another data directory's key"
    )]
    Id {
        /// Print JSON: {"node": ID}
        #[arg(long)]
        json: bool,
    },
    /// Wait for a peer, then pipe stdin to it and its data to stdout
    #[command(
        after_help = "Examples:\n  pairs listen < backup.tar          # prints a ticket; the peer runs: pairs connect TICKET > backup.tar\n  pairs listen > inbox.txt           # receive only\n  pairs listen --keep > inbox.log    # serve peers one after another\n  pairs listen --port 7000           # a fixed port: the same ticket across restarts\n  pairs listen --via HELPER          # reachable from behind NATs through a helper (pairs serve)\n  pairs listen --code < photo.jpg    # prints a short code; the peer runs: pairs connect 7-guitar-orbit"
    )]
    Listen(ListenArgs),
    /// Connect to a listening peer, then pipe stdin to it and its data to stdout
    #[command(
        after_help = "Examples:\n  pairs connect TICKET > backup.tar  # receive what the listener sends\n  tar c dir | pairs connect TICKET   # send\n  pairs connect NODE-ID              # the id alone: addresses from the LAN or the DHT\n  pairs connect NODE-ID --via HELPER # through the helper the listener uses"
    )]
    Connect(ConnectArgs),
    /// Run a helper node: answers STUN, introduces the nodes registered with it for hole punching,
    /// and relays between them when no direct path works; prints its ticket on stdout
    #[command(
        after_help = "Examples:\n  pairs serve --port 3478           # on a public machine: prints its ticket (HELPER)\n  pairs serve --relay-circuits 0    # introduce for hole punches, never relay\n  pairs serve --relay-rate 1M       # at most 1 MiB/s per relayed connection"
    )]
    Serve(ServeArgs),
    /// Offer stdin to the LAN under NAME, or (stdin a terminal, or --receive) print a paste from it
    #[command(
        after_help = "Examples:\n  pbpaste | pairs paste             # offer the clipboard to whoever asks on this LAN\n  pairs paste > clip.txt            # on another machine: receive it\n  tar c dir | pairs paste holiday   # a named paste: only `pairs paste holiday` receives it\n  pairs paste holiday --receive | tar x\n  pairs paste --code < notes.txt    # prints a short code; the receiver runs: pairs paste 7-guitar-orbit"
    )]
    Paste(PasteArgs),
    /// Join TOPIC: send each stdin line to every peer in it, print each line they send
    #[command(
        after_help = "Runs until Ctrl-C, also after stdin ends: it keeps printing what the peers send.\n\nExamples:\n  pairs swarm our-chat                          # type lines; theirs appear prefixed by their id\n  tail -f app.log | pairs swarm ops-logs --raw  # stream lines to every member\n  pairs swarm our-chat --peer 203.0.113.10:4000 # beyond the LAN: through a member anyone reaches"
    )]
    Swarm(SwarmArgs),
    /// Run a node for a few seconds and show what each discovery source finds
    #[command(
        after_help = "Examples:\n  pairs status                      # this node's id, addresses, DHT, LAN, NAT helpers\n  pairs status our-chat             # also look the topic up and report the peers found\n  pairs status --json --wait 30"
    )]
    Status(StatusArgs),
    /// Diagnose connectivity: NAT type (RFC 5780), local, reflexive and mapped addresses, which
    /// port mapping protocol answered, whether peers can reach this node, the helper in use
    #[command(
        after_help = "Examples:\n  pairs doctor                      # against two public STUN servers\n  pairs doctor --stun IP:3478       # a STUN server with two addresses (coturn) tells the NAT type\n  pairs doctor --via HELPER --json  # what a helper sees, for scripts"
    )]
    Doctor(DoctorArgs),
    /// Run this node: own its logs, share them with the peers the swarm finds, and serve the other
    /// commands (`log`, `kv`) on a control socket in the data directory
    #[command(
        after_help = "Examples:\n  pairs node                    # run in the foreground; Ctrl-C or SIGTERM stops it\n  pairs node status             # what the running node serves\n  pairs log new && pairs log sync TICKET   # the node shares the log from now on"
    )]
    Node(NodeArgs),
    /// Send files or directories: print a ticket, then serve them to every peer that asks until
    /// stopped (a running `pairs node` keeps serving them instead)
    #[command(
        after_help = "Examples:\n  pairs send movie.mp4              # prints a ticket; on another machine: pairs get TICKET\n  pairs send photos/ notes.txt      # several paths travel as one ticket, names kept\n  pairs send --copy big.iso         # copy into the store, so later edits do not matter\n  pairs send --code photos/         # prints a short code; on another machine: pairs get 7-guitar-orbit"
    )]
    Send(SendArgs),
    /// Fetch what a ticket (or a hash) names, from its node and every other peer that has it;
    /// an interrupted fetch resumes where it stopped
    #[command(
        disable_version_flag = true,
        after_help = "Examples:\n  pairs get TICKET                  # into the current directory, names kept\n  pairs get TICKET -o downloads/    # somewhere else\n  pairs get HASH -o file.bin        # by hash alone: peers found through the swarm\n  pairs get SHARE-TICKET docs/      # only that part of a share (--version N: an older one)\n  pairs get 7-guitar-orbit          # the short code `pairs send --code` printed (one attempt)"
    )]
    Get(GetArgs),
    /// Share a folder: publish it and keep it live (changes here are published, admitted writers'
    /// changes arrive); `pairs share ls|log|diff|admit|stop` manage shares
    #[command(
        after_help = "Examples:\n  pairs share photos/               # prints a ticket; elsewhere: pairs sync TICKET photos/\n  pairs share ls                    # the folders kept in step here\n  pairs share ls TICKET             # a share's files (--version N for an older one)\n  pairs share log TICKET            # its versions\n  pairs share diff TICKET 3         # what changed since version 3\n  pairs share admit TICKET NODE-ID  # let another node publish its changes too"
    )]
    Share(ShareArgs),
    /// Chat in rooms that work on a LAN with no internet and sync later: a terminal UI, or plain
    /// lines for scripts
    #[command(
        after_help = "Examples:\n  pairs chat new \"lan party\"        # make a room; prints its ticket to invite others\n  pairs chat join TICKET             # join one (it appears in `pairs chat ls`)\n  pairs chat lan-party               # open it (the rooms list, scrollback, who is here)\n  pairs chat lan-party --lines       # one message per line on stdout, stdin lines are posted\n  pairs chat post lan-party \"hi\"     # post one message (sent now, or when next online)\n  pairs chat name Camille            # how you are shown, in every room\n  pairs chat mute lan-party PERSON   # the room's owner hides someone's messages everywhere"
    )]
    Chat(ChatArgs),
    /// Keep a folder in step with a share: fetch its files, then follow its changes live (and
    /// publish changes made here, once the share's owner admits this node)
    #[command(
        after_help = "Examples:\n  pairs sync TICKET photos/         # a running `pairs node` keeps it in step from now on\n  pairs sync TICKET photos/ --max-size 20GiB   # no more than that lands here (again, larger: takes the rest)\n  pairs id                          # the id to give the owner for `pairs share admit`"
    )]
    Sync(SyncArgs),
    /// The blob store: what this node holds and serves
    #[command(
        subcommand,
        after_help = "Examples:\n  pairs blobs add movie.mp4         # prints its hash (BLAKE3, as b3sum prints it)\n  pairs blobs ls\n  pairs blobs export HASH out.mp4\n  pairs blobs rm HASH"
    )]
    Blobs(BlobsCommand),
    /// Signed multi-writer logs that replicate over any stream
    #[command(
        subcommand,
        after_help = "Examples:\n  T=$(pairs log new)                # a new log; its ticket is what readers need\n  pairs log append $T hello\n  pairs log cat $T --follow\n  pairs log sync $T                 # share it with every peer that has the ticket"
    )]
    Log(LogCommand),
    /// A key-value map kept in a log (last writer wins)
    #[command(
        subcommand,
        after_help = "Examples:\n  pairs kv set $T colour blue\n  pairs kv get $T colour\n  pairs kv ls $T"
    )]
    Kv(KvCommand),
    /// Sites: a folder with an index.html, shared and opened in the browser through the node's
    /// HTTP gateway
    #[command(
        subcommand,
        after_help = "Examples:\n  pairs site publish www/           # prints the URL to open and the share ticket"
    )]
    Site(SiteCommand),
}

/// `pairs site`
#[derive(Debug, Subcommand)]
pub enum SiteCommand {
    /// Share a folder with an index.html and print the URL to open it at (its own origin on the
    /// node's gateway) and its share ticket
    #[command(
        after_help = "Examples:\n  pairs site publish www/           # prints http://KEY.localhost:4480/ and the ticket\n  pairs sync TICKET www/            # elsewhere: a copy of the folder, kept in step\n\nThrough a running `pairs node` the site stays up (stop: pairs share stop DIR); without one, this\ncommand serves it until Ctrl-C. The gateway's port: `[gateway] port = N` in config.toml."
    )]
    Publish(SitePublishArgs),
}

/// `pairs site publish`
#[derive(Debug, Args)]
pub struct SitePublishArgs {
    /// The folder: an index.html at its top, the rest as the page links it
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// Print the URL and ticket as JSON
    #[arg(long)]
    pub json: bool,

    /// TCP port of the gateway on 127.0.0.1 when no node runs (0: any free port) [default: the
    /// config's `[gateway] port`, else 4480]
    #[arg(long, value_name = "PORT")]
    pub gateway_port: Option<u16>,

    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// `pairs send`
#[derive(Debug, Args)]
pub struct SendArgs {
    /// Files and directories to send
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,

    /// Copy into the store instead of serving the files where they are (they may then change)
    #[arg(long)]
    pub copy: bool,

    /// Print a short code (like 7-guitar-orbit) instead of a ticket: the other side runs `pairs
    /// get CODE`, found on the LAN or the DHT; the code is good for one attempt, and this command
    /// exits once that receiver has everything
    #[arg(long)]
    pub code: bool,

    /// Print the ticket (or the code) as JSON
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// `pairs get`
#[derive(Debug, Args)]
pub struct GetArgs {
    /// The ticket `pairs send` or `pairs share` printed, a blob's 64-character hash, or the
    /// short code `pairs send --code` printed
    pub ticket: String,

    /// For a share: the paths to fetch (files or directories; default: all of it)
    #[arg(value_name = "PATH")]
    pub paths: Vec<String>,

    /// For a share: fetch this version (`pairs share log TICKET` lists them)
    #[arg(long, value_name = "N")]
    pub version: Option<usize>,

    /// Where to write: a directory for what `pairs send` sent (default: the current one), a file
    /// for a single blob
    #[arg(short, long, value_name = "PATH")]
    pub out: Option<PathBuf>,

    /// Print a JSON summary instead of text
    #[arg(long)]
    pub json: bool,

    /// With a short code: seconds to look for the sender
    #[arg(long, value_name = "SECS", value_parser = parse_timeout, default_value_t = 30)]
    pub timeout: u64,

    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// `pairs share`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ShareArgs {
    #[command(subcommand)]
    pub command: Option<ShareCommand>,

    /// The folder to share
    #[arg(required = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Print the ticket as JSON
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// `pairs chat`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct ChatArgs {
    #[command(subcommand)]
    pub command: Option<ChatCommand>,

    /// The room: its name here (`pairs chat ls`), or a ticket [default: every room joined here]
    #[arg(value_name = "ROOM")]
    pub room: Option<String>,

    /// Plain lines instead of the terminal UI: messages on stdout as they arrive, each stdin
    /// line posted; ends at the end of stdin or on Ctrl-C
    #[arg(long)]
    pub lines: bool,

    /// With --lines: one JSON object per message
    #[arg(long, requires = "lines")]
    pub json: bool,

    /// With --lines: how many earlier messages to print first
    #[arg(long, value_name = "N", default_value_t = 20, requires = "lines")]
    pub history: usize,

    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// `pairs chat ...`
#[derive(Debug, Subcommand)]
pub enum ChatCommand {
    /// Make a room and print its ticket
    #[command(
        after_help = "Examples:\n  pairs chat new \"lan party\"            # anyone with the ticket may post\n  pairs chat new board --closed          # only those you admit may post\n  pairs chat new family --private        # only those you admit read or post"
    )]
    New {
        /// The room's title (also its name here)
        title: String,
        /// Only people you admit (`pairs chat admit`) may post; everyone with the ticket reads
        #[arg(long)]
        closed: bool,
        /// Closed, and sealed: only people you admit read it (a node that stores it for others
        /// holds ciphertext only)
        #[arg(long)]
        private: bool,
        /// Print the ticket as JSON
        #[arg(long)]
        json: bool,
    },
    /// Join a room from its ticket
    #[command(
        after_help = "Examples:\n  pairs chat join TICKET\n  pairs chat join TICKET --as work"
    )]
    Join {
        /// The room's ticket
        ticket: String,
        /// The name to give it here [default: its title, once known, else `room`]
        #[arg(long = "as", value_name = "NAME")]
        name: Option<String>,
    },
    /// The rooms joined here, with unread messages
    #[command(
        disable_version_flag = true,
        after_help = "Examples:\n  pairs chat ls\n  pairs chat ls --json"
    )]
    Ls {
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Post one message (through the running node, or stored here and sent when next online)
    #[command(
        after_help = "Examples:\n  pairs chat post lan-party \"back in 5\"\n  pairs chat post lan-party --file notes.pdf \"the notes\""
    )]
    Post {
        /// The room
        room: String,
        /// The text
        #[arg(default_value = "")]
        text: String,
        /// Offer a file with it (added to this node's blobs and shared)
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Set the name you are shown by, in every room
    #[command(after_help = "Examples:\n  pairs chat name Camille")]
    Name {
        /// The name
        name: String,
    },
    /// Print a room's ticket, with this node as a provider, to invite someone
    #[command(after_help = "Examples:\n  pairs chat invite lan-party")]
    Invite {
        /// The room
        room: String,
    },
    /// Let a node post in a closed room you own (its id: `pairs id` there)
    #[command(after_help = "Examples:\n  pairs chat admit board NODE-ID")]
    Admit {
        /// The room
        room: String,
        /// The node's id
        node_id: String,
    },
    /// Remove a member from a room you own: their later posts stop counting, and a private room
    /// moves to a new key they do not get
    #[command(after_help = "Examples:\n  pairs chat remove family NODE-ID")]
    Remove {
        /// The room
        room: String,
        /// The member's node id
        node_id: String,
    },
    /// Hide a person's messages in a room you own, on every replica (or show them again)
    #[command(
        after_help = "Examples:\n  pairs chat mute lan-party PERSON-ID\n  pairs chat mute lan-party PERSON-ID --undo"
    )]
    Mute {
        /// The room
        room: String,
        /// The person's id (`pairs chat who ROOM` lists them)
        person: String,
        /// Show their messages again
        #[arg(long)]
        undo: bool,
    },
    /// Who has written in a room: names, ids, devices, muted, forked
    #[command(after_help = "Examples:\n  pairs chat who lan-party")]
    Who {
        /// The room
        room: String,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// On your usual device: vouch that another device (its `pairs id`) speaks for you
    #[command(
        after_help = "Examples:\n  pairs chat vouch NODE-ID    # prints a device link; on that device: pairs chat link LINK"
    )]
    Vouch {
        /// The new device's node id
        node_id: String,
    },
    /// On a new device: speak as the person who vouched for it (`pairs chat vouch` there)
    #[command(after_help = "Examples:\n  pairs chat link LINK")]
    Link {
        /// What `pairs chat vouch` printed
        link: String,
    },
}

/// `pairs share ...`
#[derive(Debug, Subcommand)]
pub enum ShareCommand {
    /// The folders kept in step here; with TICKET, that share's files
    #[command(
        disable_version_flag = true,
        after_help = "Examples:\n  pairs share ls\n  pairs share ls TICKET --version 3"
    )]
    Ls {
        /// A share ticket
        ticket: Option<String>,
        /// With TICKET: the files at this version (`pairs share log TICKET` lists them)
        #[arg(long, value_name = "N")]
        version: Option<usize>,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// A share's versions, oldest first
    #[command(after_help = "Examples:\n  pairs share log TICKET")]
    Log {
        /// A share ticket
        ticket: String,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// What changed in a share from version FROM to version TO (default: the latest)
    #[command(
        after_help = "Examples:\n  pairs share diff TICKET 3         # since version 3\n  pairs share diff TICKET 3 5"
    )]
    Diff {
        /// A share ticket
        ticket: String,
        /// The older version
        from: usize,
        /// The newer version
        to: Option<usize>,
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Admit a writer: its node publishes its changes to the share too (owner only)
    #[command(
        after_help = "Examples:\n  pairs share admit TICKET NODE-ID  # NODE-ID: what `pairs id` prints on the writer's machine"
    )]
    Admit {
        /// A share ticket
        ticket: String,
        /// The writer's node id (`pairs id` on its machine)
        node_id: String,
    },
    /// Stop keeping a folder in step (the folder and the share stay)
    #[command(after_help = "Examples:\n  pairs share stop photos/\n  pairs share stop TICKET")]
    Stop {
        /// A share ticket, or the folder
        target: String,
    },
}

/// `pairs sync`
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// The ticket `pairs share` printed
    pub ticket: String,

    /// The folder to keep in step (created if missing)
    pub dir: PathBuf,

    /// Take at most this much file content from the share (e.g. 500MiB, 20GB); files are taken in
    /// path order, the rest held back and reported
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<bytesize::ByteSize>,

    /// Take at most this many files from the share
    #[arg(long, value_name = "N")]
    pub max_files: Option<u64>,

    /// Print the ticket as JSON
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// `pairs blobs ...`
#[derive(Debug, Subcommand)]
pub enum BlobsCommand {
    /// Add files or directories to the store and print the hash (a file's hash is its BLAKE3, as
    /// `b3sum` prints it)
    #[command(
        after_help = "Examples:\n  pairs blobs add movie.mp4 photos/\n  pairs blobs add --copy big.iso    # copied in: later edits to the file do not matter"
    )]
    Add {
        /// What to add
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Copy into the store instead of serving the files where they are
        #[arg(long)]
        copy: bool,
    },
    /// List the blobs held, complete or partial
    #[command(after_help = "Examples:\n  pairs blobs ls\n  pairs blobs ls --json | jq .hash")]
    Ls {
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Forget a blob and stop serving it (a file it was served from is left alone)
    #[command(
        after_help = "Examples:\n  pairs blobs rm HASH               # HASH as `pairs blobs ls` prints it"
    )]
    Rm {
        /// The blob's hash
        hash: String,
    },
    /// Copy a complete blob to a file
    #[command(after_help = "Examples:\n  pairs blobs export HASH movie.mp4")]
    Export {
        /// The blob's hash
        hash: String,
        /// The file to write
        out: PathBuf,
    },
}

/// `pairs log ...`
#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// Create a log owned by a fresh key kept in the data directory; print its ticket
    #[command(
        after_help = "Examples:\n  T=$(pairs log new)                # keep the ticket: every other log command takes it"
    )]
    New,
    /// Append an entry: DATA, or stdin with `-` (one entry; with --lines, one entry per line)
    #[command(
        after_help = "Examples:\n  pairs log append $T \"hello\"       # prints the entry's id\n  pairs log append $T - < photo.jpg # one entry from stdin, binary too (up to 64 KiB)\n  seq 1000 | pairs log append $T - --lines"
    )]
    Append {
        /// The log ticket
        ticket: String,
        /// The entry's content, or `-` for stdin
        data: String,
        /// With `-`: one entry per line, each committed and its id printed as it is read
        #[arg(long)]
        lines: bool,
    },
    /// Print the entries in causal order (Lamport clock, then id)
    #[command(
        after_help = "Examples:\n  pairs log cat $T\n  pairs log cat $T --follow         # then new entries as they commit\n  pairs log cat $T --json           # lossless: binary payloads in base64"
    )]
    Cat {
        /// The log ticket
        ticket: String,
        /// Keep printing entries as they arrive
        #[arg(long)]
        follow: bool,
        /// One JSON object per line
        #[arg(long)]
        json: bool,
    },
    /// Print the current heads
    #[command(
        after_help = "Examples:\n  pairs log heads $T                # the newest entries, one id a line"
    )]
    Heads {
        /// The log ticket
        ticket: String,
    },
    /// Share the log: replicate it live with every peer that has it (LAN, DHT, --peer); with
    /// PEER, sync once with that node and exit
    #[command(
        after_help = "With a running `pairs node`, the node shares the log from then on and this returns at once;\notherwise this command runs a node until Ctrl-C.\n\nExamples:\n  pairs log sync TICKET                      # share it, live\n  pairs log sync TICKET NODE_TICKET          # sync once with that node\n  pairs log sync TICKET --peer HOST:PORT     # share it, and connect to that peer too"
    )]
    Sync {
        /// The log ticket
        ticket: String,
        /// A node ticket (printed by `pairs node` or `pairs log sync`): sync once with it
        peer: Option<String>,
        /// With PEER: keep the session open, exchanging new entries as they are appended
        #[arg(long)]
        live: bool,
        #[command(flatten)]
        bind: BindArgs,
        #[command(flatten)]
        sources: SourceArgs,
    },
    /// Replicate over stdin/stdout (e.g. through ssh or socat); exits when both sides hold the union
    #[command(
        after_help = "Examples:\n  socat EXEC:\"pairs log replicate $T\" EXEC:\"ssh host pairs log replicate $T\""
    )]
    Replicate {
        /// The log ticket
        ticket: String,
        /// Speak the protocol on stdin/stdout (the default: stdio is the only transport here)
        #[arg(long)]
        stdio: bool,
        /// Keep going after the initial sync, until the stream ends
        #[arg(long)]
        live: bool,
    },
    /// Admit a writer (owner only)
    #[command(
        after_help = "Examples:\n  pairs log add-writer $T NODE-ID   # NODE-ID: what `pairs id` prints on the writer's machine"
    )]
    AddWriter {
        /// The log ticket
        ticket: String,
        /// The writer's node id (`pairs id` on its machine)
        node_id: String,
    },
    /// Remove a writer: its entries from now on no longer count (owner only)
    #[command(after_help = "Examples:\n  pairs log remove-writer $T NODE-ID")]
    RemoveWriter {
        /// The log ticket
        ticket: String,
        /// The writer's node id
        node_id: String,
    },
    /// Show the log's size, heads, writers and any forks
    #[command(after_help = "Examples:\n  pairs log info $T")]
    Info {
        /// The log ticket
        ticket: String,
    },
    /// Write one entry's payload to stdout, byte for byte (binary entries included)
    #[command(
        after_help = "Examples:\n  pairs log get $T ID > photo.jpg   # ID as `log append` or `log cat --json` prints it"
    )]
    Get {
        /// The log ticket
        ticket: String,
        /// The entry's id (as `log append` and `log cat --json` print it)
        id: String,
    },
}

/// `pairs kv ...`
#[derive(Debug, Subcommand)]
pub enum KvCommand {
    /// Set KEY to VALUE
    #[command(after_help = "Examples:\n  pairs kv set $T colour blue")]
    Set {
        /// The log ticket
        ticket: String,
        /// Key
        key: String,
        /// Value
        value: String,
    },
    /// Print the value of KEY
    #[command(after_help = "Examples:\n  pairs kv get $T colour")]
    Get {
        /// The log ticket
        ticket: String,
        /// Key
        key: String,
    },
    /// Delete KEY
    #[command(after_help = "Examples:\n  pairs kv del $T colour")]
    Del {
        /// The log ticket
        ticket: String,
        /// Key
        key: String,
    },
    /// List every key and value
    #[command(after_help = "Examples:\n  pairs kv ls $T")]
    Ls {
        /// The log ticket
        ticket: String,
    },
}

/// Where the node's socket binds.
#[derive(Debug, Args)]
#[command(next_help_heading = NETWORK)]
pub struct BindArgs {
    /// UDP address to bind, e.g. 0.0.0.0:7000 or [::1]:0 [default: all interfaces, any port]
    #[arg(long, value_name = "ADDR", conflicts_with = "port")]
    pub bind: Option<SocketAddr>,

    /// UDP port to bind on all interfaces (keeps the ticket stable across restarts)
    #[arg(long, value_name = "PORT")]
    pub port: Option<u16>,
}

/// `pairs listen`
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Keep listening after the first peer: serve peers one after another
    #[arg(long)]
    pub keep: bool,

    /// Print a short code (like 7-guitar-orbit) instead of a ticket: the peer runs `pairs connect
    /// CODE`, found on the LAN or the DHT; the code is good for one attempt
    #[arg(long, conflicts_with_all = ["keep", "via", "turn"])]
    pub code: bool,

    /// Announce on stderr as JSON lines (stdout carries the data): {"event": "listening", "node",
    /// "addrs", "ticket"}; {"event": "reachable", "how", "connect"} for each other way in (lan,
    /// dht, port-mapping, turn, helper); then {"event": "connected", "node", "addr"} and
    /// {"event": "done", "sent", "received", "seconds", "sent_blake3", "received_blake3"} for each
    /// peer
    #[arg(long)]
    pub json: bool,

    /// Stay reachable through this helper (a `pairs serve` or any pairs node's ticket): peers that
    /// cannot reach us directly punch a hole with its help, or are relayed by it; repeatable
    #[arg(long, value_name = "TICKET")]
    pub via: Vec<String>,

    /// Ask the router to forward our port: auto (PCP, then NAT-PMP, then UPnP), one of pcp,
    /// natpmp, upnp, or off [default: auto; off with --isolated]
    #[arg(long, value_name = "MODE", value_parser = parse_port_mapping)]
    pub port_mapping: Option<PortMapping>,

    /// Be reachable through an allocation on this TURN server (e.g. coturn), USER:PASSWORD@IP:PORT;
    /// the ticket then carries the relayed address
    #[arg(long, value_name = "USER:PASSWORD@IP:PORT")]
    pub turn: Option<pairs_net::nat::turn::TurnServer>,

    #[command(flatten)]
    pub sources: SourceArgs,

    #[command(flatten)]
    pub bind: BindArgs,
}

/// `pairs doctor`
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// STUN server, HOST:PORT; repeatable. One with two addresses (RFC 5780, e.g. coturn given two
    /// listening IPs) tells the NAT type; any pairs node answers STUN too [default: two public STUN
    /// servers; none with --isolated]
    #[arg(long, value_name = "HOST:PORT")]
    pub stun: Vec<String>,

    /// Also check this helper: register with it and report the address it sees
    #[arg(long, value_name = "TICKET")]
    pub via: Option<String>,

    /// Port mapping protocols to try: auto (all), one of pcp, natpmp, upnp, or off [default: auto;
    /// off with --isolated]
    #[arg(long, value_name = "MODE", value_parser = parse_port_mapping)]
    pub port_mapping: Option<PortMapping>,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub bind: BindArgs,
}

/// `pairs serve`
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Relay circuits open at once (0: introduce for hole punching, never relay)
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub relay_circuits: usize,

    /// Relay circuits one node may hold at once
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub relay_circuits_per_node: usize,

    /// Bytes one relay circuit may carry before it is closed (suffixes K, M, G: powers of 1024)
    #[arg(long, default_value = "256M", value_name = "SIZE", value_parser = parse_size)]
    pub relay_bytes: u64,

    /// Bytes per second one relay circuit may carry; faster traffic is slowed (K, M, G suffixes)
    #[arg(long, default_value = "4M", value_name = "SIZE", value_parser = parse_size)]
    pub relay_rate: u64,

    #[command(flatten)]
    pub bind: BindArgs,
}

/// Which port mapping protocols to try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortMapping {
    /// None.
    Off,
    /// These, in order.
    Protocols(Vec<pairs_portmap::Protocol>),
}

fn parse_port_mapping(text: &str) -> Result<PortMapping, String> {
    match text {
        "off" | "none" => Ok(PortMapping::Off),
        "auto" => Ok(PortMapping::Protocols(
            pairs_portmap::Protocol::ALL.to_vec(),
        )),
        one => one
            .parse()
            .map(|p| PortMapping::Protocols(vec![p]))
            .map_err(|e: String| format!("{e}, auto or off")),
    }
}

/// Parses a timeout in whole seconds; 0 would give up before trying.
fn parse_timeout(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("a timeout of 0 would give up before trying: give 1 or more seconds".into()),
        Ok(secs) => Ok(secs),
        Err(_) => Err(format!("'{text}' is not a number of seconds")),
    }
}

/// Parses a byte count with an optional K, M or G suffix (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 10),
        Some((i, 'm' | 'M')) => (&text[..i], 20),
        Some((i, 'g' | 'G')) => (&text[..i], 30),
        _ => (text, 0),
    };
    let number: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a size: use a number with an optional K, M or G"))?;
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// `pairs connect`
#[derive(Debug, Args)]
pub struct ConnectArgs {
    /// The ticket printed by `pairs listen`, just its node id (its addresses are then looked up on
    /// the LAN and the DHT), or the short code `pairs listen --code` printed
    pub ticket: String,

    /// Seconds to wait for an answer from each address
    #[arg(long, default_value_t = 10, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: u64,

    /// Reach the peer through this helper, which the peer is registered with (`pairs listen --via`):
    /// a hole punch, or its relay when no direct path works; repeatable, tried in order
    #[arg(long, value_name = "TICKET")]
    pub via: Vec<String>,

    /// Send through an allocation on this TURN server, USER:PASSWORD@IP:PORT: used for the peer's
    /// addresses that are relayed addresses on the same server (a ticket from `listen --turn`)
    #[arg(long, value_name = "USER:PASSWORD@IP:PORT")]
    pub turn: Option<pairs_net::nat::turn::TurnServer>,

    #[command(flatten)]
    pub sources: SourceArgs,

    #[command(flatten)]
    pub bind: BindArgs,
}

/// Where peers come from, on top of the configuration file (`config.toml` in the data directory).
#[derive(Debug, Clone, Args, Default)]
#[command(next_help_heading = NETWORK)]
pub struct SourceArgs {
    /// Also connect to this peer: a node ticket or host:port; repeatable
    #[arg(long = "peer", value_name = "TICKET|HOST:PORT")]
    pub peers: Vec<String>,

    /// Do not use the Mainline DHT
    #[arg(long, env = "PAIRS_NO_DHT", value_parser = clap::builder::FalseyValueParser::new())]
    pub no_dht: bool,

    /// Do not look for peers on the LAN (mDNS)
    #[arg(long)]
    pub no_lan: bool,

    /// The LAN and --peer only: no DHT, no DNS seeds
    #[arg(long, conflicts_with_all = ["no_lan", "dht_bootstrap"])]
    pub lan_only: bool,

    /// DHT bootstrap node, host:port; repeatable [default: the config file's, else the public
    /// Mainline bootstrap nodes]
    #[arg(long, value_name = "HOST:PORT")]
    pub dht_bootstrap: Vec<String>,

    /// DNS seed, repeatable: NAME:PORT (its A/AAAA records are peers at PORT) or NAME (its TXT
    /// records `pairs=<ticket or ip:port>` list peers)
    #[arg(long = "seed", value_name = "NAME[:PORT]")]
    pub seeds: Vec<String>,
}

impl SourceArgs {
    /// The flags as the library takes them.
    pub fn options(&self) -> pairs::config::SourceOptions {
        pairs::config::SourceOptions {
            peers: self.peers.clone(),
            no_dht: self.no_dht,
            no_lan: self.no_lan,
            lan_only: self.lan_only,
            dht_bootstrap: self.dht_bootstrap.clone(),
            seeds: self.seeds.clone(),
        }
    }
}

/// How a swarm command finds and reaches peers.
#[derive(Debug, Args)]
#[command(next_help_heading = NETWORK)]
pub struct DiscoveryArgs {
    #[command(flatten)]
    pub bind: BindArgs,

    #[command(flatten)]
    pub sources: SourceArgs,

    /// Use this node's key from the data directory [default: a fresh id for this run, so several
    /// runs on one machine meet each other]
    #[arg(long)]
    pub node_key: bool,

    /// Do not relay connections between peers that cannot reach each other directly (this node
    /// still introduces them for hole punches, and still asks its peers for the same help)
    #[arg(long)]
    pub no_relay: bool,
}

/// `pairs node`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: Option<NodeCommand>,

    #[command(flatten)]
    pub bind: BindArgs,

    #[command(flatten)]
    pub sources: SourceArgs,

    /// Do not relay connections between peers that cannot reach each other directly
    #[arg(long)]
    pub no_relay: bool,
}

/// `pairs node ...`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Show what the running node serves: its id, ticket, peers and logs
    #[command(after_help = "Examples:\n  pairs node status\n  pairs node status --json")]
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
}

/// `pairs paste`
#[derive(Debug, Args)]
pub struct PasteArgs {
    /// The paste's name; sender and receivers must use the same [default: one shared default].
    /// A short code (like 7-guitar-orbit) receives what `pairs paste --code` offers
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub name: Option<String>,

    /// Offer stdin under a short code (like 7-guitar-orbit) instead of a name: one receiver, who
    /// runs `pairs paste CODE`, found on the LAN or the DHT; the code is good for one attempt
    #[arg(long, conflicts_with_all = ["name", "receive", "keep"])]
    pub code: bool,

    /// Offer stdin even if it is a terminal
    #[arg(short, long, conflicts_with = "receive")]
    pub send: bool,

    /// Receive even if stdin is not a terminal
    #[arg(short, long)]
    pub receive: bool,

    /// Give up after this many seconds without a peer to send to or receive from
    #[arg(long, value_name = "SECS", value_parser = parse_timeout)]
    pub timeout: Option<u64>,

    /// Sender: keep offering until interrupted instead of exiting once receivers are served
    #[arg(long, conflicts_with = "receive")]
    pub keep: bool,

    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// `pairs swarm`
#[derive(Debug, Args)]
pub struct SwarmArgs {
    /// The topic's name (anyone who knows it can join; choose one that is hard to guess)
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub topic: String,

    /// Print received lines as they are, without the sender's short id
    #[arg(long)]
    pub raw: bool,

    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

/// `pairs status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Topics to join and look up as well
    #[arg(value_parser = NonEmptyStringValueParser::new())]
    pub topics: Vec<String>,

    /// Longest time to let the sources work; the report comes sooner once every topic named has met
    /// a peer (without topics: once the DHT has bootstrapped and published this node's record)
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub wait: u64,

    /// Print JSON instead of text
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub discovery: DiscoveryArgs,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// clap checks the whole command tree (unique argument names and the like) only when a
    /// subcommand is used: check every one at once.
    #[test]
    fn the_command_line_is_well_formed() {
        super::Cli::command().debug_assert();
    }

    /// Every command, at every level, shows examples under its help.
    #[test]
    fn every_command_has_examples() {
        fn check(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for sub in command.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                let examples = sub.get_after_help().is_some_and(|h| {
                    let h = h.to_string();
                    h.contains("Examples:\n") && h.contains("pairs ")
                });
                if !examples {
                    missing.push(path.clone());
                }
                check(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        check(&super::Cli::command(), "pairs", &mut missing);
        assert!(missing.is_empty(), "no examples: {missing:?}");
    }
}

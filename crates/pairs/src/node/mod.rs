//! The node: one value that owns a node's key, its endpoint, swarm, NAT service and stores, and
//! serves every protocol on one router. It is what an application embeds and what `pairs node` runs.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use pairs::base::Ticket as _;
//! let node = pairs::Node::builder().spawn().await?;
//! let log = node.create_log().await?;
//! log.share().await?; // every peer the swarm finds for this log replicates it, live
//! log.append("hello").await?;
//! println!("pairs log cat {}", log.ticket().to_ticket());
//! # Ok(()) }
//! ```

pub(crate) mod blobs;
mod logs;
mod names;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, Result};
use pairs_base::{NodeAddr, NodeId, SecretKey, Ticket as _};
use pairs_log::{LogId, LogTicket};
use pairs_net::nat::{self, Nat, NatConfig, RelayLimits};
use pairs_net::swarm::{SWARM_ALPN, Swarm, SwarmConfig};
use pairs_net::{Endpoint, EndpointConfig, Router, RouterBuilder};

use self::blobs::BlobService;
pub use self::blobs::{Added, BlobProgress, Blobs, GetProgress, blob_topic};
pub use self::logs::{EntryBatches, LOG_ALPN, LogHandle, log_topic};
use self::logs::{LogRegistry, LogServer};
pub use self::names::Resolutions;
use crate::config::{Config, SourceOptions, Sources};
use crate::home;

/// Relay circuits a node opens for its peers at once by default; `pairs serve` is the dedicated relay.
pub const DEFAULT_RELAY_CIRCUITS: usize = 8;

/// Connections a node keeps at once, every protocol together, by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// Where the node keeps its key and stores.
#[derive(Debug, Clone)]
enum Storage {
    /// A data directory (`PAIRS_HOME`, else the platform's, unless named).
    Dir(Option<PathBuf>),
    /// Nothing on disk: a fresh key, logs in memory.
    Memory,
}

/// Which key the node uses.
#[derive(Clone)]
enum KeyChoice {
    /// The data directory's `node.key` (created on first use); a fresh one in memory.
    Stored,
    /// A fresh key for this run.
    Fresh,
    /// This one.
    Given(Box<SecretKey>),
}

type AddProtocol = Box<dyn FnOnce(RouterBuilder) -> RouterBuilder + Send>;

/// Builds a [`Node`]. The defaults are the command line's: the data directory from `PAIRS_HOME` or
/// the platform's, its `config.toml`, every discovery source it enables (all of them without a
/// file), and `PAIRS_ISOLATED` honoured.
pub struct NodeBuilder {
    storage: Storage,
    key: KeyChoice,
    isolated: bool,
    sources: SourceOptions,
    bind: Option<SocketAddr>,
    port: Option<u16>,
    relay_circuits: usize,
    network: bool,
    max_connections: usize,
    protocols: Vec<AddProtocol>,
    gateway: GatewayChoice,
}

/// Whether a node serves the HTTP gateway, and on which port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GatewayChoice {
    /// As `config.toml`'s `[gateway]` says (none if it names no port).
    Config,
    /// As the config says, else on [`DEFAULT_GATEWAY_PORT`] or any free port if that one is taken.
    ConfigOrDefault,
    /// This port (0: any free port); a taken port is an error.
    Port(u16),
    /// None.
    Off,
}

/// The TCP port on 127.0.0.1 `pairs node` serves the HTTP gateway on unless `[gateway] port` in
/// `config.toml` says otherwise.
pub const DEFAULT_GATEWAY_PORT: u16 = 4480;

impl std::fmt::Debug for NodeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeBuilder")
            .field("storage", &self.storage)
            .field("isolated", &self.isolated)
            .field("sources", &self.sources)
            .field("network", &self.network)
            .finish_non_exhaustive()
    }
}

impl Default for NodeBuilder {
    fn default() -> Self {
        let isolated = std::env::var_os("PAIRS_ISOLATED")
            .is_some_and(|v| !matches!(v.to_str(), Some("" | "0" | "false" | "no" | "off")));
        Self {
            storage: Storage::Dir(std::env::var_os("PAIRS_HOME").map(PathBuf::from)),
            key: KeyChoice::Stored,
            isolated,
            sources: SourceOptions::default(),
            bind: None,
            port: None,
            relay_circuits: DEFAULT_RELAY_CIRCUITS,
            network: true,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            protocols: Vec::new(),
            gateway: GatewayChoice::Config,
        }
    }
}

impl NodeBuilder {
    /// Keeps the key, the configuration and the stores in `dir`.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.storage = Storage::Dir(Some(dir.into()));
        self
    }

    /// Keeps nothing on disk: a fresh key, logs in memory, no configuration file.
    pub fn in_memory(mut self) -> Self {
        self.storage = Storage::Memory;
        self
    }

    /// Uses a fresh key for this run instead of the data directory's (several nodes on one machine).
    pub fn fresh_key(mut self) -> Self {
        self.key = KeyChoice::Fresh;
        self
    }

    /// Uses this key.
    pub fn secret_key(mut self, key: SecretKey) -> Self {
        self.key = KeyChoice::Given(Box::new(key));
        self
    }

    /// Switches off every discovery source that reaches the network on its own (mDNS, the public
    /// DHT, the configuration's seeds); peers named with [`NodeBuilder::peer`] still count.
    pub fn isolated(mut self, isolated: bool) -> Self {
        self.isolated = isolated;
        self
    }

    /// Where peers come from, on top of the configuration file (the command line's source flags).
    pub fn sources(mut self, sources: SourceOptions) -> Self {
        self.sources = sources;
        self
    }

    /// Also connects to this peer: a node ticket or `host:port`.
    pub fn peer(mut self, peer: impl Into<String>) -> Self {
        self.sources.peers.push(peer.into());
        self
    }

    /// Binds the node's UDP socket to this address.
    pub fn bind(mut self, addr: Option<SocketAddr>) -> Self {
        self.bind = addr;
        self
    }

    /// Binds this UDP port on every interface (a stable ticket across restarts).
    pub fn port(mut self, port: Option<u16>) -> Self {
        self.port = port;
        self
    }

    /// Relay circuits this node carries for peers that cannot reach each other (0: none; it still
    /// introduces them for hole punches).
    pub fn relay_circuits(mut self, circuits: usize) -> Self {
        self.relay_circuits = circuits;
        self
    }

    /// Connections kept at once, every protocol together; more incoming ones are refused.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// A node without the network: stores only (a command that reads or appends to a log while no
    /// node runs). [`LogHandle::share`] fails on it.
    pub fn offline(mut self) -> Self {
        self.network = false;
        self
    }

    /// Serves the HTTP gateway (blobs and shares for this machine's browser, see [`crate::gateway`])
    /// on `127.0.0.1:PORT` (0: any free port; [`Node::gateway_addr`] tells which), or not at all
    /// with `None`. Without this call a node does as its `config.toml` says (`[gateway] port`), and
    /// serves none if it says nothing. A port in use fails [`NodeBuilder::spawn`]. Needs the
    /// `gateway` feature (on by default) and the network.
    pub fn gateway(mut self, port: Option<u16>) -> Self {
        self.gateway = port.map_or(GatewayChoice::Off, GatewayChoice::Port);
        self
    }

    /// Serves the HTTP gateway as `pairs node` does: on `config.toml`'s `[gateway] port`, else on
    /// [`DEFAULT_GATEWAY_PORT`], or on any free port when that default is taken (another node on
    /// this machine); none if the config says `enabled = false`.
    pub fn gateway_by_default(mut self) -> Self {
        self.gateway = GatewayChoice::ConfigOrDefault;
        self
    }

    /// Serves protocol `alpn` on the node's router, next to the node's own protocols.
    pub fn accept(
        mut self,
        alpn: impl AsRef<[u8]>,
        handler: impl pairs_net::ProtocolHandler,
    ) -> Self {
        let alpn = alpn.as_ref().to_vec();
        self.protocols.push(Box::new(move |router: RouterBuilder| {
            router.accept(alpn, handler)
        }));
        self
    }

    /// Starts the node: loads or creates its key, binds its socket, starts discovery and serves
    /// its protocols.
    pub async fn spawn(mut self) -> Result<Node> {
        let protocols = std::mem::take(&mut self.protocols);
        let data_dir = match &self.storage {
            Storage::Dir(dir) => Some(home::data_dir(dir.as_deref())?),
            Storage::Memory => None,
        };
        let secret = match (&self.key, &data_dir) {
            (KeyChoice::Given(key), _) => (**key).clone(),
            (KeyChoice::Stored, Some(dir)) => home::node_key(Some(dir))?,
            (KeyChoice::Stored | KeyChoice::Fresh, _) => SecretKey::generate(),
        };
        let logs = LogRegistry::new(data_dir.clone());
        let blobs = BlobService::open(data_dir.as_deref())?;
        let mut gateway_listener = None;
        let net = if self.network {
            let (config, config_path) = match &data_dir {
                Some(dir) => Config::load(Some(dir))?,
                None => (Config::default(), PathBuf::new()),
            };
            let gateway = gateway_port(self.gateway, &config.gateway);
            let sources =
                Sources::from_config(config, config_path.clone(), self.isolated, &self.sources)?;
            if let Some((port, fallback)) = gateway {
                gateway_listener = Some(bind_gateway(port, fallback, &config_path).await?);
            }
            Some(Net::start(&self, protocols, secret.clone(), sources, logs.clone()).await?)
        } else {
            if matches!(self.gateway, GatewayChoice::Port(_)) {
                anyhow::bail!(
                    "an offline node serves no HTTP gateway: leave out `gateway` or `offline`"
                );
            }
            None
        };
        let node = Node {
            inner: Arc::new(NodeInner {
                secret,
                data_dir,
                net,
                logs,
                blobs,
                folders: Default::default(),
                shared: Mutex::new(HashMap::new()),
                gateway: Mutex::new(None),
            }),
        };
        #[cfg(not(feature = "gateway"))]
        let _ = gateway_listener;
        #[cfg(feature = "gateway")]
        if let Some(listener) = gateway_listener {
            let running = crate::gateway::start(&node, listener);
            *node.inner.gateway.lock().expect("gateway lock") = Some(running);
        }
        if let Some(net) = &node.inner.net {
            tracing::info!(ticket = %net.router.endpoint().node_addr().to_ticket(), "node up");
        }
        Ok(node)
    }
}

/// The network half of a node.
struct Net {
    router: Router,
    swarm: Swarm,
    nat: Nat,
    sources: Sources,
    resolved: Resolutions,
}

impl Net {
    async fn start(
        builder: &NodeBuilder,
        protocols: Vec<AddProtocol>,
        secret: SecretKey,
        sources: Sources,
        logs: LogRegistry,
    ) -> Result<Self> {
        let mut config = EndpointConfig::new(secret);
        config.bind = builder.bind;
        config.port = builder.port.or(sources.port).unwrap_or(0);
        let endpoint = Endpoint::bind(config).await?;
        // Every node helps its peers through NATs (introductions for hole punches, a few relay
        // circuits) and asks them for the same.
        let nat = Nat::new(
            &endpoint,
            NatConfig {
                relay: RelayLimits {
                    max_circuits: builder.relay_circuits,
                    max_circuits_per_node: 2,
                    ..RelayLimits::default()
                },
                ..NatConfig::default()
            },
        );
        let swarm = Swarm::new(
            endpoint.clone(),
            SwarmConfig {
                mdns: sources.lan,
                dht: sources.dht.clone(),
                nat: Some(nat.clone()),
                ..SwarmConfig::default()
            },
        )?;
        let mut router = Router::builder(endpoint.clone())
            .max_connections(builder.max_connections)
            .accept(SWARM_ALPN, swarm.handler())
            .accept(nat::wire::ALPN, nat.handler())
            .accept(LOG_ALPN, LogServer::new(logs));
        for add in protocols {
            router = add(router);
        }
        let router = router.spawn();
        for peer in &sources.peers {
            swarm.add_peer(peer.clone())?;
        }
        let resolved = names::start(&sources, &swarm);
        Ok(Self {
            router,
            swarm,
            nat,
            sources,
            resolved,
        })
    }
}

/// A running node. Cheap to clone; [`Node::shutdown`] stops it.
#[derive(Clone)]
pub struct Node {
    inner: Arc<NodeInner>,
}

/// A node that does not keep it running (what the gateway holds, so the node can go).
#[cfg(feature = "gateway")]
#[derive(Clone)]
pub(crate) struct WeakNode(std::sync::Weak<NodeInner>);

#[cfg(feature = "gateway")]
impl WeakNode {
    /// The node, unless it is gone.
    pub(crate) fn upgrade(&self) -> Option<Node> {
        self.0.upgrade().map(|inner| Node { inner })
    }
}

struct NodeInner {
    secret: SecretKey,
    data_dir: Option<PathBuf>,
    net: Option<Net>,
    logs: LogRegistry,
    blobs: BlobService,
    /// Folders kept in step with shares.
    folders: crate::share::Folders,
    /// Logs shared on the swarm: the task replicating each with its peers.
    shared: Mutex<HashMap<LogId, logs::Sharing>>,
    /// The HTTP gateway, if it serves.
    gateway: Mutex<Option<GatewayRunning>>,
}

#[cfg(feature = "gateway")]
type GatewayRunning = crate::gateway::Running;
#[cfg(not(feature = "gateway"))]
type GatewayRunning = std::convert::Infallible;

#[cfg(feature = "gateway")]
type GatewayListener = pairs_gateway::Gateway;
#[cfg(not(feature = "gateway"))]
type GatewayListener = std::convert::Infallible;

/// The gateway's port and whether another may be taken if it is in use; `None`: no gateway.
fn gateway_port(
    choice: GatewayChoice,
    config: &crate::config::GatewaySection,
) -> Option<(u16, bool)> {
    match choice {
        GatewayChoice::Off => None,
        GatewayChoice::Port(port) => Some((port, false)),
        _ if config.enabled == Some(false) => None,
        _ if config.port.is_some() => config.port.map(|port| (port, false)),
        GatewayChoice::ConfigOrDefault => Some((DEFAULT_GATEWAY_PORT, true)),
        GatewayChoice::Config => None,
    }
}

/// Binds the gateway's port on 127.0.0.1; with `fallback`, any free port if that one is taken.
#[cfg(feature = "gateway")]
async fn bind_gateway(port: u16, fallback: bool, config_path: &Path) -> Result<GatewayListener> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    match pairs_gateway::Gateway::bind(addr).await {
        Ok(gateway) => Ok(gateway),
        Err(err) if fallback && err.kind() == std::io::ErrorKind::AddrInUse => {
            let gateway = pairs_gateway::Gateway::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
                .await
                .context("cannot listen on 127.0.0.1 for the HTTP gateway")?;
            tracing::warn!(
                "the gateway's port {port} is in use (another pairs node?): serving on port {} instead; \
                 fix one with `[gateway] port = N` in {}",
                gateway.local_addr().port(),
                config_path.display()
            );
            Ok(gateway)
        }
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "the HTTP gateway cannot listen on {addr}: the port is in use (another pairs node, or another \
             program). Pick another with `[gateway] port = N` in {} (0: any free port), or \
             `enabled = false` there to serve none",
            config_path.display()
        ),
        Err(err) => Err(err).with_context(|| format!("the HTTP gateway cannot listen on {addr}")),
    }
}

#[cfg(not(feature = "gateway"))]
async fn bind_gateway(_port: u16, _fallback: bool, _config_path: &Path) -> Result<GatewayListener> {
    anyhow::bail!("this build of pairs has no HTTP gateway (the `gateway` feature is off)")
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id())
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts building a node.
    pub fn builder() -> NodeBuilder {
        NodeBuilder::default()
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.secret.node_id()
    }

    /// The node's data directory; `None` in memory.
    pub fn data_dir(&self) -> Option<&Path> {
        self.inner.data_dir.as_deref()
    }

    /// The node's address (its id and socket addresses); `None` offline.
    pub fn node_addr(&self) -> Option<NodeAddr> {
        self.net().ok().map(|net| net.router.endpoint().node_addr())
    }

    /// The node's ticket, for `--peer` on another node; `None` offline.
    pub fn ticket(&self) -> Option<String> {
        self.node_addr().map(|addr| addr.to_ticket())
    }

    /// The endpoint: dial other nodes with any protocol.
    pub fn endpoint(&self) -> Result<&Endpoint> {
        Ok(self.net()?.router.endpoint())
    }

    /// The swarm: join topics of your own.
    pub fn swarm(&self) -> Result<&Swarm> {
        Ok(&self.net()?.swarm)
    }

    /// The NAT service (hole punching and relaying for this node and its peers).
    pub fn nat(&self) -> Result<&Nat> {
        Ok(&self.net()?.nat)
    }

    /// The discovery sources the node runs.
    pub fn sources(&self) -> Option<&Sources> {
        self.net().ok().map(|net| &net.sources)
    }

    /// What static peers and DNS seeds resolved to.
    pub fn resolved(&self) -> Option<Resolutions> {
        self.net().ok().map(|net| net.resolved.clone())
    }

    /// Where the HTTP gateway listens (always on 127.0.0.1), if this node serves it; see
    /// [`NodeBuilder::gateway`]. Its URLs: [`crate::gateway::origin_url`] and friends.
    pub fn gateway_addr(&self) -> Option<SocketAddr> {
        #[cfg(feature = "gateway")]
        {
            self.inner
                .gateway
                .lock()
                .expect("gateway lock")
                .as_ref()
                .map(|running| running.addr)
        }
        #[cfg(not(feature = "gateway"))]
        None
    }

    #[cfg(feature = "gateway")]
    pub(crate) fn downgrade(&self) -> WeakNode {
        WeakNode(Arc::downgrade(&self.inner))
    }

    fn net(&self) -> Result<&Net> {
        self.inner
            .net
            .as_ref()
            .context("this node runs without the network (built with `offline()`)")
    }

    /// The node's blobs: add files and directories, share them, fetch what a ticket names.
    pub fn blobs(&self) -> Blobs {
        Blobs {
            node: self.clone(),
            service: self.inner.blobs.clone(),
        }
    }

    /// The node's shared folders: publish a folder, keep one in step with a share, fetch paths once.
    pub fn shares(&self) -> crate::share::Shares {
        crate::share::Shares { node: self.clone() }
    }

    pub(crate) fn folders(&self) -> &crate::share::Folders {
        &self.inner.folders
    }

    /// Creates a log owned by a fresh key (kept in the data directory, or in memory) and returns it.
    pub async fn create_log(&self) -> Result<LogHandle> {
        let owner = SecretKey::generate();
        let log = self.inner.logs.create(&owner)?;
        Ok(LogHandle::new(self.clone(), log, owner))
    }

    /// The local replica of the log a ticket names, created empty if this node has none yet.
    pub async fn log(&self, ticket: &LogTicket) -> Result<LogHandle> {
        self.log_by_id(ticket.log).await
    }

    /// The local replica of log `id`, created empty if this node has none yet.
    pub async fn log_by_id(&self, id: LogId) -> Result<LogHandle> {
        let registry = self.inner.logs.clone();
        let log = tokio::task::spawn_blocking(move || registry.open(id)).await??;
        let writer = self
            .inner
            .logs
            .owner_key(&id)?
            .unwrap_or_else(|| self.inner.secret.clone());
        Ok(LogHandle::new(self.clone(), log, writer))
    }

    /// The local replica of log `id` if this node holds one (it is never created).
    pub async fn existing_log(&self, id: LogId) -> Result<Option<LogHandle>> {
        if !self.inner.logs.exists(&id) {
            return Ok(None);
        }
        self.log_by_id(id).await.map(Some)
    }

    /// The logs this node holds (open, or stored in its data directory).
    pub fn logs(&self) -> Vec<LogId> {
        self.inner.logs.list()
    }

    /// Logs shared on the swarm, and the peers each is replicating with now.
    pub fn shared_logs(&self) -> Vec<(LogId, Vec<NodeId>)> {
        let shared = self.inner.shared.lock().expect("shared lock");
        let mut out: Vec<_> = shared
            .iter()
            .map(|(id, sharing)| (*id, sharing.peers()))
            .collect();
        out.sort_by_key(|(id, _)| *id);
        out
    }

    /// Shares again every log that was shared when the node last ran (a `shared` mark in its
    /// directory), so `pairs node` keeps serving them across restarts.
    pub async fn reshare(&self) -> Result<usize> {
        let ids = self.inner.logs.marked_shared();
        for id in &ids {
            self.log_by_id(*id).await?.share().await?;
        }
        let blobs = self.blobs().reshare().await?;
        let folders = self.shares().resume().await?;
        Ok(ids.len() + blobs + folders)
    }

    /// Stops the node: sharing ends, relayed connections hand over what they queued (their last
    /// acknowledgements and close), then the endpoint closes.
    pub async fn shutdown(&self) {
        let gateway = self.inner.gateway.lock().expect("gateway lock").take();
        #[cfg(feature = "gateway")]
        if let Some(gateway) = gateway {
            gateway.stop().await;
        }
        #[cfg(not(feature = "gateway"))]
        let _ = gateway;
        self.inner.folders.stop_all().await;
        // Close the connections before leaving the topics: leaving first would tell every peer
        // "no shared topic", and a peer told that does not dial again when we come back.
        if let Some(net) = &self.inner.net {
            net.nat.shutdown().await;
            net.router.endpoint().close().await;
        }
        let sharing: Vec<_> = self
            .inner
            .shared
            .lock()
            .expect("shared lock")
            .drain()
            .collect();
        drop(sharing);
    }

    pub(crate) fn registry(&self) -> &LogRegistry {
        &self.inner.logs
    }

    pub(crate) fn shared(&self) -> &Mutex<HashMap<LogId, logs::Sharing>> {
        &self.inner.shared
    }
}

impl Node {
    /// Whether this node holds the owner key of `log` (it created it).
    pub fn owns_log(&self, log: &LogId) -> bool {
        matches!(self.inner.logs.owner_key(log), Ok(Some(_)))
    }

    /// Entries of `log` if it is open in this node.
    pub fn open_log_len(&self, log: &LogId) -> Option<u64> {
        self.inner.logs.open_len(log)
    }

    /// Live swarm connections and the peers on them (none offline).
    pub async fn connection_summary(&self) -> (u64, Vec<NodeId>) {
        match self.swarm().ok() {
            Some(swarm) => match swarm.stats().await {
                Ok(stats) => (stats.connections as u64, stats.peers),
                Err(_) => (0, Vec::new()),
            },
            None => (0, Vec::new()),
        }
    }

    /// Connects to node `id` with protocol `alpn`, finding its addresses wherever the node can: the
    /// swarm's sources (LAN, static peers, peer exchange, a connection it already has), then the
    /// node's signed address record on the DHT.
    pub async fn connect(&self, id: NodeId, alpn: &[u8]) -> Result<pairs_net::Connection> {
        let swarm = self.swarm()?;
        let mut addrs = swarm.addrs_of(id).await?;
        if addrs.is_empty()
            && let Some(dht) = swarm.dht()
        {
            addrs = dht
                .resolve(id)
                .await
                .with_context(|| format!("cannot find {} on the DHT", id.short()))?
                .addrs;
        }
        if addrs.is_empty() {
            anyhow::bail!(
                "no address known for {} (not on the LAN, not a static peer, no DHT): use its ticket",
                id.short()
            );
        }
        Ok(self
            .endpoint()?
            .connect(&NodeAddr::new(id, addrs), alpn)
            .await?)
    }

    /// Also connects to this peer: a node ticket, or `host:port` (whose id the handshake tells).
    pub async fn add_peer(&self, peer: &str) -> Result<()> {
        let swarm = self.swarm()?;
        if let Ok(addr) = NodeAddr::from_ticket(peer) {
            swarm.add_peer(addr)?;
            return Ok(());
        }
        let addrs = tokio::net::lookup_host(peer).await.with_context(|| {
            format!("{peer:?} is neither a node ticket (as printed by `pairs node`) nor host:port")
        })?;
        for addr in addrs {
            swarm.add_addr(addr)?;
        }
        Ok(())
    }
}

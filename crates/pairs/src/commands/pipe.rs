//! `pairs listen` and `pairs connect`: netcat between two nodes, authenticated and encrypted.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use indicatif::{HumanBytes, ProgressBar, ProgressStyle};
use pairs::code::Code;
use pairs::pipe;
use pairs_base::{NodeAddr, NodeId, Ticket as _};
use pairs_net::discovery::Discovered;
use pairs_net::discovery::dht::{DhtDiscovery, ResolveError};
use pairs_net::discovery::mdns::Mdns;
use pairs_net::nat::{self, Nat, NatConfig, Path as NatPath};
use pairs_net::{Connection, Endpoint, EndpointConfig, Router};
use tokio::sync::mpsc;

use crate::cli::{BindArgs, ConnectArgs, ListenArgs, PortMapping};
use crate::stdio::{StdoutSink, stdin_chunks};
use pairs::config::Sources;
use pairs::home;
use pairs_portmap::{KeptMapping, MappingState};

/// Peers that may wait for their turn under `--keep`; more are turned away as busy.
const WAITING_PEERS: usize = 8;

pub async fn listen(data_dir: Option<&Path>, isolated: bool, args: ListenArgs) -> Result<()> {
    // One signal listener for the whole run, from the start: a signal in the middle of a transfer
    // stops it too, and one before the first peer is never the default action's kill.
    let mut stop = super::stop_requested();
    if args.code {
        let code = Code::generate();
        eprintln!("pairs: on the other side run:\n\n    pairs connect {code}\n");
        let node = code_node(data_dir, isolated, &args.bind, &args.sources).await?;
        // No time limit: the code waits for its peer until stopped.
        let result = code_pipe(&node, &code, None, args.json, &mut stop).await;
        node.shutdown().await;
        return result;
    }
    let endpoint = bind(data_dir, &args.bind, None).await?;
    let helpers = parse_helpers(&args.via)?;
    let (tx, mut incoming) = mpsc::channel(WAITING_PEERS);
    let nat = Nat::new(&endpoint, NatConfig::default());
    let router = Router::builder(endpoint.clone())
        .accept(pipe::ALPN, tx)
        .accept(nat::wire::ALPN, nat.handler())
        .spawn();
    let ticket = endpoint.node_addr().to_ticket();
    if args.json {
        // On stderr like the text: stdout carries the data.
        eprintln!(
            "{}",
            serde_json::json!({
                "event": "listening",
                "node": endpoint.node_id().to_string(),
                "addrs": endpoint.node_addr().addrs,
                "ticket": ticket,
            })
        );
    } else {
        eprintln!(
            "pairs: listening as {}; on the other side run:\n\n    pairs connect {ticket}\n",
            endpoint.node_id()
        );
    }
    for helper in &helpers {
        tokio::spawn(stay_registered(nat.clone(), helper.clone()));
    }
    let turn = match &args.turn {
        Some(server) => {
            let allocation = nat
                .turn_allocate(server)
                .await
                .context("cannot get a TURN allocation")?;
            let mut addr = endpoint.node_addr();
            addr.addrs.insert(0, allocation.relayed());
            if args.json {
                offer_json("turn", &addr.to_ticket());
            } else {
                eprintln!(
                    "pairs: TURN relay at {}; from anywhere, with the same TURN server:\n\n    pairs connect {} --turn USER:PASSWORD@{}\n",
                    allocation.relayed(),
                    addr.to_ticket(),
                    allocation.server()
                );
            }
            Some(allocation)
        }
        None => None,
    };
    let mapping = match port_mapping_protocols(isolated, args.port_mapping.as_ref()) {
        Some(protocols) => {
            let kept = KeptMapping::start(endpoint.local_addr().port(), protocols);
            tokio::spawn(announce_mapping(
                kept.watch(),
                endpoint.clone(),
                nat.clone(),
                args.json,
            ));
            Some(kept)
        }
        None => None,
    };
    if let Some(helper) = helpers.first() {
        if args.json {
            offer_json("helper", &endpoint.node_id().to_string());
        } else {
            eprintln!(
                "pairs: or, from behind any NAT:\n\n    pairs connect {} --via {}\n",
                endpoint.node_id(),
                helper.to_ticket()
            );
        }
    }
    // With the DHT on, our signed address record makes the bare node id enough to connect; on the
    // LAN, our mDNS advertisement does.
    let sources = Sources::resolve(data_dir, isolated, &args.sources.options())?;
    let _mdns = if sources.lan {
        let (found, _ignored) = mpsc::unbounded_channel();
        match Mdns::start(endpoint.node_id(), endpoint.local_addr().port(), found) {
            Ok(mdns) => {
                if args.json {
                    offer_json("lan", &endpoint.node_id().to_string());
                } else {
                    eprintln!(
                        "pairs: or, on this LAN:\n\n    pairs connect {}\n",
                        endpoint.node_id()
                    );
                }
                Some(mdns)
            }
            Err(err) => {
                tracing::info!("{err}");
                None
            }
        }
    } else {
        None
    };
    let _dht = match sources.dht {
        Some(config) => {
            let (found, _ignored) = mpsc::unbounded_channel();
            let dht = DhtDiscovery::start(config, &endpoint, &home::node_key(data_dir)?, found)
                .context("cannot start the DHT")?;
            let dht = std::sync::Arc::new(dht);
            tokio::spawn(announce_dht_path(
                dht.clone(),
                endpoint.node_id(),
                args.json,
            ));
            Some(dht)
        }
        None => None,
    };
    let mut input = stdin_chunks().context("cannot read stdin")?;
    let output = StdoutSink::start().context("cannot write stdout")?;
    let mut result = Ok(());
    let mut stopped = false;
    loop {
        let connection = tokio::select! {
            connection = incoming.recv() => connection,
            _ = &mut stop => None,
        };
        let Some(connection) = connection else { break };
        let peer = connection.remote_node_id();
        if args.json {
            eprintln!(
                "{}",
                serde_json::json!({
                    "event": "connected",
                    "node": peer.to_string(),
                    "addr": connection.remote_addr(),
                })
            );
        } else {
            eprintln!(
                "pairs: connected to {} at {}",
                peer,
                connection.remote_addr()
            );
        }
        let meter = pipe::Meter::default();
        let progress = Progress::start(&meter);
        let served = async {
            let stream = pipe::accept(&connection).await?;
            pipe::run_metered(&connection, stream, &mut input, output.sender(), &meter).await
        };
        let served = tokio::select! {
            served = served => served,
            _ = &mut stop => {
                stopped = true;
                connection.close(pipe::INTERRUPTED, b"interrupted");
                result = Err(anyhow::anyhow!("interrupted; closed the connection to {}", peer.short()));
                break;
            }
        };
        let took = progress.finish();
        match served {
            Ok(t) => summary(&t, took, args.json),
            Err(err) if args.keep => eprintln!("pairs: peer {}: {err}", peer.short()),
            Err(err) => result = Err(err).context(format!("peer {}", peer.short())),
        }
        if !args.keep {
            break;
        }
    }
    // Interrupted, the writer may be stuck on a stdout nobody reads: leave it.
    if !stopped {
        output.finish().context("writing stdout failed")?;
    }
    if let Some(mapping) = mapping {
        mapping.shutdown().await;
    }
    if let Some(turn) = turn {
        turn.shutdown().await;
    }
    // Relayed connections' last packets travel on the helper connection: out before it closes.
    nat.shutdown().await;
    router.shutdown().await;
    result
}

/// Offers the bare node id as a way to connect only once the DHT holds our address record: when
/// the DHT cannot be reached, that way does not work, and saying so helps nobody act.
async fn announce_dht_path(dht: std::sync::Arc<DhtDiscovery>, node: NodeId, json: bool) {
    if !dht.bootstrapped().await {
        tracing::info!("the DHT is unreachable: the node id alone will not find this node");
        return;
    }
    let mut said = None;
    loop {
        match dht.status().await.record.and_then(|r| r.result) {
            Some(Ok(())) => {
                if json {
                    offer_json("dht", &node.to_string());
                } else {
                    eprintln!(
                        "pairs: or, now that the DHT has our address:\n\n    pairs connect {node}\n"
                    );
                }
                return;
            }
            // The DHT driver tries again on its own schedule.
            Some(Err(err)) if said.as_ref() != Some(&err) => {
                tracing::info!(%err, "our address record did not reach the DHT yet");
                said = Some(err);
            }
            // The put is still running.
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The port mapping protocols to try: the flag's, else all of them unless isolated.
pub(crate) fn port_mapping_protocols(
    isolated: bool,
    flag: Option<&PortMapping>,
) -> Option<Vec<pairs_portmap::Protocol>> {
    match flag {
        Some(PortMapping::Off) => None,
        Some(PortMapping::Protocols(protocols)) => Some(protocols.clone()),
        None if isolated => None,
        None => Some(pairs_portmap::Protocol::ALL.to_vec()),
    }
}

/// Tells the user (and the NAT service) once the router forwards our port.
async fn announce_mapping(
    mut state: tokio::sync::watch::Receiver<MappingState>,
    endpoint: Endpoint,
    nat: Nat,
    json: bool,
) {
    let mut announced = None;
    loop {
        let current = state.borrow_and_update().clone();
        match current {
            MappingState::Mapped { protocol, external } if announced != Some(external) => {
                nat.add_mapped(external);
                let mut addr = endpoint.node_addr();
                addr.addrs.insert(0, external);
                if json {
                    offer_json("port-mapping", &addr.to_ticket());
                } else {
                    eprintln!(
                        "pairs: port mapped with {protocol}: reachable at {external}; from anywhere:\n\n    pairs connect {}\n",
                        addr.to_ticket()
                    );
                }
                announced = Some(external);
            }
            MappingState::Failed(errors) if announced.is_none() => {
                tracing::info!(?errors, "no port mapping");
            }
            _ => {}
        }
        if state.changed().await.is_err() {
            return;
        }
    }
}

pub async fn connect(data_dir: Option<&Path>, isolated: bool, args: ConnectArgs) -> Result<()> {
    // From the start, so that a signal while dialing or right after is handled, not a kill.
    let mut stop = super::stop_requested();
    let endpoint = bind(
        data_dir,
        &args.bind,
        Some(Duration::from_secs(args.timeout)),
    )
    .await?;
    let helpers = parse_helpers(&args.via)?;
    if Code::looks_like_one(&args.ticket) {
        let code = super::parse_code(&args.ticket, "pairs listen --code")?;
        endpoint.close().await;
        let node = code_node(data_dir, isolated, &args.bind, &args.sources).await?;
        let wait = Some(Duration::from_secs(args.timeout));
        let result = code_pipe(&node, &code, wait, false, &mut stop).await;
        node.shutdown().await;
        return result;
    }
    let target = match NodeAddr::from_ticket(&args.ticket) {
        Ok(target) => target,
        Err(ticket_err) => match args.ticket.parse::<NodeId>() {
            // A helper the peer is registered with needs no addresses.
            Ok(node) if !helpers.is_empty() => NodeAddr::new(node, Vec::new()),
            Ok(node) => tokio::select! {
                found = resolve(data_dir, isolated, &args, &endpoint, node) => found?,
                _ = &mut stop => bail!("interrupted while looking up {}", node.short()),
            },
            Err(_) => return Err(not_a_target(&args.ticket, ticket_err)),
        },
    };
    // One NAT service for the endpoint (it owns the socket's STUN traffic), if anything needs it.
    let nat = (!helpers.is_empty() || args.turn.is_some())
        .then(|| Nat::new(&endpoint, NatConfig::default()));
    let turn = match (&args.turn, &nat) {
        (Some(server), Some(nat)) => {
            let allocation = nat
                .turn_allocate(server)
                .await
                .context("cannot get a TURN allocation")?;
            // The peer's relayed addresses on the same server are reached through ours.
            let relay_ip = allocation.relayed().ip();
            for addr in target.addrs.iter().filter(|a| a.ip() == relay_ip) {
                allocation.route(*addr);
            }
            Some(allocation)
        }
        _ => None,
    };
    let dialing = std::time::Instant::now();
    let (connection, mut how) = tokio::select! {
        reached = reach(&endpoint, &target, &helpers, nat.as_ref()) => reached?,
        _ = &mut stop => bail!("interrupted while connecting to {}", target.node_id.short()),
    };
    let took = dialing.elapsed();
    if let Some(allocation) = &turn
        && connection.remote_addr().ip() == allocation.relayed().ip()
    {
        how = format!("relayed by TURN server {}", allocation.server());
    }
    eprintln!(
        "pairs: connected to {} at {} ({how}) in {} ms",
        connection.remote_node_id(),
        connection.remote_addr(),
        took.as_millis()
    );
    let mut input = stdin_chunks().context("cannot read stdin")?;
    let output = StdoutSink::start().context("cannot write stdout")?;
    let meter = pipe::Meter::default();
    let progress = Progress::start(&meter);
    let transfer = async {
        let stream = pipe::open(&connection).await?;
        pipe::run_metered(&connection, stream, &mut input, output.sender(), &meter).await
    };
    let result = tokio::select! {
        result = transfer => {
            let took = progress.finish();
            output.finish().context("writing stdout failed")?;
            result.map(|t| summary(&t, took, false)).map_err(anyhow::Error::from)
        }
        _ = &mut stop => {
            // Said to the peer at once, rather than leaving it to time out.
            connection.close(pipe::INTERRUPTED, b"interrupted");
            Err(anyhow::anyhow!("interrupted; closed the connection"))
        }
    };
    if let Some(nat) = nat {
        nat.shutdown().await;
    }
    endpoint.close().await;
    if let Some(allocation) = turn {
        allocation.shutdown().await;
    }
    result?;
    Ok(())
}

/// Why `text` is neither a node ticket nor a node id, in the words that help: a string that looks
/// like a node id cut short says so, rather than that it lacks a ticket's prefix.
fn not_a_target(text: &str, ticket_err: pairs_base::TicketError) -> anyhow::Error {
    let text = text.trim();
    let base32 = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || (b'2'..=b'7').contains(&b));
    match ticket_err {
        pairs_base::TicketError::WrongKind { found: None, .. } if base32 => anyhow::anyhow!(
            "not a node id or node ticket: a node id has {} characters, this has {} (cut short when copied?)",
            NodeId::TEXT_LEN,
            text.len()
        ),
        other => other.into(),
    }
}

/// Finds `node`'s addresses on the LAN (its mDNS advertisement) and on the DHT (its signed record)
/// at once: the first answer wins, so a LAN without internet needs no DHT.
async fn resolve(
    data_dir: Option<&Path>,
    isolated: bool,
    args: &ConnectArgs,
    endpoint: &Endpoint,
    node: NodeId,
) -> Result<NodeAddr> {
    let sources = Sources::resolve(data_dir, isolated, &args.sources.options())?;
    if !sources.lan && sources.dht.is_none() {
        bail!(
            "{node} is a node id without addresses: finding them needs the LAN (mDNS) or the DHT, which --isolated, --no-lan, --no-dht or the configuration turned off; use the node's ticket instead"
        );
    }
    let (lan_tx, mut lan) = mpsc::unbounded_channel();
    let _mdns = if sources.lan {
        match Mdns::start(endpoint.node_id(), endpoint.local_addr().port(), lan_tx) {
            Ok(mdns) => Some(mdns),
            Err(err) => {
                tracing::info!("{err}");
                None
            }
        }
    } else {
        None
    };
    let dht = match sources.dht {
        Some(config) => {
            let (found, _ignored) = mpsc::unbounded_channel();
            Some(
                DhtDiscovery::start(config, endpoint, &home::node_key(data_dir)?, found)
                    .context("cannot start the DHT")?,
            )
        }
        None => None,
    };
    let places = match (&_mdns, &dht) {
        (Some(_), Some(_)) => "on the LAN and the DHT",
        (Some(_), None) => "on the LAN",
        _ => "on the DHT",
    };
    eprintln!("pairs: looking up {} {places}", node.short());
    let on_lan = async {
        while let Some(found) = lan.recv().await {
            if let Discovered::Found(addr) = found
                && addr.node_id == node
            {
                return addr;
            }
        }
        std::future::pending().await
    };
    // A node that just started may not have stored its record yet: ask again for a while. An
    // error (not bootstrapped: offline) leaves the LAN to answer.
    let dht_error = std::sync::Mutex::new(None);
    let on_dht = async {
        let Some(dht) = &dht else {
            return std::future::pending().await;
        };
        loop {
            match dht.resolve(node).await {
                Ok(addr) => return addr,
                Err(ResolveError::NotFound { .. }) => {}
                Err(err) => *dht_error.lock().expect("lock") = Some(err.to_string()),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    };
    let found = tokio::time::timeout(Duration::from_secs(args.timeout), async {
        tokio::select! {
            addr = on_lan => addr,
            addr = on_dht => addr,
        }
    })
    .await;
    match found {
        Ok(addr) => Ok(addr),
        Err(_) => {
            let dht = match dht_error.lock().expect("lock").take() {
                Some(err) => format!(" (the DHT: {err})"),
                None => String::new(),
            };
            bail!(
                "found no addresses of {} {places} within {}s{dht}; is it running? (--timeout SECS waits longer)",
                node.short(),
                args.timeout
            )
        }
    }
}

/// Under `listen --json`: one more way to reach this listener, `connect` being what to give
/// `pairs connect` (a ticket or the node id; with `how` "turn" or "helper", plus `--turn` or
/// `--via`).
fn offer_json(how: &str, connect: &str) {
    eprintln!(
        "{}",
        serde_json::json!({ "event": "reachable", "how": how, "connect": connect })
    );
}

/// A node for a short code: a fresh key (a code is for one transfer), the discovery flags.
async fn code_node(
    data_dir: Option<&Path>,
    isolated: bool,
    bind: &BindArgs,
    sources: &crate::cli::SourceArgs,
) -> Result<pairs::Node> {
    let mut builder = pairs::Node::builder()
        .isolated(isolated)
        .sources(sources.options())
        .bind(bind.bind)
        .port(bind.port)
        .fresh_key();
    if let Some(dir) = data_dir {
        builder = builder.data_dir(dir);
    }
    builder.spawn().await
}

/// Meets the peer that knows `code` (on the swarm topic of its nameplate), proves both know the
/// same code, then pipes stdin and stdout with it. The first peer met gets the one attempt: a
/// wrong code ends the run on both sides. `wait`: how long to look for the peer.
async fn code_pipe(
    node: &pairs::Node,
    code: &Code,
    wait: Option<Duration>,
    json: bool,
    stop: &mut super::Stop,
) -> Result<()> {
    let super::Met {
        peer,
        stream,
        _topic,
    } = super::meet_by_code(node, code, wait, "pairs listen --code", stop).await?;
    let connection = peer.connection().clone();
    eprintln!(
        "pairs: connected to {} at {} (code {code})",
        peer.node_id(),
        connection.remote_addr()
    );
    let mut input = stdin_chunks().context("cannot read stdin")?;
    let output = StdoutSink::start().context("cannot write stdout")?;
    let meter = pipe::Meter::default();
    let progress = Progress::start(&meter);
    let transfer = pipe::run_metered(&connection, stream, &mut input, output.sender(), &meter);
    tokio::select! {
        result = transfer => {
            let took = progress.finish();
            output.finish().context("writing stdout failed")?;
            summary(&result?, took, json);
            Ok(())
        }
        _ = &mut *stop => {
            connection.close(pipe::INTERRUPTED, b"interrupted");
            bail!("interrupted; closed the connection")
        }
    }
}

/// A progress line on a terminal (nothing otherwise): bytes each way and the rate, while a
/// transfer runs.
struct Progress {
    bar: ProgressBar,
    started: std::time::Instant,
    ticker: tokio::task::JoinHandle<()>,
}

impl Progress {
    fn start(meter: &pipe::Meter) -> Self {
        // indicatif draws only when stderr is a terminal.
        let bar = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("valid template"));
        let started = std::time::Instant::now();
        let ticker = tokio::spawn({
            let (bar, meter) = (bar.clone(), meter.clone());
            async move {
                loop {
                    let secs = started.elapsed().as_secs_f64().max(0.001);
                    bar.set_message(format!(
                        "sent {} ({}/s), received {} ({}/s)",
                        HumanBytes(meter.sent()),
                        HumanBytes((meter.sent() as f64 / secs) as u64),
                        HumanBytes(meter.received()),
                        HumanBytes((meter.received() as f64 / secs) as u64),
                    ));
                    bar.tick();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        });
        Self {
            bar,
            started,
            ticker,
        }
    }

    /// Clears the line; how long the transfer took.
    fn finish(self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.ticker.abort();
        self.bar.finish_and_clear();
    }
}

/// The end of a transfer: bytes, time, rate, and the BLAKE3 of each direction (what `b3sum`
/// prints for the same bytes), so both sides can compare.
fn summary(t: &pipe::Transferred, took: Duration, json: bool) {
    let secs = took.as_secs_f64().max(0.001);
    if json {
        eprintln!(
            "{}",
            serde_json::json!({
                "event": "done",
                "sent": t.sent,
                "received": t.received,
                "seconds": (secs * 1000.0).round() / 1000.0,
                "sent_blake3": t.sent_blake3.to_hex().as_str(),
                "received_blake3": t.received_blake3.to_hex().as_str(),
            })
        );
        return;
    }
    let rate = HumanBytes(((t.sent + t.received) as f64 / secs) as u64);
    eprintln!(
        "pairs: sent {}, received {} in {secs:.2} s ({rate}/s)",
        HumanBytes(t.sent),
        HumanBytes(t.received)
    );
    if t.sent > 0 {
        eprintln!("pairs: blake3 of what was sent:     {}", t.sent_blake3);
    }
    if t.received > 0 {
        eprintln!("pairs: blake3 of what was received: {}", t.received_blake3);
    }
}

/// Parses `--via` tickets.
fn parse_helpers(tickets: &[String]) -> Result<Vec<NodeAddr>> {
    tickets
        .iter()
        .map(|t| {
            NodeAddr::from_ticket(t).with_context(|| {
                format!("--via needs a node ticket (from `pairs serve`), not '{t}'")
            })
        })
        .collect()
}

/// Keeps this node registered with `helper`, registering again (with back-off) when the connection
/// ends or fails.
async fn stay_registered(nat: Nat, helper: NodeAddr) {
    let short = helper.node_id.short();
    let mut backoff = Duration::from_secs(1);
    loop {
        match nat.register(&helper).await {
            Ok(registration) => {
                eprintln!(
                    "pairs: reachable through helper {short} (it sees us at {})",
                    registration.observed()
                );
                backoff = Duration::from_secs(1);
                registration.closed().await;
                eprintln!("pairs: lost helper {short}; registering again");
            }
            Err(err) => {
                eprintln!("pairs: {err}; retrying in {}s", backoff.as_secs());
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

/// Dials `target` at its addresses, then through each helper in turn with `nat` (punch, else relay).
/// Says how the connection was made.
async fn reach(
    endpoint: &Endpoint,
    target: &NodeAddr,
    helpers: &[NodeAddr],
    nat: Option<&Nat>,
) -> Result<(Connection, String)> {
    // Without helpers, the addresses are all there is (none: the endpoint says so).
    if !target.addrs.is_empty() || helpers.is_empty() {
        match endpoint.connect(target, pipe::ALPN).await {
            Ok(connection) => return Ok((connection, "direct".into())),
            Err(err) if helpers.is_empty() => return Err(err.into()),
            Err(err) => eprintln!("pairs: no direct path ({err}); asking the helper"),
        }
    }
    let nat = nat.expect("the caller makes a NAT service whenever there are helpers");
    let mut last = None;
    for helper in helpers {
        let attempt = async {
            let registration = nat.register(helper).await?;
            let helper_answered = std::time::Instant::now();
            let (connection, path) = nat
                .connect_through(target.node_id, pipe::ALPN, &registration)
                .await?;
            Ok::<_, nat::ConnectError>((connection, path, helper_answered.elapsed()))
        };
        match attempt.await {
            Ok((connection, path, after_helper)) => {
                let how = match path {
                    NatPath::Direct(_) => "direct".to_string(),
                    NatPath::Punched { attempt, .. } => format!("hole punched, attempt {attempt}"),
                    NatPath::Relayed(helper) => format!("relayed by {}", helper.short()),
                };
                let how = format!("{how}; {} ms after the helper", after_helper.as_millis());
                return Ok((connection, how));
            }
            Err(err) => {
                eprintln!("pairs: {err}");
                last = Some(err);
            }
        }
    }
    Err(last.expect("at least one helper was tried").into())
}

pub(crate) async fn bind(
    data_dir: Option<&Path>,
    bind: &BindArgs,
    connect_timeout: Option<Duration>,
) -> Result<Endpoint> {
    let mut config = EndpointConfig::new(home::node_key(data_dir)?);
    config.bind = bind.bind;
    config.port = bind.port.unwrap_or(0);
    if let Some(timeout) = connect_timeout {
        config.connect_timeout = timeout;
    }
    Ok(Endpoint::bind(config).await?)
}

//! LAN discovery with DNS-SD over multicast DNS (RFC 6762/6763), through the `mdns-sd` crate.
//!
//! Every node advertises the service `_pairs._udp.local.` on each up, multicast-capable interface:
//! an SRV record with its QUIC port, A/AAAA records, and a TXT record holding its node id (`id`) and
//! the discovery protocol version (`v`). It browses for the same service and reports each instance
//! as a [`Discovered`] event. Topics are never advertised: membership is settled after connecting.
//!
//! Traffic stays linear in the number of nodes because `mdns-sd` does what RFC 6762 asks: cached
//! answers, known-answer suppression, query back-off, and re-announcement only when an address
//! changes. Interfaces that appear or vanish are picked up by its periodic interface check.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};

use mdns_sd::{ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent, ServiceInfo};
use pairs_base::{NodeAddr, NodeId};
use tokio::sync::mpsc;
use tracing::debug;

use super::Discovered;

/// The DNS-SD service type every pairs node advertises.
pub const SERVICE_TYPE: &str = "_pairs._udp.local.";

/// Version of what the TXT record says; instances with another version are ignored.
pub const TXT_VERSION: &str = "1";

/// Most addresses taken from one advertisement; a longer list is cut.
const MAX_ADDRS: usize = 8;

/// When the extra announcement goes out after start.
const EARLY_REANNOUNCE: std::time::Duration = std::time::Duration::from_millis(250);

/// When the extra query goes out after start.
const EARLY_REQUERY: std::time::Duration = std::time::Duration::from_millis(300);

/// How often (seconds) `mdns-sd` looks for interfaces that appeared or vanished.
const INTERFACE_CHECK_SECS: u32 = 5;

/// Why LAN discovery could not start.
#[derive(Debug, thiserror::Error)]
#[error("LAN discovery (mDNS) could not start: {0}")]
pub struct MdnsError(String);

/// A running mDNS advertisement and browser. Stops (and says goodbye on the LAN) when dropped.
pub struct Mdns {
    daemon: ServiceDaemon,
    fullname: String,
}

impl std::fmt::Debug for Mdns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdns")
            .field("fullname", &self.fullname)
            .finish()
    }
}

impl Mdns {
    /// Advertises `node` at UDP `port` on every interface and reports other nodes to `events`.
    /// Needs a tokio runtime.
    pub fn start(
        node: NodeId,
        port: u16,
        events: mpsc::UnboundedSender<Discovered>,
    ) -> Result<Self, MdnsError> {
        let err = |e: mdns_sd::Error| MdnsError(e.to_string());
        let daemon = ServiceDaemon::new().map_err(err)?;
        daemon
            .set_ip_check_interval(INTERFACE_CHECK_SECS)
            .map_err(err)?;
        let id = node.to_string();
        // The instance and host names are the node id: unique by construction, so probing for name
        // conflicts (RFC 6762 §8) is skipped. A conflict can only come from a spoofer, and probing
        // would let one force a rename.
        let host = format!("{id}.local.");
        let mut info = ServiceInfo::new(
            SERVICE_TYPE,
            &id,
            &host,
            "",
            port,
            &[("id", id.as_str()), ("v", TXT_VERSION)][..],
        )
        .map_err(err)?
        .enable_addr_auto();
        info.set_requires_probe(false);
        let fullname = info.get_fullname().to_string();
        daemon.register(info.clone()).map_err(err)?;
        let browse = daemon.browse(SERVICE_TYPE).map_err(err)?;
        tokio::spawn(relay_events(daemon.clone(), browse, node, events));
        // Nodes started a moment after us missed our first announcement (their sockets were not
        // up yet); one more shortly after start lets them find us without waiting for the
        // one-second re-announcement. RFC 6762 §8.3 allows up to eight.
        let again = daemon.clone();
        tokio::spawn(async move {
            tokio::time::sleep(EARLY_REANNOUNCE).await;
            let _ = again.register(info);
        });
        Ok(Self { daemon, fullname })
    }
}

impl Drop for Mdns {
    fn drop(&mut self) {
        // Goodbye packets (TTL 0) tell peers at once instead of after the records expire.
        let _ = self.daemon.unregister(&self.fullname);
        let _ = self.daemon.shutdown();
    }
}

async fn relay_events(
    daemon: ServiceDaemon,
    mut browse: mdns_sd::Receiver<ServiceEvent>,
    me: NodeId,
    events: mpsc::UnboundedSender<Discovered>,
) {
    // Instance name -> node id, to report removals (which carry only the name).
    let mut instances: HashMap<String, NodeId> = HashMap::new();
    // A node whose query went out before a peer's socket was up, and whose own announcement that
    // peer missed the same way, would otherwise wait for the one-second re-query. Browsing again
    // sends one more query early (with known answers, so peers already found stay quiet) and
    // restarts the back-off. The new browse replaces the old one in the daemon; the old receiver
    // is read until the daemon lets it go, so nothing already sent to it is lost.
    let requery = tokio::time::sleep(EARLY_REQUERY);
    tokio::pin!(requery);
    let mut requeried = false;
    let mut replaced: Option<mdns_sd::Receiver<ServiceEvent>> = None;
    loop {
        let event = tokio::select! {
            event = browse.recv_async() => match event {
                Ok(event) => event,
                Err(_) => break,
            },
            event = async { replaced.as_ref().expect("guarded").recv_async().await },
                if replaced.is_some() => match event {
                Ok(event) => event,
                Err(_) => {
                    replaced = None;
                    continue;
                }
            },
            () = &mut requery, if !requeried => {
                requeried = true;
                match daemon.browse(SERVICE_TYPE) {
                    Ok(again) => replaced = Some(std::mem::replace(&mut browse, again)),
                    Err(e) => debug!(%e, "mDNS early re-query"),
                }
                continue;
            }
        };
        let out = match event {
            ServiceEvent::ServiceResolved(service) => match parse_service(&service) {
                Ok(addr) if addr.node_id == me => continue,
                Ok(addr) => {
                    instances.insert(service.fullname.to_lowercase(), addr.node_id);
                    Discovered::Found(addr)
                }
                Err(reason) => {
                    debug!(instance = %service.fullname, reason, "ignoring mDNS service");
                    continue;
                }
            },
            ServiceEvent::ServiceRemoved(_, fullname) => {
                match instances.remove(&fullname.to_lowercase()) {
                    Some(node) => Discovered::Lost(node),
                    None => continue,
                }
            }
            _ => continue,
        };
        if events.send(out).is_err() {
            return;
        }
    }
    // The daemon stops with the node: nothing for anyone to act on.
    debug!("mDNS browser stopped");
}

/// Reads a node address from a resolved service, refusing anything that is not a well-formed pairs
/// advertisement. The address is a hint: the handshake proves the id.
pub fn parse_service(service: &ResolvedService) -> Result<NodeAddr, &'static str> {
    match service.get_property_val_str("v") {
        Some(TXT_VERSION) => {}
        Some(_) => return Err("unsupported version"),
        None => return Err("no version in TXT"),
    }
    let id: NodeId = service
        .get_property_val_str("id")
        .ok_or("no id in TXT")?
        .parse()
        .map_err(|_| "id in TXT is not a node id")?;
    let port = service.get_port();
    if port == 0 {
        return Err("port 0");
    }
    let mut addrs: Vec<SocketAddr> = service
        .get_addresses()
        .iter()
        .filter_map(|ip| socket_addr(ip, port))
        .collect();
    // IPv4 first, then global IPv6, then link-local: the order dials are tried in.
    addrs.sort_by_key(|a| match a {
        SocketAddr::V4(_) => 0,
        SocketAddr::V6(v6) if v6.scope_id() == 0 => 1,
        SocketAddr::V6(_) => 2,
    });
    addrs.truncate(MAX_ADDRS);
    if addrs.is_empty() {
        return Err("no usable address");
    }
    Ok(NodeAddr::new(id, addrs))
}

fn socket_addr(ip: &ScopedIp, port: u16) -> Option<SocketAddr> {
    let addr = ip.to_ip_addr();
    let usable = match addr {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    };
    if !usable {
        return None;
    }
    match ip {
        ScopedIp::V6(v6) if v6.addr().is_unicast_link_local() => {
            // A link-local address means nothing without the interface it was seen on.
            let scope = v6.scope_id().index;
            (scope != 0).then(|| SocketAddr::V6(SocketAddrV6::new(*v6.addr(), port, 0, scope)))
        }
        _ => Some(SocketAddr::new(addr, port)),
    }
}

//! Port mapping: asks the router in front of this machine to forward a UDP port, with PCP (RFC 6887),
//! NAT-PMP (RFC 6886) or UPnP IGD, so that peers reach the node without a hole punch.
//!
//! PCP and NAT-PMP go through `crab_nat` to the default gateway; UPnP through `igd-next`, which finds
//! the gateway with SSDP. A [`Mapping`] is renewed by [`Mapping::renew`] and removed by
//! [`Mapping::remove`]; [`KeptMapping`] does both for the life of a node. This crate has nothing of
//! pairs in it: it maps a port for anyone.

#![warn(missing_docs)]

use std::fmt;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::num::NonZeroU16;
use std::str::FromStr;
use std::time::Duration;

use crab_nat::{InternetProtocol, PortMapping, PortMappingOptions, TimeoutConfig};
use igd_next::PortMappingProtocol;
use igd_next::aio::Gateway;
use igd_next::aio::tokio::Tokio;
use tokio::sync::{oneshot, watch};
use tracing::{debug, info, warn};

/// The lease asked for; mappings are renewed at half of what the router grants.
pub const LEASE: Duration = Duration::from_secs(2 * 3600);
/// How long one protocol may take to answer before the next is tried.
pub const PROTOCOL_TIMEOUT: Duration = Duration::from_secs(3);

/// A port mapping protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Port Control Protocol (RFC 6887).
    Pcp,
    /// NAT Port Mapping Protocol (RFC 6886).
    NatPmp,
    /// UPnP Internet Gateway Device.
    Upnp,
}

impl Protocol {
    /// Every protocol, in the order they are tried.
    pub const ALL: [Protocol; 3] = [Protocol::Pcp, Protocol::NatPmp, Protocol::Upnp];

    /// Short lowercase name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pcp => "pcp",
            Protocol::NatPmp => "natpmp",
            Protocol::Upnp => "upnp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protocol::Pcp => "PCP",
            Protocol::NatPmp => "NAT-PMP",
            Protocol::Upnp => "UPnP IGD",
        })
    }
}

impl FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "pcp" => Ok(Protocol::Pcp),
            "natpmp" | "nat-pmp" => Ok(Protocol::NatPmp),
            "upnp" | "igd" => Ok(Protocol::Upnp),
            _ => Err(format!(
                "unknown port mapping protocol '{s}' (one of: pcp, natpmp, upnp)"
            )),
        }
    }
}

/// Errors mapping a port.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// No default gateway (or no UPnP gateway answered).
    #[error("{protocol}: no gateway found{}", detail(.reason))]
    NoGateway {
        /// The protocol tried.
        protocol: Protocol,
        /// Why.
        reason: String,
    },
    /// The gateway answered no, or not at all.
    #[error("{protocol}: {reason}")]
    Failed {
        /// The protocol tried.
        protocol: Protocol,
        /// What went wrong.
        reason: String,
    },
}

fn detail(reason: &str) -> String {
    if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    }
}

enum Handle {
    Crab(PortMapping),
    Upnp {
        gateway: Box<Gateway<Tokio>>,
        external_port: u16,
        local: SocketAddr,
    },
}

/// A port forward on the router.
pub struct Mapping {
    /// The protocol that made it.
    pub protocol: Protocol,
    /// Where peers reach the forwarded port: the router's external address and port.
    pub external: SocketAddr,
    /// The lease the router granted.
    pub lifetime: Duration,
    handle: Handle,
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mapping")
            .field("protocol", &self.protocol)
            .field("external", &self.external)
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

fn timeouts() -> TimeoutConfig {
    TimeoutConfig {
        initial_timeout: Duration::from_millis(250),
        max_retries: 3,
        max_retry_timeout: Some(Duration::from_secs(1)),
    }
}

/// The default IPv4 gateway of this machine.
fn default_gateway(protocol: Protocol) -> Result<IpAddr, MapError> {
    let gateway = netdev::get_default_gateway().map_err(|reason| MapError::NoGateway {
        protocol,
        reason: reason.to_string(),
    })?;
    gateway
        .ipv4
        .first()
        .copied()
        .map(IpAddr::V4)
        .ok_or_else(|| MapError::NoGateway {
            protocol,
            reason: "the default route has no IPv4 gateway".into(),
        })
}

/// The local address packets to `gateway` leave from (no packet is sent to find it).
fn local_ip_towards(gateway: IpAddr, protocol: Protocol) -> Result<IpAddr, MapError> {
    let failed = |reason: std::io::Error| MapError::NoGateway {
        protocol,
        reason: format!("no route to {gateway}: {reason}"),
    };
    let probe = UdpSocket::bind((IpAddr::from([0, 0, 0, 0]), 0)).map_err(failed)?;
    probe.connect((gateway, 9)).map_err(failed)?;
    Ok(probe.local_addr().map_err(failed)?.ip())
}

/// Asks for UDP port `port` of this machine to be forwarded, with `protocol`.
pub async fn map_udp(port: u16, protocol: Protocol) -> Result<Mapping, MapError> {
    let internal = NonZeroU16::new(port).ok_or_else(|| MapError::Failed {
        protocol,
        reason: "port 0 cannot be mapped".into(),
    })?;
    let failed = |reason: String| MapError::Failed { protocol, reason };
    let lease = LEASE.as_secs() as u32;
    match protocol {
        Protocol::Pcp | Protocol::NatPmp => {
            let gateway = default_gateway(protocol)?;
            let options = PortMappingOptions {
                external_port: Some(internal),
                lifetime_seconds: Some(lease),
                timeout_config: Some(timeouts()),
            };
            let (mapping, external_ip) = if protocol == Protocol::Pcp {
                let client = local_ip_towards(gateway, protocol)?;
                let request = crab_nat::pcp::BaseMapRequest::new(
                    gateway.into(),
                    client,
                    InternetProtocol::Udp,
                    internal,
                );
                let mapping = crab_nat::pcp::port_mapping(request, None, None, options)
                    .await
                    .map_err(|e| failed(e.to_string()))?;
                let external_ip = match mapping.mapping_type() {
                    crab_nat::PortMappingType::Pcp { external_ip, .. } => external_ip,
                    crab_nat::PortMappingType::NatPmp => {
                        return Err(failed("the gateway answered PCP with NAT-PMP".into()));
                    }
                };
                (mapping, external_ip)
            } else {
                let mapping = crab_nat::natpmp::port_mapping(
                    gateway.into(),
                    InternetProtocol::Udp,
                    internal,
                    options,
                )
                .await
                .map_err(|e| failed(e.to_string()))?;
                let external_ip =
                    crab_nat::natpmp::external_address(gateway.into(), Some(timeouts()))
                        .await
                        .map_err(|e| failed(format!("external address: {e}")))?;
                (mapping, IpAddr::V4(external_ip))
            };
            Ok(Mapping {
                protocol,
                external: SocketAddr::new(external_ip, mapping.external_port().get()),
                lifetime: Duration::from_secs(u64::from(mapping.lifetime())),
                handle: Handle::Crab(mapping),
            })
        }
        Protocol::Upnp => {
            let mut options = igd_next::SearchOptions::default();
            options.timeout = Some(PROTOCOL_TIMEOUT);
            options.single_search_timeout = Some(PROTOCOL_TIMEOUT);
            let gateway = igd_next::aio::tokio::search_gateway(options)
                .await
                .map_err(|e| MapError::NoGateway {
                    protocol,
                    reason: e.to_string(),
                })?;
            let local = SocketAddr::new(local_ip_towards(gateway.addr.ip(), protocol)?, port);
            let external_ip = gateway
                .get_external_ip()
                .await
                .map_err(|e| failed(format!("external address: {e}")))?;
            // The same port outside as inside when the router allows it, any port otherwise.
            let external_port = match gateway
                .add_port(PortMappingProtocol::UDP, port, local, lease, "pairs")
                .await
            {
                Ok(()) => port,
                Err(err) => {
                    debug!(%err, "same-port UPnP mapping refused; asking for any port");
                    gateway
                        .add_any_port(PortMappingProtocol::UDP, local, lease, "pairs")
                        .await
                        .map_err(|e| failed(e.to_string()))?
                }
            };
            Ok(Mapping {
                protocol,
                external: SocketAddr::new(external_ip, external_port),
                lifetime: LEASE,
                handle: Handle::Upnp {
                    gateway: Box::new(gateway),
                    external_port,
                    local,
                },
            })
        }
    }
}

/// Tries each protocol of `protocols` in turn; the first mapping wins. On failure, every protocol's
/// error.
pub async fn map_udp_any(port: u16, protocols: &[Protocol]) -> Result<Mapping, Vec<MapError>> {
    let mut errors = Vec::new();
    for &protocol in protocols {
        match tokio::time::timeout(PROTOCOL_TIMEOUT * 2, map_udp(port, protocol)).await {
            Ok(Ok(mapping)) => return Ok(mapping),
            Ok(Err(err)) => errors.push(err),
            Err(_) => errors.push(MapError::Failed {
                protocol,
                reason: "no answer in time".into(),
            }),
        }
    }
    Err(errors)
}

impl Mapping {
    /// Renews the lease.
    pub async fn renew(&mut self) -> Result<(), MapError> {
        let protocol = self.protocol;
        let failed = |reason: String| MapError::Failed { protocol, reason };
        match &mut self.handle {
            Handle::Crab(mapping) => {
                mapping.renew().await.map_err(|e| failed(e.to_string()))?;
                self.lifetime = Duration::from_secs(u64::from(mapping.lifetime()));
            }
            Handle::Upnp {
                gateway,
                external_port,
                local,
            } => gateway
                .add_port(
                    PortMappingProtocol::UDP,
                    *external_port,
                    *local,
                    LEASE.as_secs() as u32,
                    "pairs",
                )
                .await
                .map_err(|e| failed(e.to_string()))?,
        }
        Ok(())
    }

    /// Removes the mapping from the router.
    pub async fn remove(self) -> Result<(), MapError> {
        let protocol = self.protocol;
        let failed = |reason: String| MapError::Failed { protocol, reason };
        match self.handle {
            Handle::Crab(mapping) => mapping
                .try_drop()
                .await
                .map_err(|(e, _)| failed(e.to_string())),
            Handle::Upnp {
                gateway,
                external_port,
                ..
            } => gateway
                .remove_port(PortMappingProtocol::UDP, external_port)
                .await
                .map_err(|e| failed(e.to_string())),
        }
    }
}

/// What a [`KeptMapping`] holds at the moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MappingState {
    /// Still asking.
    Trying,
    /// Mapped.
    Mapped {
        /// By which protocol.
        protocol: Protocol,
        /// The external address.
        external: SocketAddr,
    },
    /// No protocol got a mapping; each one's error.
    Failed(Vec<String>),
}

/// A mapping kept for the life of a node: made in the background, renewed at half its lease, made
/// again if a renewal fails, and removed by [`KeptMapping::shutdown`].
#[derive(Debug)]
pub struct KeptMapping {
    state: watch::Receiver<MappingState>,
    stop: Option<oneshot::Sender<oneshot::Sender<()>>>,
}

/// How long to wait before asking again after every protocol failed.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);

impl KeptMapping {
    /// Starts mapping UDP `port` with the first of `protocols` that works.
    pub fn start(port: u16, protocols: Vec<Protocol>) -> Self {
        let (state_tx, state) = watch::channel(MappingState::Trying);
        let (stop, stop_rx) = oneshot::channel();
        tokio::spawn(keep(port, protocols, state_tx, stop_rx));
        Self {
            state,
            stop: Some(stop),
        }
    }

    /// Follows the state as it changes.
    pub fn watch(&self) -> watch::Receiver<MappingState> {
        self.state.clone()
    }

    /// The current state.
    pub fn state(&self) -> MappingState {
        self.state.borrow().clone()
    }

    /// Waits until the first attempt is over (mapped or failed), at most `limit`.
    pub async fn settled(&mut self, limit: Duration) -> MappingState {
        let _ = tokio::time::timeout(
            limit,
            self.state.wait_for(|s| !matches!(s, MappingState::Trying)),
        )
        .await;
        self.state()
    }

    /// Removes the mapping from the router (waits at most a few seconds for it to answer).
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let (done_tx, done) = oneshot::channel();
            if stop.send(done_tx).is_ok() {
                let _ = tokio::time::timeout(PROTOCOL_TIMEOUT * 2, done).await;
            }
        }
    }
}

async fn keep(
    port: u16,
    protocols: Vec<Protocol>,
    state: watch::Sender<MappingState>,
    mut stop: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let mut current: Option<Mapping> = None;
    loop {
        let wait = match &mut current {
            // Asking can take seconds when nothing answers; a shutdown does not wait for it.
            None => match tokio::select! {
                result = map_udp_any(port, &protocols) => result,
                done = &mut stop => {
                    if let Ok(done) = done {
                        let _ = done.send(());
                    }
                    return;
                }
            } {
                Ok(mapping) => {
                    info!(protocol = %mapping.protocol, external = %mapping.external, "port mapped");
                    let _ = state.send(MappingState::Mapped {
                        protocol: mapping.protocol,
                        external: mapping.external,
                    });
                    let wait = mapping.lifetime / 2;
                    current = Some(mapping);
                    wait
                }
                Err(errors) => {
                    debug!(?errors, "no port mapping");
                    let _ = state.send(MappingState::Failed(
                        errors.iter().map(ToString::to_string).collect(),
                    ));
                    RETRY_AFTER_FAILURE
                }
            },
            Some(mapping) => match mapping.renew().await {
                Ok(()) => mapping.lifetime / 2,
                Err(err) => {
                    warn!(%err, "port mapping renewal failed; mapping again");
                    current = None;
                    continue;
                }
            },
        };
        tokio::select! {
            () = tokio::time::sleep(wait.max(Duration::from_secs(30))) => {}
            done = &mut stop => {
                if let Some(mapping) = current.take() {
                    let protocol = mapping.protocol;
                    match mapping.remove().await {
                        Ok(()) => info!(%protocol, "port mapping removed"),
                        Err(err) => warn!(%err, "port mapping not removed"),
                    }
                }
                if let Ok(done) = done {
                    let _ = done.send(());
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_names_round_trip() {
        for protocol in Protocol::ALL {
            assert_eq!(protocol.name().parse::<Protocol>(), Ok(protocol));
        }
        assert!(
            "smoke-signals"
                .parse::<Protocol>()
                .unwrap_err()
                .contains("one of")
        );
    }
}

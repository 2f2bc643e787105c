//! The node's configuration file, `config.toml` in the data directory, and how it combines with
//! the command line into the discovery sources a node runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use pairs_base::{NodeAddr, Ticket as _};
use pairs_net::discovery::dht::DhtConfig;
use serde::Deserialize;

use crate::home;

/// File name of the configuration inside the data directory.
pub const CONFIG_FILE: &str = "config.toml";

/// What `config.toml` may say. Every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// UDP port of the node's socket (0: any).
    pub port: Option<u16>,
    /// Discover peers on the LAN with mDNS.
    pub lan: Option<bool>,
    /// Peers to always try: node tickets or `host:port`.
    pub peers: Vec<String>,
    /// DNS seeds: `name:port` (A/AAAA records are peers at that port) or `name` (TXT records
    /// `pairs=<ticket or ip:port>`).
    pub dns_seeds: Vec<String>,
    /// The Mainline DHT.
    pub dht: DhtSection,
    /// The local HTTP gateway.
    pub gateway: GatewaySection,
}

/// The `[gateway]` table: the HTTP gateway on 127.0.0.1 (blobs and shares for this machine's
/// browser).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewaySection {
    /// Serve it at all (`pairs node` does unless this says `false`).
    pub enabled: Option<bool>,
    /// TCP port on 127.0.0.1 (0: any free port) [default for `pairs node`: 4480].
    pub port: Option<u16>,
}

/// The `[dht]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DhtSection {
    /// Use the DHT at all.
    pub enabled: Option<bool>,
    /// Bootstrap nodes, `host:port` (empty: the public Mainline bootstrap nodes).
    pub bootstrap: Vec<String>,
    /// UDP port of the DHT socket (0: any).
    pub port: Option<u16>,
}

impl Config {
    /// Reads `config.toml` from the data directory; no file means defaults.
    pub fn load(data_dir: Option<&Path>) -> Result<(Self, PathBuf)> {
        let path = home::data_dir(data_dir)?.join(CONFIG_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Self::default(), path));
            }
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        };
        let config = Self::parse(&text).map_err(|err| {
            anyhow::anyhow!(
                "{} is not a valid pairs configuration: {}",
                path.display(),
                err.trim_end()
            )
        })?;
        Ok((config, path))
    }

    /// Parses the text of a `config.toml`; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|err| err.to_string())
    }
}

/// Where peers come from, on top of the configuration file: what the command line's source flags
/// (`--peer`, `--no-dht`, `--no-lan`, `--lan-only`, `--dht-bootstrap`, `--seed`) say.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// Peers to connect to as well: node tickets or `host:port`.
    pub peers: Vec<String>,
    /// No Mainline DHT.
    pub no_dht: bool,
    /// No mDNS on the LAN.
    pub no_lan: bool,
    /// The LAN and the peers only: no DHT, no DNS seeds.
    pub lan_only: bool,
    /// DHT bootstrap nodes, `host:port` (empty: the file's, else the public ones).
    pub dht_bootstrap: Vec<String>,
    /// DNS seeds, `name:port` or `name`.
    pub seeds: Vec<String>,
}

/// The discovery sources a node runs, from the configuration file and the command line.
#[derive(Debug, Clone)]
pub struct Sources {
    /// mDNS on the LAN.
    pub lan: bool,
    /// The DHT, if on.
    pub dht: Option<DhtConfig>,
    /// Peers known with their ids (tickets).
    pub peers: Vec<NodeAddr>,
    /// Peers known by address only.
    pub addrs: Vec<String>,
    /// DNS seeds (`name:port` or `name`, see [`crate::seeds`]).
    pub dns_seeds: Vec<String>,
    /// The node's UDP port, if fixed.
    pub port: Option<u16>,
    /// Where the configuration file is (whether or not it exists).
    pub config_path: PathBuf,
}

impl Sources {
    /// Combines the file and the flags: flags add peers and switch sources off; `isolated` switches
    /// off everything that reaches the network on its own (mDNS, the public DHT, the file's seeds).
    pub fn resolve(data_dir: Option<&Path>, isolated: bool, args: &SourceOptions) -> Result<Self> {
        let (config, config_path) = Config::load(data_dir)?;
        Self::from_config(config, config_path, isolated, args)
    }

    /// Combines a configuration already read (from `config_path`) with the flags; see
    /// [`Sources::resolve`].
    pub fn from_config(
        config: Config,
        config_path: PathBuf,
        isolated: bool,
        args: &SourceOptions,
    ) -> Result<Self> {
        let mut peers = Vec::new();
        let mut addrs = Vec::new();
        for (peer, origin) in config
            .peers
            .iter()
            .map(|p| (p, "config peers"))
            .chain(args.peers.iter().map(|p| (p, "--peer")))
        {
            match parse_peer(peer) {
                Some(Peer::Ticket(addr)) => peers.push(addr),
                Some(Peer::Addr(addr)) => addrs.push(addr),
                None => bail!(
                    "{origin} {peer:?}: neither a node ticket (as printed by `pairs listen`) nor host:port"
                ),
            }
        }
        let lan_only = args.lan_only;
        let lan = !isolated && !args.no_lan && config.lan.unwrap_or(true);
        // Isolated runs reach no network on their own; a bootstrap given on the command line is
        // an explicit request, so it still counts there.
        let dht_on = (!isolated || !args.dht_bootstrap.is_empty())
            && !lan_only
            && !args.no_dht
            && config.dht.enabled.unwrap_or(true);
        let dht = dht_on.then(|| {
            let bootstrap: Vec<String> = if args.dht_bootstrap.is_empty() {
                config.dht.bootstrap.clone()
            } else {
                args.dht_bootstrap.clone()
            };
            let mut dht = if bootstrap.is_empty() {
                DhtConfig::default()
            } else {
                DhtConfig::with_bootstrap(bootstrap)
            };
            dht.port = config.dht.port.unwrap_or(0);
            dht
        });
        let mut dns_seeds = if isolated || lan_only {
            Vec::new()
        } else {
            config.dns_seeds.clone()
        };
        dns_seeds.extend(args.seeds.iter().cloned());
        for seed in &dns_seeds {
            let bad_port = seed
                .rsplit_once(':')
                .is_some_and(|(host, port)| host.is_empty() || port.parse::<u16>().is_err());
            if seed.is_empty() || bad_port {
                bail!(
                    "DNS seed {seed:?}: give a name (its TXT records list peers) or name:port (its A/AAAA records are peers at that port)"
                );
            }
        }
        Ok(Self {
            lan,
            dht,
            peers,
            addrs,
            dns_seeds,
            port: config.port,
            config_path,
        })
    }
}

enum Peer {
    Ticket(NodeAddr),
    Addr(String),
}

fn parse_peer(text: &str) -> Option<Peer> {
    if let Ok(addr) = NodeAddr::from_ticket(text) {
        return Some(Peer::Ticket(addr));
    }
    if text.parse::<SocketAddr>().is_ok() {
        return Some(Peer::Addr(text.to_string()));
    }
    // host:port with a name: resolved when the node starts.
    let (host, port) = text.rsplit_once(':')?;
    (!host.is_empty() && port.parse::<u16>().is_ok()).then(|| Peer::Addr(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_parses_and_unknown_keys_are_refused() {
        let config: Config = toml::from_str(
            "port = 7000\nlan = false\npeers = [\"10.0.0.1:7000\"]\ndns_seeds = [\"seed.example:7000\"]\n\n[dht]\nenabled = true\nbootstrap = [\"10.0.0.2:6881\"]\nport = 6881\n\n[gateway]\nport = 8080\n",
        )
        .unwrap();
        assert_eq!(config.port, Some(7000));
        assert_eq!(config.dht.bootstrap, vec!["10.0.0.2:6881".to_string()]);
        assert_eq!(config.gateway.port, Some(8080));
        let err = toml::from_str::<Config>("prot = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn peers_are_tickets_or_host_port() {
        assert!(matches!(parse_peer("127.0.0.1:9"), Some(Peer::Addr(_))));
        assert!(matches!(parse_peer("seed.example:9"), Some(Peer::Addr(_))));
        assert!(parse_peer("seed.example").is_none());
        assert!(parse_peer("nonsense:port").is_none());
    }
}

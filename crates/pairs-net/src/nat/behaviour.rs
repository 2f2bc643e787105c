//! NAT behaviour discovery (RFC 5780), sans-IO: what the answers of a STUN server with two addresses
//! say about the NAT in front of us, in RFC 4787 terms (mapping and filtering) and in the classic
//! cone names.
//!
//! The tests run in this order, each from the node's own socket:
//! 1. a binding request to the server's primary address: our mapped address, and the server's other
//!    address (OTHER-ADDRESS);
//! 2. filtering, before we have sent anything to the other address (which would open the filter for
//!    it): ask for the answer from the other IP and port, then from the other port only;
//! 3. mapping: binding requests to the other IP (primary port), then to the other IP and port; the
//!    mapped address staying the same means the mapping does not depend on the destination.

use std::net::{IpAddr, SocketAddr};

use serde::Serialize;

/// How a NAT picks the external address for a flow (RFC 4787 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mapping {
    /// No translation: the server sees our own address.
    NoNat,
    /// One external address for every destination (cone NATs).
    EndpointIndependent,
    /// A new external address per destination IP.
    AddressDependent,
    /// A new external address per destination IP and port (symmetric NATs).
    AddressAndPortDependent,
}

impl Mapping {
    /// Short text.
    pub fn name(self) -> &'static str {
        match self {
            Mapping::NoNat => "none",
            Mapping::EndpointIndependent => "endpoint-independent",
            Mapping::AddressDependent => "address-dependent",
            Mapping::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

/// Which inbound packets a NAT lets through to a mapping (RFC 4787 §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Filtering {
    /// From anyone.
    EndpointIndependent,
    /// From IPs we have sent to.
    AddressDependent,
    /// From IP and port pairs we have sent to.
    AddressAndPortDependent,
}

impl Filtering {
    /// Short text.
    pub fn name(self) -> &'static str {
        match self {
            Filtering::EndpointIndependent => "endpoint-independent",
            Filtering::AddressDependent => "address-dependent",
            Filtering::AddressAndPortDependent => "address-and-port-dependent",
        }
    }
}

/// The classic names (RFC 3489), as people know them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NatType {
    /// No NAT and nothing filtering.
    Open,
    /// No NAT, but a firewall filters inbound packets.
    Firewalled,
    /// No NAT; whether a firewall filters is not known (the server has no second address to test
    /// filtering from).
    NoNat,
    /// Endpoint-independent mapping and filtering.
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    RestrictedCone,
    /// Endpoint-independent mapping, address- and port-dependent filtering.
    PortRestrictedCone,
    /// Mapping that depends on the destination.
    Symmetric,
    /// The server could not tell (no second address, or no answers).
    Unknown,
}

impl NatType {
    /// Short text, as `pairs doctor` prints it.
    pub fn name(self) -> &'static str {
        match self {
            NatType::Open => "open (no NAT)",
            NatType::Firewalled => "no NAT, firewalled",
            NatType::NoNat => "no NAT",
            NatType::FullCone => "full cone",
            NatType::RestrictedCone => "restricted cone",
            NatType::PortRestrictedCone => "port-restricted cone",
            NatType::Symmetric => "symmetric",
            NatType::Unknown => "unknown",
        }
    }

    /// Whether peers can reach us without our help (no punch, no relay).
    pub fn publicly_reachable(self) -> bool {
        matches!(self, NatType::Open | NatType::FullCone)
    }
}

/// What the tests saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observations {
    /// Our socket's port and this machine's IP addresses.
    pub local_port: u16,
    /// This machine's IP addresses.
    pub local_ips: Vec<IpAddr>,
    /// Test 1: our mapped address as the primary address saw it.
    pub mapped: Option<SocketAddr>,
    /// Test 1: the server's other address, if it has one.
    pub other_address: Option<SocketAddr>,
    /// Whether an answer from the other IP and port came in.
    pub answered_from_other_ip_and_port: Option<bool>,
    /// Whether an answer from the other port (same IP) came in.
    pub answered_from_other_port: Option<bool>,
    /// Our mapped address as seen by the other IP, primary port.
    pub mapped_at_other_ip: Option<SocketAddr>,
    /// Our mapped address as seen by the other IP and port.
    pub mapped_at_other_ip_and_port: Option<SocketAddr>,
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Behaviour {
    /// How the NAT maps, if the tests could tell.
    pub mapping: Option<Mapping>,
    /// How the NAT filters, if the tests could tell.
    pub filtering: Option<Filtering>,
    /// The classic name.
    pub nat_type: NatType,
}

/// Reads the observations.
pub fn classify(seen: &Observations) -> Behaviour {
    let unknown = Behaviour {
        mapping: None,
        filtering: None,
        nat_type: NatType::Unknown,
    };
    let Some(mapped) = seen.mapped else {
        return unknown;
    };
    let no_nat = mapped.port() == seen.local_port && seen.local_ips.contains(&mapped.ip());
    let filtering = match (
        seen.answered_from_other_ip_and_port,
        seen.answered_from_other_port,
    ) {
        (Some(true), _) => Some(Filtering::EndpointIndependent),
        (Some(false), Some(true)) => Some(Filtering::AddressDependent),
        (Some(false), Some(false)) => Some(Filtering::AddressAndPortDependent),
        _ => None,
    };
    let mapping = if no_nat {
        Some(Mapping::NoNat)
    } else {
        match (seen.mapped_at_other_ip, seen.mapped_at_other_ip_and_port) {
            (Some(second), _) if second == mapped => Some(Mapping::EndpointIndependent),
            (Some(second), Some(third)) if third == second => Some(Mapping::AddressDependent),
            (Some(_), Some(_)) => Some(Mapping::AddressAndPortDependent),
            (Some(_), None) => Some(Mapping::AddressDependent),
            (None, _) => None,
        }
    };
    let nat_type = match (mapping, filtering) {
        (Some(Mapping::NoNat), Some(Filtering::EndpointIndependent)) => NatType::Open,
        (Some(Mapping::NoNat), Some(_)) => NatType::Firewalled,
        (Some(Mapping::NoNat), None) => NatType::NoNat,
        (Some(Mapping::EndpointIndependent), Some(Filtering::EndpointIndependent)) => {
            NatType::FullCone
        }
        (Some(Mapping::EndpointIndependent), Some(Filtering::AddressDependent)) => {
            NatType::RestrictedCone
        }
        (Some(Mapping::EndpointIndependent), Some(Filtering::AddressAndPortDependent)) => {
            NatType::PortRestrictedCone
        }
        (Some(Mapping::AddressDependent | Mapping::AddressAndPortDependent), _) => {
            NatType::Symmetric
        }
        _ => NatType::Unknown,
    };
    Behaviour {
        mapping,
        filtering,
        nat_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn cone(filter: (bool, bool)) -> Observations {
        Observations {
            local_port: 4000,
            local_ips: vec!["192.168.1.11".parse().unwrap()],
            mapped: Some(addr("203.0.113.1:4000")),
            other_address: Some(addr("203.0.113.20:3479")),
            answered_from_other_ip_and_port: Some(filter.0),
            answered_from_other_port: Some(filter.1),
            mapped_at_other_ip: Some(addr("203.0.113.1:4000")),
            mapped_at_other_ip_and_port: None,
        }
    }

    #[test]
    fn the_four_classic_nats_are_told_apart() {
        assert_eq!(classify(&cone((true, true))).nat_type, NatType::FullCone);
        assert_eq!(
            classify(&cone((false, true))).nat_type,
            NatType::RestrictedCone
        );
        assert_eq!(
            classify(&cone((false, false))).nat_type,
            NatType::PortRestrictedCone
        );
        let symmetric = Observations {
            mapped_at_other_ip: Some(addr("203.0.113.1:51000")),
            mapped_at_other_ip_and_port: Some(addr("203.0.113.1:52000")),
            ..cone((false, false))
        };
        let verdict = classify(&symmetric);
        assert_eq!(verdict.nat_type, NatType::Symmetric);
        assert_eq!(verdict.mapping, Some(Mapping::AddressAndPortDependent));
    }

    #[test]
    fn no_nat_and_no_answers() {
        let open = Observations {
            mapped: Some(addr("192.168.1.11:4000")),
            ..cone((true, true))
        };
        assert_eq!(classify(&open).nat_type, NatType::Open);
        let firewalled = Observations {
            mapped: Some(addr("192.168.1.11:4000")),
            ..cone((false, false))
        };
        assert_eq!(classify(&firewalled).nat_type, NatType::Firewalled);
        assert_eq!(
            classify(&Observations::default()).nat_type,
            NatType::Unknown
        );
        // A server without a second address: the mapping is known, the type is not.
        let single = Observations {
            other_address: None,
            answered_from_other_ip_and_port: None,
            answered_from_other_port: None,
            mapped_at_other_ip: None,
            ..cone((false, false))
        };
        assert_eq!(classify(&single).nat_type, NatType::Unknown);
        // The same server in front of no NAT: that much is known.
        let single_open = Observations {
            mapped: Some(addr("192.168.1.11:4000")),
            ..single
        };
        assert_eq!(classify(&single_open).nat_type, NatType::NoNat);
        assert_eq!(NatType::NoNat.name(), "no NAT");
    }
}

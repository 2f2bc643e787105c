//! The addresses this node can be reached at directly: its interfaces' addresses with the bound port.

use std::net::{IpAddr, SocketAddr};

/// Lists the socket addresses a peer could dial to reach a socket bound to `bound`, best first:
/// global and private addresses before loopback. A socket bound to a specific address yields only that
/// address. IPv6 link-local addresses are left out: they need a scope id that means nothing elsewhere.
pub fn direct_addrs(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let want_v4 = true;
    let want_v6 = bound.is_ipv6();
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|iface| iface.ip())
        .filter(|ip| match ip {
            IpAddr::V4(_) => want_v4,
            IpAddr::V6(v6) => want_v6 && !v6.is_unicast_link_local(),
        })
        .collect();
    ips.sort_by_key(|ip| (ip.is_loopback(), ip.is_ipv6()));
    ips.dedup();
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, bound.port()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_bind_is_returned_as_is() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(direct_addrs(addr), vec![addr]);
    }

    #[test]
    fn unspecified_bind_lists_interfaces_with_loopback_last() {
        let addrs = direct_addrs("0.0.0.0:4000".parse().unwrap());
        assert!(addrs.iter().all(|a| a.port() == 4000 && a.is_ipv4()));
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
        let first_loopback = addrs.iter().position(|a| a.ip().is_loopback()).unwrap();
        assert!(addrs[first_loopback..].iter().all(|a| a.ip().is_loopback()));
    }
}

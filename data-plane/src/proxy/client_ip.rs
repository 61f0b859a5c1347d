//! The client address behind trusted proxies, pure logic. When the TCP peer is a trusted proxy,
//! the client is the right-most address of X-Forwarded-For that is not itself trusted (each proxy
//! appends the address it received the request from, so everything left of the first untrusted
//! hop could have been written by the client); without X-Forwarded-For, X-Real-IP. Otherwise the
//! peer is the client, whatever the headers claim.

use http::HeaderMap;
use http::header::HeaderName;
use std::net::IpAddr;

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// An address range: an IP with a prefix length (a plain IP is a full-length prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (s, None),
        };
        let ip: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR"))?;
        let ip = ip.to_canonical();
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0..={max}"))?,
        };
        Ok(Cidr {
            network: ip,
            prefix,
        })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// The proxies allowed to name the client (HttpSettings.trusted_proxies).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Parses IPs and CIDRs; the error names the index of the bad entry.
    pub fn parse(entries: &[String]) -> Result<TrustedProxies, String> {
        entries
            .iter()
            .enumerate()
            .map(|(i, e)| Cidr::parse(e).map_err(|err| format!("[{i}]: {err}")))
            .collect::<Result<_, _>>()
            .map(TrustedProxies)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|c| c.contains(ip))
    }

    /// The client address of a request received from `peer`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        // Right to left over every X-Forwarded-For value: the last header line is the nearest.
        let mut forwarded = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .rev()
            .flat_map(|v| v.to_str().unwrap_or("").rsplit(','))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .peekable();
        if forwarded.peek().is_some() {
            let mut client = peer;
            for hop in forwarded {
                // Garbage means the chain cannot be trusted past this point.
                let Some(ip) = parse_hop(hop) else {
                    return client;
                };
                client = ip;
                if !self.contains(ip) {
                    return ip;
                }
            }
            // Every hop is a trusted proxy: the left-most is as close to the client as we know.
            return client;
        }
        headers
            .get(&X_REAL_IP)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_hop(v.trim()))
            .unwrap_or(peer)
    }
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1` or `[2001:db8::1]:80`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    s.parse::<std::net::SocketAddr>()
        .ok()
        .map(|a| a.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(list: &[&str]) -> TrustedProxies {
        TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(xff: &[&str], real_ip: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append(&X_FORWARDED_FOR, v.parse().unwrap());
        }
        if let Some(v) = real_ip {
            h.insert(&X_REAL_IP, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn parses_and_matches_ranges() {
        let t = trusted(&[
            "10.0.0.0/8",
            "192.0.2.7",
            "2001:db8::/32",
            " 172.16.0.0/12 ",
        ]);
        assert!(t.contains(ip("10.200.3.4")));
        assert!(
            t.contains(ip("::ffff:10.1.1.1")),
            "IPv4-mapped peers match IPv4 ranges"
        );
        assert!(t.contains(ip("192.0.2.7")));
        assert!(!t.contains(ip("192.0.2.8")));
        assert!(t.contains(ip("2001:db8:ffff::1")));
        assert!(!t.contains(ip("2001:db9::1")));
        assert!(t.contains(ip("172.31.255.255")));
        assert!(trusted(&["0.0.0.0/0"]).contains(ip("8.8.8.8")));
        assert!(!trusted(&["0.0.0.0/0"]).contains(ip("::1")));
        assert!(TrustedProxies::default().is_empty());

        let err = |list: &[&str]| {
            TrustedProxies::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap_err()
        };
        assert!(err(&["10.0.0.0/8", "nope"]).starts_with("[1]: "));
        assert!(err(&["10.0.0.0/33"]).contains("0..=32"));
        assert!(err(&["::/129"]).contains("0..=128"));
        assert!(err(&["10.0.0.0/"]).contains("prefix"));
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        let h = headers(&["203.0.113.1"], Some("203.0.113.2"));
        assert_eq!(t.client_ip(ip("198.51.100.9"), &h), ip("198.51.100.9"));
        // With no trusted proxies at all, headers are never believed.
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), &h),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn right_most_untrusted_hop_is_the_client() {
        let t = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        // The client spoofed the left entry; the proxy appended the real address.
        let h = headers(&["6.6.6.6, 203.0.113.5, 10.0.0.2"], None);
        assert_eq!(t.client_ip(peer, &h), ip("203.0.113.5"));
        // Several header lines are one list, the last line nearest.
        let h = headers(&["6.6.6.6", "203.0.113.5", "10.0.0.3:4444"], None);
        assert_eq!(t.client_ip(peer, &h), ip("203.0.113.5"));
        let h = headers(&["[2001:db8::5]:443"], None);
        assert_eq!(t.client_ip(peer, &h), ip("2001:db8::5"));
        // All hops trusted: the left-most.
        let h = headers(&["10.1.1.1, 10.2.2.2"], None);
        assert_eq!(t.client_ip(peer, &h), ip("10.1.1.1"));
        // Garbage stops the walk at the last good trusted hop.
        let h = headers(&["6.6.6.6, unknown, 10.9.9.9"], None);
        assert_eq!(t.client_ip(peer, &h), ip("10.9.9.9"));
        let h = headers(&["garbage"], None);
        assert_eq!(t.client_ip(peer, &h), peer);
    }

    #[test]
    fn real_ip_when_no_forwarded_for() {
        let t = trusted(&["10.0.0.0/8"]);
        let peer = ip("10.0.0.1");
        assert_eq!(
            t.client_ip(peer, &headers(&[], Some("203.0.113.9"))),
            ip("203.0.113.9")
        );
        assert_eq!(t.client_ip(peer, &headers(&[], Some("bad"))), peer);
        assert_eq!(t.client_ip(peer, &headers(&[], None)), peer);
        // X-Forwarded-For wins over X-Real-IP.
        assert_eq!(
            t.client_ip(peer, &headers(&["203.0.113.1"], Some("203.0.113.9"))),
            ip("203.0.113.1")
        );
    }
}

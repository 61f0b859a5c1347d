//! Access control by request properties that need no I/O: `access` (refuse every request in
//! scope), `accessPolicy` (client IP allow- or deny-list) and `userAgentBlock` (User-Agent
//! substrings).

use super::{Decision, Middleware, RequestCtx};
use crate::proxy::response::{self, ProxyBody};
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use memchr::memmem;
use sluice_proto::config as pb;
use std::net::IpAddr;

/// A plain-text refusal whose body is shared with the compiled middleware.
pub(crate) fn refusal(status: StatusCode, body: &Bytes) -> Response<ProxyBody> {
    let mut resp = Response::new(response::full(body.clone()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A refusal status: 100-599 (0: `default`).
pub(crate) fn status(code: u32, default: StatusCode) -> Result<StatusCode, String> {
    if code == 0 {
        return Ok(default);
    }
    u16::try_from(code)
        .ok()
        .filter(|c| (100..=599).contains(c))
        .and_then(|c| StatusCode::from_u16(c).ok())
        .ok_or_else(|| format!("{code} is not an HTTP status (100-599)"))
}

const FORBIDDEN_BODY: &str = "access denied\n";

/// `access`: refuses every request in scope.
#[derive(Debug)]
pub struct AccessBlock {
    status: StatusCode,
    body: Bytes,
}

pub fn compile_access(m: &pb::AccessBlock) -> Result<Box<dyn Middleware>, String> {
    let status = status(m.status, StatusCode::FORBIDDEN).map_err(|e| format!("status: {e}"))?;
    Ok(Box::new(AccessBlock {
        status,
        body: Bytes::from_static(FORBIDDEN_BODY.as_bytes()),
    }))
}

impl Middleware for AccessBlock {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        tracing::debug!(route = %ctx.route.name, client = %ctx.client_ip, path = ctx.client_uri.path(), "request refused by access middleware");
        Decision::Respond(refusal(self.status, &self.body))
    }
}

/// `accessPolicy`: only listed clients pass (allow), or listed clients are refused (deny).
#[derive(Debug)]
pub struct AccessPolicy {
    allow: bool,
    ranges: IpRanges,
    body: Bytes,
}

pub fn compile_access_policy(m: &pb::AccessPolicy) -> Result<Box<dyn Middleware>, String> {
    if m.source_ranges.is_empty() {
        return Err("source_ranges: at least one entry required".into());
    }
    let ranges = IpRanges::parse(&m.source_ranges).map_err(|e| format!("source_ranges{e}"))?;
    Ok(Box::new(AccessPolicy {
        allow: m.allow,
        ranges,
        body: Bytes::from_static(FORBIDDEN_BODY.as_bytes()),
    }))
}

impl Middleware for AccessPolicy {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        if self.ranges.contains(ctx.client_ip) == self.allow {
            return Decision::Continue;
        }
        tracing::debug!(route = %ctx.route.name, client = %ctx.client_ip, "request refused by access policy");
        Decision::Respond(refusal(StatusCode::FORBIDDEN, &self.body))
    }
}

/// Sets of addresses as sorted, merged inclusive ranges (binary search per request).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct IpRanges {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpRanges {
    /// IPs, CIDRs and IPv4 ranges `a.b.c.d-e.f.g.h`; an error names the entry (`[1]: ...`).
    pub fn parse(entries: &[String]) -> Result<IpRanges, String> {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for (i, entry) in entries.iter().enumerate() {
            let bad = || {
                format!("[{i}]: {entry:?} is not an IP, a CIDR or an IPv4 range a.b.c.d-e.f.g.h")
            };
            let s = entry.trim();
            let (from, to) = if let Some((ip, bits)) = s.split_once('/') {
                let ip: IpAddr = ip.trim().parse().map_err(|_| bad())?;
                let bits: u32 = bits.trim().parse().map_err(|_| bad())?;
                match ip.to_canonical() {
                    IpAddr::V4(a) if bits <= 32 => {
                        let host = u32::MAX.checked_shr(bits).unwrap_or(0);
                        let start = u32::from(a) & !host;
                        (Addr::V4(start), Addr::V4(start | host))
                    }
                    IpAddr::V6(a) if bits <= 128 => {
                        let host = u128::MAX.checked_shr(bits).unwrap_or(0);
                        let start = u128::from(a) & !host;
                        (Addr::V6(start), Addr::V6(start | host))
                    }
                    _ => return Err(bad()),
                }
            } else if let Some((a, b)) = s.split_once('-') {
                match (a.trim().parse::<IpAddr>(), b.trim().parse::<IpAddr>()) {
                    (Ok(IpAddr::V4(a)), Ok(IpAddr::V4(b))) if a <= b => {
                        (Addr::V4(a.into()), Addr::V4(b.into()))
                    }
                    _ => return Err(bad()),
                }
            } else {
                match s.parse::<IpAddr>().map_err(|_| bad())?.to_canonical() {
                    IpAddr::V4(a) => (Addr::V4(a.into()), Addr::V4(a.into())),
                    IpAddr::V6(a) => (Addr::V6(a.into()), Addr::V6(a.into())),
                }
            };
            match (from, to) {
                (Addr::V4(a), Addr::V4(b)) => v4.push((a, b)),
                (Addr::V6(a), Addr::V6(b)) => v6.push((a, b)),
                _ => return Err(bad()),
            }
        }
        Ok(IpRanges {
            v4: merge(v4, |a: u32| a.saturating_add(1)),
            v6: merge(v6, |a: u128| a.saturating_add(1)),
        })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => within(&self.v4, u32::from(a)),
            IpAddr::V6(a) => within(&self.v6, u128::from(a)),
        }
    }
}

enum Addr {
    V4(u32),
    V6(u128),
}

/// Sorted, non-overlapping ranges (adjacent ones joined; `succ` is the next address, saturating).
fn merge<T: Ord + Copy>(mut ranges: Vec<(T, T)>, succ: impl Fn(T) -> T) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (start, end) in ranges {
        match out.last_mut() {
            Some(last) if start <= succ(last.1) => last.1 = last.1.max(end),
            _ => out.push((start, end)),
        }
    }
    out
}

fn within<T: Ord + Copy>(ranges: &[(T, T)], ip: T) -> bool {
    // The last range starting at or before `ip`.
    let i = ranges.partition_point(|(start, _)| *start <= ip);
    i > 0 && ranges[i - 1].1 >= ip
}

/// `userAgentBlock`: refuses requests whose User-Agent contains one of the strings
/// (case-sensitive, like Goma). A request without User-Agent passes.
#[derive(Debug)]
pub struct UserAgentBlock {
    finders: Vec<memmem::Finder<'static>>,
    body: Bytes,
}

pub fn compile_user_agent_block(m: &pb::UserAgentBlock) -> Result<Box<dyn Middleware>, String> {
    if m.user_agents.is_empty() {
        return Err("user_agents: at least one entry required".into());
    }
    if let Some(i) = m.user_agents.iter().position(|u| u.is_empty()) {
        return Err(format!(
            "user_agents[{i}]: empty (it would match every User-Agent)"
        ));
    }
    Ok(Box::new(UserAgentBlock {
        finders: m
            .user_agents
            .iter()
            .map(|u| memmem::Finder::new(u.as_bytes()).into_owned())
            .collect(),
        body: Bytes::from_static(FORBIDDEN_BODY.as_bytes()),
    }))
}

impl Middleware for UserAgentBlock {
    fn decide(&self, ctx: &mut RequestCtx<'_>) -> Decision {
        let Some(agent) = ctx.parts.headers.get(header::USER_AGENT) else {
            return Decision::Continue;
        };
        let agent = agent.as_bytes();
        if self.finders.iter().any(|f| f.find(agent).is_some()) {
            tracing::debug!(route = %ctx.route.name, client = %ctx.client_ip, "request refused by user-agent block");
            return Decision::Respond(refusal(StatusCode::FORBIDDEN, &self.body));
        }
        Decision::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(entries: &[&str]) -> IpRanges {
        IpRanges::parse(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ips_cidrs_and_ranges() {
        let r = ranges(&[
            "10.0.0.0/8",
            "192.168.1.10-192.168.1.20",
            "203.0.113.7",
            "2001:db8::/32",
        ]);
        for yes in [
            "10.0.0.0",
            "10.255.255.255",
            "192.168.1.10",
            "192.168.1.15",
            "192.168.1.20",
            "203.0.113.7",
            "2001:db8::1",
            // IPv4-mapped IPv6 is the IPv4 client.
            "::ffff:10.1.2.3",
        ] {
            assert!(r.contains(ip(yes)), "{yes}");
        }
        for no in [
            "11.0.0.0",
            "9.255.255.255",
            "192.168.1.9",
            "192.168.1.21",
            "203.0.113.8",
            "2001:db9::1",
        ] {
            assert!(!r.contains(ip(no)), "{no}");
        }
        // Everything, and overlapping entries merged.
        assert!(ranges(&["0.0.0.0/0"]).contains(ip("255.255.255.255")));
        let merged = ranges(&["1.0.0.0/24", "1.0.0.128/25", "1.0.1.0-1.0.1.255"]);
        assert_eq!(merged.v4, vec![(0x0100_0000, 0x0100_01ff)]);
        assert!(!merged.contains(ip("::1")));
    }

    #[test]
    fn bad_entries_are_named() {
        for bad in [
            "10.0.0.0/33",
            "1.2.3.4-1.2.3.1",
            "::1-::2",
            "example.com",
            "1.2.3.4/x",
        ] {
            let err = IpRanges::parse(&["1.1.1.1".into(), bad.into()]).unwrap_err();
            assert!(err.starts_with("[1]: "), "{err}");
        }
    }

    #[test]
    fn statuses() {
        assert_eq!(status(0, StatusCode::FORBIDDEN).unwrap(), 403);
        assert_eq!(status(451, StatusCode::FORBIDDEN).unwrap(), 451);
        assert!(status(999, StatusCode::FORBIDDEN).is_err());
        assert!(status(42, StatusCode::FORBIDDEN).is_err());
    }

    #[test]
    fn user_agent_config_errors() {
        assert!(compile_user_agent_block(&pb::UserAgentBlock::default()).is_err());
        let err = compile_user_agent_block(&pb::UserAgentBlock {
            user_agents: vec!["curl".into(), String::new()],
        })
        .unwrap_err();
        assert!(err.starts_with("user_agents[1]"), "{err}");
    }
}

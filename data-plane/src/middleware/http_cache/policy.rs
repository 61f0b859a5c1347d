//! RFC 9111 rules for a shared cache as pure functions of headers and times: Cache-Control
//! directives, whether a response may be stored, how long it stays fresh, and whether a stored
//! response may answer a request.

use http::{HeaderMap, HeaderName, header};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The request's Cache-Control (and `Pragma: no-cache` when it has none).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestDirectives {
    pub no_store: bool,
    pub no_cache: bool,
    pub max_age: Option<u64>,
    /// `Some(None)`: any staleness; `Some(Some(n))`: at most n seconds stale.
    pub max_stale: Option<Option<u64>>,
    pub min_fresh: Option<u64>,
}

/// The response's Cache-Control.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResponseDirectives {
    pub no_store: bool,
    pub no_cache: bool,
    pub private: bool,
    pub public: bool,
    /// `must-revalidate` or `proxy-revalidate`: never served stale.
    pub must_revalidate: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
}

/// Calls `f(name, value)` for each directive of every Cache-Control field (names lower-cased
/// by the caller's comparison; values unquoted).
fn directives<'h>(headers: &'h HeaderMap, mut f: impl FnMut(&'h str, Option<&'h str>)) {
    for value in headers.get_all(header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else { continue };
        for item in value.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            match item.split_once('=') {
                Some((name, arg)) => f(name.trim(), Some(arg.trim().trim_matches('"'))),
                None => f(item, None),
            }
        }
    }
}

/// A delta-seconds argument; a malformed one is None (and the directive is then ignored,
/// except where the caller treats it conservatively).
fn seconds(arg: Option<&str>) -> Option<u64> {
    let arg = arg?;
    if arg.is_empty() || !arg.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Overlong values mean "a very long time" (RFC 9111 §1.2.2).
    Some(arg.parse().unwrap_or(u64::MAX))
}

pub fn request_directives(headers: &HeaderMap) -> RequestDirectives {
    let mut d = RequestDirectives::default();
    let mut any = false;
    directives(headers, |name, arg| {
        any = true;
        if name.eq_ignore_ascii_case("no-store") {
            d.no_store = true;
        } else if name.eq_ignore_ascii_case("no-cache") {
            d.no_cache = true;
        } else if name.eq_ignore_ascii_case("max-age") {
            // A malformed max-age asks for a fresh answer rather than none.
            d.max_age = Some(seconds(arg).unwrap_or(0));
        } else if name.eq_ignore_ascii_case("max-stale") {
            d.max_stale = Some(arg.and_then(|a| seconds(Some(a))));
        } else if name.eq_ignore_ascii_case("min-fresh") {
            d.min_fresh = seconds(arg);
        }
    });
    if !any
        && headers
            .get_all(header::PRAGMA)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("no-cache")))
    {
        d.no_cache = true;
    }
    d
}

pub fn response_directives(headers: &HeaderMap) -> ResponseDirectives {
    let mut d = ResponseDirectives::default();
    directives(headers, |name, arg| {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        // The qualified forms (`private="Set-Cookie"`) are treated like the plain ones: the
        // whole response is kept out of the shared cache rather than partly stored.
        if is("no-store") {
            d.no_store = true;
        } else if is("no-cache") {
            d.no_cache = true;
        } else if is("private") {
            d.private = true;
        } else if is("public") {
            d.public = true;
        } else if is("must-revalidate") || is("proxy-revalidate") {
            d.must_revalidate = true;
        } else if is("max-age") {
            d.max_age = Some(seconds(arg).unwrap_or(0));
        } else if is("s-maxage") {
            d.s_maxage = Some(seconds(arg).unwrap_or(0));
        }
    });
    d
}

/// The request carries credentials a shared cache must not serve others from (RFC 9111 §3.5;
/// a Cookie is treated the same way, since it identifies a user as much).
pub fn has_credentials(headers: &HeaderMap) -> bool {
    headers.contains_key(header::AUTHORIZATION) || headers.contains_key(header::COOKIE)
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Status,
    NoStore,
    Private,
    NoCache,
    VaryStar,
    SetCookie,
    Credentials,
    NotFresh,
}

/// How long a stored response stays fresh and how old it already was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    /// Freshness lifetime, seconds, capped by the rule's maxTtl.
    pub fresh: u64,
    /// The response's age when it arrived (its `Age` header), seconds.
    pub initial_age: u64,
    /// May be served stale (no must-revalidate / proxy-revalidate).
    pub stale_ok: bool,
    /// May answer requests that carry credentials (public, s-maxage or must-revalidate).
    pub shareable: bool,
}

/// Whether a response to a GET may be stored, and for how long. `max_ttl` caps every lifetime
/// and is the lifetime of responses that state none (heuristic freshness is allowed for the
/// cacheable statuses, RFC 9111 §4.2.2).
pub fn storable(
    status_cacheable: bool,
    headers: &HeaderMap,
    request_had_credentials: bool,
    now: SystemTime,
    max_ttl: u64,
) -> Result<Lifetime, NotStored> {
    if !status_cacheable {
        return Err(NotStored::Status);
    }
    let cc = response_directives(headers);
    if cc.no_store {
        return Err(NotStored::NoStore);
    }
    if cc.private {
        return Err(NotStored::Private);
    }
    // Stored-but-always-revalidated needs conditional requests upstream; not storing is the
    // equivalent without them.
    if cc.no_cache {
        return Err(NotStored::NoCache);
    }
    if vary_names(headers).is_none() {
        return Err(NotStored::VaryStar);
    }
    // A shared cache must not hand one user's cookie to everybody.
    if headers.contains_key(header::SET_COOKIE) {
        return Err(NotStored::SetCookie);
    }
    let shareable = cc.public || cc.s_maxage.is_some() || cc.must_revalidate;
    if request_had_credentials && !shareable {
        return Err(NotStored::Credentials);
    }
    let explicit = cc
        .s_maxage
        .or(cc.max_age)
        .or_else(|| expires_lifetime(headers, now));
    let fresh = explicit.unwrap_or(max_ttl).min(max_ttl);
    let initial_age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| seconds(Some(v.trim())))
        .unwrap_or(0);
    if fresh <= initial_age {
        return Err(NotStored::NotFresh);
    }
    Ok(Lifetime {
        fresh,
        initial_age,
        stale_ok: !cc.must_revalidate,
        shareable,
    })
}

/// `Expires - Date` (or `- now` without a Date); an invalid Expires means already expired.
fn expires_lifetime(headers: &HeaderMap, now: SystemTime) -> Option<u64> {
    let expires = headers.get(header::EXPIRES)?;
    let Some(expires) = http_date(expires) else {
        return Some(0);
    };
    let base = headers.get(header::DATE).and_then(http_date).unwrap_or(now);
    Some(expires.duration_since(base).map_or(0, |d| d.as_secs()))
}

fn http_date(v: &http::HeaderValue) -> Option<SystemTime> {
    httpdate::parse_http_date(v.to_str().ok()?.trim()).ok()
}

/// The header names of the response's Vary, lower-cased and deduplicated; None for `*` or an
/// unreadable value (never matches another request, so never stored).
pub fn vary_names(headers: &HeaderMap) -> Option<Vec<HeaderName>> {
    let mut names: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(header::VARY) {
        for name in value.to_str().ok()?.split(',').map(str::trim) {
            if name.is_empty() {
                continue;
            }
            if name == "*" {
                return None;
            }
            let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    Some(names)
}

/// A request's value of a header named by Vary: every field line joined by ", " (None when
/// absent), so requests whose values differ get different variants.
pub fn vary_value(headers: &HeaderMap, name: &HeaderName) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    for v in headers.get_all(name) {
        let buf = out.get_or_insert_with(Vec::new);
        if !buf.is_empty() {
            buf.extend_from_slice(b", ");
        }
        buf.extend_from_slice(v.as_bytes());
    }
    out
}

/// How a stored response may be used for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usable {
    Fresh,
    Stale,
    No,
}

/// The times of a stored response, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub stored_at: u64,
    pub initial_age: u64,
    pub fresh_until: u64,
    /// Kept (and servable stale) until then; equals fresh_until when stale serving is off.
    pub stale_until: u64,
}

impl Times {
    pub fn new(now_ms: u64, lifetime: &Lifetime, max_stale: u64) -> Times {
        let fresh_until = now_ms.saturating_add((lifetime.fresh - lifetime.initial_age) * 1000);
        let stale = if lifetime.stale_ok { max_stale } else { 0 };
        Times {
            stored_at: now_ms,
            initial_age: lifetime.initial_age,
            fresh_until,
            stale_until: fresh_until.saturating_add(stale.saturating_mul(1000)),
        }
    }

    /// The `Age` to send, seconds.
    pub fn age(&self, now_ms: u64) -> u64 {
        self.initial_age + now_ms.saturating_sub(self.stored_at) / 1000
    }

    /// Whether it may answer a request with these directives (`no-cache` and `no-store`
    /// requests never look it up).
    pub fn usable(&self, now_ms: u64, req: &RequestDirectives) -> Usable {
        if now_ms >= self.stale_until && now_ms >= self.fresh_until {
            return Usable::No;
        }
        if req.max_age.is_some_and(|max| self.age(now_ms) > max) {
            return Usable::No;
        }
        if let Some(min) = req.min_fresh
            && self.fresh_until.saturating_sub(now_ms) < min.saturating_mul(1000)
        {
            return Usable::No;
        }
        if now_ms < self.fresh_until {
            return Usable::Fresh;
        }
        match req.max_stale {
            Some(Some(max)) if now_ms - self.fresh_until > max.saturating_mul(1000) => Usable::No,
            _ => Usable::Stale,
        }
    }
}

pub fn now_ms(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn parses_request_directives() {
        let d = request_directives(&headers(&[
            ("cache-control", "No-Cache, max-age=\"10\""),
            ("cache-control", "max-stale, min-fresh=5"),
        ]));
        assert!(d.no_cache && !d.no_store);
        assert_eq!(d.max_age, Some(10));
        assert_eq!(d.max_stale, Some(None));
        assert_eq!(d.min_fresh, Some(5));
        let d = request_directives(&headers(&[("cache-control", "max-stale=30,no-store")]));
        assert_eq!(d.max_stale, Some(Some(30)));
        assert!(d.no_store);
        assert!(request_directives(&headers(&[("pragma", "no-cache")])).no_cache);
        // Cache-Control wins over Pragma.
        let d = request_directives(&headers(&[
            ("pragma", "no-cache"),
            ("cache-control", "max-age=5"),
        ]));
        assert!(!d.no_cache);
        // A malformed max-age asks for fresh content only.
        assert_eq!(
            request_directives(&headers(&[("cache-control", "max-age=x")])).max_age,
            Some(0)
        );
    }

    const NOW: SystemTime = UNIX_EPOCH;

    fn store(pairs: &[(&str, &str)], creds: bool) -> Result<Lifetime, NotStored> {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        storable(true, &headers(pairs), creds, now, 300)
    }

    #[test]
    fn freshness_follows_s_maxage_max_age_expires_and_the_cap() {
        assert_eq!(store(&[], false).unwrap().fresh, 300);
        assert_eq!(
            store(&[("cache-control", "max-age=60")], false)
                .unwrap()
                .fresh,
            60
        );
        assert_eq!(
            store(&[("cache-control", "max-age=60, s-maxage=20")], false)
                .unwrap()
                .fresh,
            20
        );
        assert_eq!(
            store(&[("cache-control", "max-age=9000")], false)
                .unwrap()
                .fresh,
            300
        );
        let date = "Mon, 12 Jan 1970 13:46:40 GMT"; // 1,000,000 s
        let expires = "Mon, 12 Jan 1970 13:48:20 GMT"; // +100 s
        assert_eq!(
            store(&[("date", date), ("expires", expires)], false)
                .unwrap()
                .fresh,
            100
        );
        assert_eq!(
            store(&[("expires", "0")], false),
            Err(NotStored::NotFresh),
            "an invalid Expires is already expired"
        );
        let l = store(&[("cache-control", "max-age=60"), ("age", "10")], false).unwrap();
        assert_eq!((l.fresh, l.initial_age), (60, 10));
        assert_eq!(
            store(&[("cache-control", "max-age=60"), ("age", "60")], false),
            Err(NotStored::NotFresh)
        );
        assert!(
            !store(&[("cache-control", "must-revalidate")], false)
                .unwrap()
                .stale_ok
        );
    }

    #[test]
    fn refuses_what_a_shared_cache_must_not_store() {
        for (pairs, why) in [
            (&[("cache-control", "no-store")][..], NotStored::NoStore),
            (&[("cache-control", "private")], NotStored::Private),
            (
                &[("cache-control", "private=\"set-cookie\"")],
                NotStored::Private,
            ),
            (&[("cache-control", "no-cache")], NotStored::NoCache),
            (&[("vary", "accept, *")], NotStored::VaryStar),
            (&[("set-cookie", "a=b")], NotStored::SetCookie),
            (&[("cache-control", "max-age=0")], NotStored::NotFresh),
        ] {
            assert_eq!(store(pairs, false), Err(why), "{pairs:?}");
        }
        let h = HeaderMap::new();
        assert_eq!(storable(false, &h, false, NOW, 300), Err(NotStored::Status));
        // Credentials: only responses that say they may be shared.
        assert_eq!(store(&[], true), Err(NotStored::Credentials));
        for cc in ["public", "s-maxage=10", "must-revalidate"] {
            assert!(
                store(&[("cache-control", cc)], true).unwrap().shareable,
                "{cc}"
            );
        }
        assert!(!store(&[], false).unwrap().shareable);
        assert!(has_credentials(&headers(&[("cookie", "s=1")])));
        assert!(has_credentials(&headers(&[("authorization", "Bearer x")])));
    }

    #[test]
    fn vary_names_and_values() {
        let h = headers(&[
            ("vary", "Accept-Encoding, accept-language"),
            ("vary", "accept-encoding"),
        ]);
        assert_eq!(
            vary_names(&h).unwrap(),
            [header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE]
        );
        let req = headers(&[("accept-language", "en"), ("accept-language", "fr")]);
        assert_eq!(
            vary_value(&req, &header::ACCEPT_LANGUAGE).as_deref(),
            Some(&b"en, fr"[..])
        );
        assert_eq!(vary_value(&req, &header::ACCEPT_ENCODING), None);
    }

    #[test]
    fn usable_fresh_then_stale_within_max_stale_then_gone() {
        let lifetime = Lifetime {
            fresh: 60,
            initial_age: 10,
            stale_ok: true,
            shareable: false,
        };
        let t = Times::new(1_000_000, &lifetime, 30);
        assert_eq!(t.fresh_until, 1_050_000);
        assert_eq!(t.stale_until, 1_080_000);
        let any = RequestDirectives::default();
        assert_eq!(t.usable(1_000_000, &any), Usable::Fresh);
        assert_eq!(t.age(1_020_500), 30);
        assert_eq!(t.usable(1_060_000, &any), Usable::Stale);
        assert_eq!(t.usable(1_080_000, &any), Usable::No);
        // The request narrows what it accepts.
        let max_stale_5 = RequestDirectives {
            max_stale: Some(Some(5)),
            ..Default::default()
        };
        assert_eq!(t.usable(1_054_000, &max_stale_5), Usable::Stale);
        assert_eq!(t.usable(1_056_000, &max_stale_5), Usable::No);
        let max_age_15 = RequestDirectives {
            max_age: Some(15),
            ..Default::default()
        };
        assert_eq!(t.usable(1_004_000, &max_age_15), Usable::Fresh);
        assert_eq!(t.usable(1_006_000, &max_age_15), Usable::No);
        let min_fresh = RequestDirectives {
            min_fresh: Some(20),
            ..Default::default()
        };
        assert_eq!(t.usable(1_020_000, &min_fresh), Usable::Fresh);
        assert_eq!(t.usable(1_040_000, &min_fresh), Usable::No);
        // must-revalidate: never stale.
        let strict = Times::new(
            0,
            &Lifetime {
                stale_ok: false,
                ..lifetime
            },
            30,
        );
        assert_eq!(strict.stale_until, strict.fresh_until);
        assert_eq!(strict.usable(strict.fresh_until, &any), Usable::No);
    }
}

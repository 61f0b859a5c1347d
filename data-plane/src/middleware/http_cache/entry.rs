//! What the cache keeps under one primary key: the response's Vary header names and up to
//! [`MAX_VARIANTS`] stored responses, one per combination of the request values they name.
//! Records are also serialised as bytes for the shared store (Redis).

use super::policy::{Times, vary_value};
use bytes::{Buf, BufMut, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use std::sync::Arc;

/// Variants kept per key (Vary: Accept-Encoding gives two or three); the oldest goes first.
pub const MAX_VARIANTS: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The request values of the record's Vary names, in their order.
    pub vary_values: Vec<Option<Bytes>>,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub times: Times,
    /// May answer requests carrying Authorization or Cookie.
    pub shareable: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The full primary key (a shared-store record is checked against it, not just its hash).
    pub key: Arc<str>,
    pub vary: Vec<HeaderName>,
    pub variants: Vec<Arc<Entry>>,
}

impl Entry {
    /// Approximate memory held, for the byte bound.
    pub fn size(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 32)
            .sum();
        let vary: usize = self.vary_values.iter().flatten().map(Bytes::len).sum();
        self.body.len() + headers + vary + 128
    }
}

impl Record {
    pub fn size(&self) -> usize {
        self.key.len()
            + self.vary.iter().map(|n| n.as_str().len()).sum::<usize>()
            + self.variants.iter().map(|e| e.size()).sum::<usize>()
            + 64
    }

    /// When the last variant stops being servable (ms since the epoch).
    pub fn expires_at(&self) -> u64 {
        self.variants
            .iter()
            .map(|e| e.times.stale_until.max(e.times.fresh_until))
            .max()
            .unwrap_or(0)
    }

    /// The variant stored for a request with these headers.
    pub fn find(&self, request: &HeaderMap) -> Option<&Arc<Entry>> {
        self.variants.iter().find(|e| {
            self.vary
                .iter()
                .zip(&e.vary_values)
                .all(|(name, stored)| vary_value(request, name).as_deref() == stored.as_deref())
        })
    }

    /// This record with `entry` stored for `vary`: other variants are kept when the Vary names
    /// are the same and they are still servable; the oldest go beyond [`MAX_VARIANTS`].
    pub fn with(
        previous: Option<&Record>,
        key: Arc<str>,
        vary: Vec<HeaderName>,
        entry: Entry,
        now_ms: u64,
    ) -> Record {
        let mut variants: Vec<Arc<Entry>> = Vec::with_capacity(2);
        if let Some(previous) = previous.filter(|p| p.vary == vary && p.key == key) {
            let mut kept: Vec<&Arc<Entry>> = previous
                .variants
                .iter()
                .filter(|e| {
                    e.vary_values != entry.vary_values
                        && e.times.stale_until.max(e.times.fresh_until) > now_ms
                })
                .collect();
            // Newest first, cut, then back to storage order.
            kept.sort_by_key(|e| std::cmp::Reverse(e.times.stored_at));
            kept.truncate(MAX_VARIANTS - 1);
            kept.reverse();
            variants.extend(kept.into_iter().cloned());
        }
        variants.push(Arc::new(entry));
        Record {
            key,
            vary,
            variants,
        }
    }
}

const MAGIC: &[u8] = b"SLC1";

/// The shared-store form of a record.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(record.size());
    out.put_slice(MAGIC);
    put_bytes(&mut out, record.key.as_bytes());
    out.put_u16(record.vary.len() as u16);
    for name in &record.vary {
        put_bytes(&mut out, name.as_str().as_bytes());
    }
    out.put_u16(record.variants.len() as u16);
    for e in &record.variants {
        out.put_u16(e.status.as_u16());
        out.put_u64(e.times.stored_at);
        out.put_u64(e.times.initial_age);
        out.put_u64(e.times.fresh_until);
        out.put_u64(e.times.stale_until);
        out.put_u8(u8::from(e.shareable));
        for v in &e.vary_values {
            match v {
                Some(v) => {
                    out.put_u8(1);
                    put_bytes(&mut out, v);
                }
                None => out.put_u8(0),
            }
        }
        out.put_u32(e.headers.len() as u32);
        for (name, value) in &e.headers {
            put_bytes(&mut out, name.as_str().as_bytes());
            put_bytes(&mut out, value.as_bytes());
        }
        put_bytes(&mut out, &e.body);
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.put_u32(b.len() as u32);
    out.put_slice(b);
}

/// Reads a record written by [`encode`]; anything else (another version, a truncated or
/// foreign value) is an error, and the caller treats it as a miss.
pub fn decode(mut buf: Bytes) -> Result<Record, &'static str> {
    if !buf.starts_with(MAGIC) {
        return Err("not a cache record");
    }
    buf.advance(MAGIC.len());
    let key = std::str::from_utf8(&take_bytes(&mut buf)?)
        .map_err(|_| "key is not UTF-8")?
        .into();
    let mut vary = Vec::new();
    for _ in 0..take_u16(&mut buf)? {
        vary.push(HeaderName::from_bytes(&take_bytes(&mut buf)?).map_err(|_| "bad vary name")?);
    }
    let count = take_u16(&mut buf)?;
    if usize::from(count) > MAX_VARIANTS {
        return Err("too many variants");
    }
    let mut variants = Vec::with_capacity(count.into());
    for _ in 0..count {
        let status = StatusCode::from_u16(take_u16(&mut buf)?).map_err(|_| "bad status")?;
        let times = Times {
            stored_at: take_u64(&mut buf)?,
            initial_age: take_u64(&mut buf)?,
            fresh_until: take_u64(&mut buf)?,
            stale_until: take_u64(&mut buf)?,
        };
        let shareable = take_u8(&mut buf)? != 0;
        let mut vary_values = Vec::with_capacity(vary.len());
        for _ in 0..vary.len() {
            vary_values.push(match take_u8(&mut buf)? {
                0 => None,
                _ => Some(take_bytes(&mut buf)?),
            });
        }
        let header_count = take_u32(&mut buf)?;
        let mut headers = HeaderMap::new();
        for _ in 0..header_count {
            let name = HeaderName::from_bytes(&take_bytes(&mut buf)?).map_err(|_| "bad name")?;
            let value = HeaderValue::from_maybe_shared(take_bytes(&mut buf)?)
                .map_err(|_| "bad header value")?;
            headers.append(name, value);
        }
        let body = take_bytes(&mut buf)?;
        variants.push(Arc::new(Entry {
            vary_values,
            status,
            headers,
            body,
            times,
            shareable,
        }));
    }
    if buf.has_remaining() {
        return Err("trailing bytes");
    }
    Ok(Record {
        key,
        vary,
        variants,
    })
}

const SHORT: &str = "truncated record";

fn take_u8(buf: &mut Bytes) -> Result<u8, &'static str> {
    buf.try_get_u8().map_err(|_| SHORT)
}

fn take_u16(buf: &mut Bytes) -> Result<u16, &'static str> {
    buf.try_get_u16().map_err(|_| SHORT)
}

fn take_u32(buf: &mut Bytes) -> Result<u32, &'static str> {
    buf.try_get_u32().map_err(|_| SHORT)
}

fn take_u64(buf: &mut Bytes) -> Result<u64, &'static str> {
    buf.try_get_u64().map_err(|_| SHORT)
}

fn take_bytes(buf: &mut Bytes) -> Result<Bytes, &'static str> {
    let len = usize::try_from(take_u32(buf)?).map_err(|_| SHORT)?;
    if buf.remaining() < len {
        return Err(SHORT);
    }
    Ok(buf.split_to(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    fn entry(vary_values: Vec<Option<&'static str>>, stored_at: u64, body: &'static str) -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.append("x-multi", HeaderValue::from_static("1"));
        headers.append("x-multi", HeaderValue::from_static("2"));
        Entry {
            vary_values: vary_values
                .into_iter()
                .map(|v| v.map(|v| Bytes::from_static(v.as_bytes())))
                .collect(),
            status: StatusCode::NOT_FOUND,
            headers,
            body: Bytes::from_static(body.as_bytes()),
            times: Times {
                stored_at,
                initial_age: 3,
                fresh_until: stored_at + 1000,
                stale_until: stored_at + 2000,
            },
            shareable: true,
        }
    }

    #[test]
    fn records_round_trip_and_garbage_is_refused() {
        let record = Record::with(
            None,
            "r\nhttp://h/p".into(),
            vec![header::ACCEPT_LANGUAGE],
            entry(vec![Some("en")], 10, "hello"),
            10,
        );
        let record = Record::with(
            Some(&record),
            "r\nhttp://h/p".into(),
            vec![header::ACCEPT_LANGUAGE],
            entry(vec![None], 20, "bonjour"),
            20,
        );
        assert_eq!(record.variants.len(), 2);
        let bytes = Bytes::from(encode(&record));
        assert_eq!(decode(bytes.clone()).unwrap(), record);
        for cut in [0, 3, 10, bytes.len() - 1] {
            assert!(decode(bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut extra = bytes.to_vec();
        extra.push(0);
        assert!(decode(extra.into()).is_err());
        assert!(decode(Bytes::from_static(b"GET / HTTP/1.1")).is_err());
    }

    #[test]
    fn variants_are_selected_by_the_vary_values() {
        let key: Arc<str> = "k".into();
        let vary = vec![header::ACCEPT_LANGUAGE];
        let en = Record::with(
            None,
            key.clone(),
            vary.clone(),
            entry(vec![Some("en")], 1, "en"),
            1,
        );
        let both = Record::with(
            Some(&en),
            key.clone(),
            vary.clone(),
            entry(vec![None], 2, "none"),
            2,
        );
        let mut req = HeaderMap::new();
        assert_eq!(both.find(&req).unwrap().body, "none");
        req.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("en"));
        assert_eq!(both.find(&req).unwrap().body, "en");
        req.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("fr"));
        assert!(both.find(&req).is_none());
        // The same variant again replaces it; a different Vary set starts over.
        let again = Record::with(
            Some(&both),
            key.clone(),
            vary,
            entry(vec![Some("en")], 3, "en2"),
            3,
        );
        assert_eq!(again.variants.len(), 2);
        let other = Record::with(Some(&again), key, vec![], entry(vec![], 4, "plain"), 4);
        assert_eq!(other.variants.len(), 1);
        assert_eq!(other.find(&HeaderMap::new()).unwrap().body, "plain");
    }

    #[test]
    fn at_most_max_variants_newest_kept_expired_dropped() {
        let key: Arc<str> = "k".into();
        let vary = vec![header::ACCEPT_LANGUAGE];
        let langs = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
        let mut record: Option<Record> = None;
        for (i, lang) in langs.iter().enumerate() {
            let e = entry(vec![Some(lang)], i as u64, "x");
            record = Some(Record::with(
                record.as_ref(),
                key.clone(),
                vary.clone(),
                e,
                i as u64,
            ));
        }
        let record = record.unwrap();
        assert_eq!(record.variants.len(), MAX_VARIANTS);
        assert_eq!(
            record.variants[0].vary_values[0].as_deref(),
            Some(&b"c"[..])
        );
        // Everything older than now + stale window is gone.
        let fresh = Record::with(
            Some(&record),
            key,
            vary,
            entry(vec![Some("z")], 5000, "x"),
            5000,
        );
        assert_eq!(fresh.variants.len(), 1);
    }
}

//! The in-memory store: records by primary key, bounded in bytes, least recently used evicted
//! first; expired records go when looked up or evicted.

use super::entry::Record;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

#[derive(Debug)]
pub struct MemoryStore {
    limit: usize,
    lru: Mutex<Lru>,
}

#[derive(Debug, Default)]
struct Lru {
    by_key: HashMap<Arc<str>, Slot>,
    /// Use tick -> key, oldest first.
    order: BTreeMap<u64, Arc<str>>,
    tick: u64,
    bytes: usize,
}

#[derive(Debug)]
struct Slot {
    record: Arc<Record>,
    tick: u64,
    size: usize,
}

impl MemoryStore {
    pub fn new(limit: usize) -> MemoryStore {
        MemoryStore {
            limit,
            lru: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        // The map stays consistent at every step, so a panic elsewhere leaves it usable.
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The record under `key` unless it has expired (then it is dropped); marks it used.
    pub fn get(&self, key: &str, now_ms: u64) -> Option<Arc<Record>> {
        let mut lru = self.lock();
        let lru = &mut *lru;
        let slot = lru.by_key.get_mut(key)?;
        if slot.record.expires_at() <= now_ms {
            let key = slot.record.key.clone();
            lru.remove(&key);
            return None;
        }
        lru.tick += 1;
        if let Some(k) = lru.order.remove(&slot.tick) {
            lru.order.insert(lru.tick, k);
        }
        slot.tick = lru.tick;
        Some(slot.record.clone())
    }

    /// Stores `record` (replacing its key's), evicting the least recently used records beyond
    /// the limit. A record larger than the whole limit is not stored.
    pub fn put(&self, record: Record) {
        let size = record.size();
        let mut lru = self.lock();
        lru.remove(&record.key);
        if size > self.limit {
            return;
        }
        lru.tick += 1;
        let tick = lru.tick;
        let key = record.key.clone();
        lru.order.insert(tick, key.clone());
        lru.by_key.insert(
            key,
            Slot {
                record: Arc::new(record),
                tick,
                size,
            },
        );
        lru.bytes += size;
        while lru.bytes > self.limit {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            if let Some(slot) = lru.by_key.remove(&oldest) {
                lru.bytes -= slot.size;
            }
        }
    }

    pub fn remove(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Bytes held (approximate sizes).
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    pub fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Lru {
    fn remove(&mut self, key: &str) {
        if let Some(slot) = self.by_key.remove(key) {
            self.order.remove(&slot.tick);
            self.bytes -= slot.size;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::middleware::http_cache::entry::Entry;
    use crate::middleware::http_cache::policy::Times;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn record(key: &str, body_len: usize, until: u64) -> Record {
        Record {
            key: key.into(),
            vary: Vec::new(),
            variants: vec![Arc::new(Entry {
                vary_values: Vec::new(),
                status: StatusCode::OK,
                headers: HeaderMap::new(),
                body: Bytes::from(vec![b'x'; body_len]),
                times: Times {
                    stored_at: 0,
                    initial_age: 0,
                    fresh_until: until,
                    stale_until: until,
                },
                shareable: false,
            })],
        }
    }

    #[test]
    fn bounded_in_bytes_least_recently_used_goes_first() {
        let one = record("a", 1000, 100).size();
        let store = MemoryStore::new(one * 3);
        store.put(record("a", 1000, 100));
        store.put(record("b", 1000, 100));
        store.put(record("c", 1000, 100));
        assert_eq!(store.len(), 3);
        // "a" used recently: "b" is the one evicted.
        assert!(store.get("a", 0).is_some());
        store.put(record("d", 1000, 100));
        assert!(store.get("b", 0).is_none());
        for k in ["a", "c", "d"] {
            assert!(store.get(k, 0).is_some(), "{k}");
        }
        assert!(store.bytes() <= one * 3);
        // Replacing a key does not count it twice.
        store.put(record("a", 1000, 100));
        assert_eq!(store.bytes(), one * 3);
        // Too large for the whole store: not stored, and the old one is gone too.
        store.put(record("a", one * 4, 100));
        assert!(store.get("a", 0).is_none());
        assert_eq!(store.len(), 2);
    }

    #[test]
    fn expired_records_are_dropped_on_lookup_and_removed_on_request() {
        let store = MemoryStore::new(1 << 20);
        store.put(record("a", 10, 100));
        store.put(record("b", 10, 100));
        assert!(store.get("a", 99).is_some());
        assert!(store.get("a", 100).is_none());
        assert_eq!(store.len(), 1);
        store.remove("b");
        assert!(store.is_empty());
        assert_eq!(store.bytes(), 0);
    }
}

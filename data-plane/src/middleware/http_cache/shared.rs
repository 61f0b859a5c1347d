//! Records in the gateway's shared store (Redis), so every replica serves what one stored:
//! one key per primary key (`<prefix><xxh3-128 of the key>`), expiring with its last variant
//! (PX). The record holds the full key and is checked against it.

use super::entry::{self, Record};
use crate::shared_store::{Reply, SharedStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Shared-store failures are logged at most this often (milliseconds) per middleware.
const WARN_EVERY_MS: u64 = 10_000;
/// After a failure the store is not asked for this long (milliseconds): an unreachable Redis
/// must not add its connect timeout to every request.
const RETRY_AFTER_MS: u64 = 1_000;

#[derive(Debug)]
pub struct SharedRecords {
    store: Arc<SharedStore>,
    /// `sluice:cache:<middleware id>:<state key>:`: a changed rule starts from empty.
    prefix: String,
    last_warning: AtomicU64,
    /// Not asked before this time (ms since the epoch).
    down_until: AtomicU64,
}

impl SharedRecords {
    pub fn new(store: Arc<SharedStore>, id: &str, state_key: &str) -> SharedRecords {
        SharedRecords {
            store,
            prefix: format!("sluice:cache:{id}:{state_key}:"),
            last_warning: AtomicU64::new(0),
            down_until: AtomicU64::new(0),
        }
    }

    fn redis_key(&self, key: &str) -> String {
        format!(
            "{}{:032x}",
            self.prefix,
            xxhash_rust::xxh3::xxh3_128(key.as_bytes())
        )
    }

    /// The record under `key`; None when absent, foreign or for another key.
    pub async fn get(&self, key: &str) -> Result<Option<Record>, String> {
        let reply = self
            .store
            .command(&["GET", &self.redis_key(key)])
            .await
            .map_err(|e| e.to_string())?;
        match reply {
            Reply::Nil => Ok(None),
            Reply::Bulk(bytes) => Ok(entry::decode(bytes).ok().filter(|r| &*r.key == key)),
            Reply::Error(e) => Err(e),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// Stores `record` until its last variant expires.
    pub async fn put(&self, record: &Record, now_ms: u64) -> Result<(), String> {
        let ttl = record.expires_at().saturating_sub(now_ms);
        if ttl == 0 {
            return Ok(());
        }
        let key = self.redis_key(&record.key);
        let value = entry::encode(record);
        let ttl = ttl.to_string();
        let args: [&[u8]; 5] = [b"SET", key.as_bytes(), &value, b"PX", ttl.as_bytes()];
        match self.store.command(&args).await.map_err(|e| e.to_string())? {
            Reply::Status(_) => Ok(()),
            Reply::Error(e) => Err(e),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    pub async fn remove(&self, key: &str) -> Result<(), String> {
        match self
            .store
            .command(&["DEL", &self.redis_key(key)])
            .await
            .map_err(|e| e.to_string())?
        {
            Reply::Int(_) => Ok(()),
            Reply::Error(e) => Err(e),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// Whether to ask the store now (not within [`RETRY_AFTER_MS`] of a failure).
    pub fn usable(&self, now_ms: u64) -> bool {
        now_ms >= self.down_until.load(Ordering::Relaxed)
    }

    /// Records a failure: the store is left alone for a while, and the failure logged unless
    /// one was in the last [`WARN_EVERY_MS`].
    pub fn failed(&self, id: &str, what: &str, error: &str, now_ms: u64) {
        self.down_until
            .store(now_ms.saturating_add(RETRY_AFTER_MS), Ordering::Relaxed);
        let last = self.last_warning.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= WARN_EVERY_MS
            && self
                .last_warning
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                middleware = id,
                store = self.store.address(),
                error,
                "httpCache: shared store {what} failed; using this replica's memory cache"
            );
        }
    }
}

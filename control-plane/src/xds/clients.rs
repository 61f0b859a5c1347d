//! Registry of connected data-plane streams, for inspection and status.

use super::stream::ClientLedger;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub node_id: String,
    pub gateway: String,
    pub peer: String,
    pub build_version: String,
    /// Shared with the stream that updates it.
    pub ledger: Arc<Mutex<ClientLedger>>,
}

#[derive(Default)]
pub struct Clients {
    next: AtomicU64,
    streams: Mutex<BTreeMap<u64, ClientInfo>>,
}

impl Clients {
    pub fn register(&self, info: ClientInfo) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, info);
        id
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub fn of_gateway(&self, gateway: &str) -> Vec<ClientInfo> {
        self.lock()
            .values()
            .filter(|c| c.gateway == gateway)
            .cloned()
            .collect()
    }

    pub fn all(&self) -> Vec<ClientInfo> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, ClientInfo>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }
}

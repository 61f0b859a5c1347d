//! Registry of connected data-plane streams, for inspection and status.

use super::admission::{Admission, Limits};
use super::stream::ClientLedger;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub node_id: String,
    pub gateway: String,
    pub peer: String,
    pub build_version: String,
    /// Shared with the stream that updates it.
    pub ledger: Arc<Mutex<ClientLedger>>,
}

pub struct Clients {
    next: AtomicU64,
    streams: Mutex<BTreeMap<u64, ClientInfo>>,
    /// Bumped when a client connects, leaves, ACKs or NACKs: status follows it.
    changed: watch::Sender<u64>,
    /// Who may connect and push now (storm protection).
    admission: Admission,
}

impl Default for Clients {
    fn default() -> Self {
        Self::with_limits(Limits::default())
    }
}

impl Clients {
    pub fn with_limits(limits: Limits) -> Self {
        Clients {
            next: AtomicU64::new(0),
            streams: Mutex::default(),
            changed: watch::channel(0).0,
            admission: Admission::new(limits),
        }
    }

    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    pub fn register(&self, info: ClientInfo) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, info);
        self.touch();
        id
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
        self.touch();
    }

    /// Records that some client's ledger changed.
    pub fn touch(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Wakes on every connect, disconnect, ACK and NACK.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
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

//! The outcome of each Gateway's last reconcile, shared with whoever writes Gateway status.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

use crate::model::ObjectKey;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `metadata.generation` of the Gateway the outcome is about.
    pub generation: Option<i64>,
    /// `Ok(warnings)` when every object was applied, else the error (naming object and field).
    pub outcome: Result<Vec<String>, String>,
}

/// A cloneable handle on the latest [`Report`] per Gateway.
#[derive(Clone, Debug)]
pub struct GatewayReports {
    reports: Arc<Mutex<BTreeMap<ObjectKey, Report>>>,
    /// Bumped when a report changes, so the status writer follows.
    changed: Arc<watch::Sender<u64>>,
}

impl Default for GatewayReports {
    fn default() -> Self {
        Self {
            reports: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl GatewayReports {
    pub fn record(&self, key: ObjectKey, report: Report) {
        let previous = self.lock().insert(key, report.clone());
        if previous.as_ref() != Some(&report) {
            self.changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    /// Wakes on every changed report.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Report> {
        self.lock().get(key).cloned()
    }

    /// Forgets Gateways that no longer exist.
    pub fn retain(&self, mut exists: impl FnMut(&ObjectKey) -> bool) {
        self.lock().retain(|key, _| exists(key));
    }

    pub fn snapshot(&self) -> BTreeMap<ObjectKey, Report> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ObjectKey, Report>> {
        // The map stays consistent whatever a panicking holder did: each update is one insert.
        self.reports.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

//! The outcome of each Gateway's last reconcile, shared with whoever writes Gateway status.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::model::ObjectKey;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `metadata.generation` of the Gateway the outcome is about.
    pub generation: Option<i64>,
    /// `Ok(warnings)` when every object was applied, else the error (naming object and field).
    pub outcome: Result<Vec<String>, String>,
}

/// A cloneable handle on the latest [`Report`] per Gateway.
#[derive(Clone, Debug, Default)]
pub struct GatewayReports(Arc<Mutex<BTreeMap<ObjectKey, Report>>>);

impl GatewayReports {
    pub fn record(&self, key: ObjectKey, report: Report) {
        self.lock().insert(key, report);
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
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

//! What translation decided about each object, kept for the status writer. The controller records
//! a verdict per object after every translation; the writer reads a snapshot and combines it with
//! what the data planes acknowledged.

use crate::model::ObjectKey;
use crate::resource::{Encoded, type_index};
use std::collections::BTreeMap;
use std::sync::Mutex;
use tokio::sync::watch;

/// A config resource an object produced, at the version its data planes must ACK.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResourceRef {
    pub type_index: usize,
    pub name: String,
    pub version: String,
}

impl ResourceRef {
    pub fn of(encoded: &Encoded) -> Self {
        ResourceRef {
            type_index: type_index(encoded.type_url).unwrap_or(0),
            name: encoded.name.clone(),
            version: encoded.version.clone(),
        }
    }
}

/// Translation's verdict on the current generation of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid; these resources carry it to the data planes (none for a Middleware).
    Served(Vec<ResourceRef>),
    /// Valid, and switched off by its own spec (`enabled: false`).
    Disabled,
    /// Invalid: the message names the field. `last_good` still serves, if any.
    Invalid {
        message: String,
        last_good: Vec<ResourceRef>,
    },
    /// Asks for protection this gateway cannot enforce: nothing serves it (fail closed).
    Withdrawn(String),
}

/// One object's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `metadata.generation` of the version the verdict is about.
    pub generation: Option<i64>,
    pub verdict: Verdict,
    /// Routes: the gateways ("namespace/name") the spec names.
    pub gateways: Vec<String>,
    /// Routes: the middleware names the spec lists (same namespace).
    pub middlewares: Vec<String>,
}

impl Record {
    pub fn new(generation: Option<i64>, verdict: Verdict) -> Self {
        Record {
            generation,
            verdict,
            gateways: Vec::new(),
            middlewares: Vec::new(),
        }
    }
}

/// Every object's record, shared between the controller (writer) and the status writer
/// (reader). Changes wake subscribers.
pub struct StatusBoard {
    records: Mutex<BTreeMap<ObjectKey, Record>>,
    changed: watch::Sender<u64>,
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard {
            records: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

impl StatusBoard {
    pub fn record(&self, key: ObjectKey, record: Record) {
        let mut records = self.lock();
        if records.get(&key) != Some(&record) {
            records.insert(key, record);
            drop(records);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    pub fn remove(&self, key: &ObjectKey) {
        if self.lock().remove(key).is_some() {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    pub fn get(&self, key: &ObjectKey) -> Option<Record> {
        self.lock().get(key).cloned()
    }

    pub fn snapshot(&self) -> BTreeMap<ObjectKey, Record> {
        self.lock().clone()
    }

    /// Wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<ObjectKey, Record>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    #[test]
    fn records_notify_only_on_change() {
        let board = StatusBoard::default();
        let mut rx = board.subscribe();
        let key = ObjectKey::new(Kind::GomaRoute, "default", "api");
        let record = Record::new(Some(1), Verdict::Disabled);
        board.record(key.clone(), record.clone());
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        board.record(key.clone(), record.clone());
        assert!(!rx.has_changed().unwrap(), "same record: no wake-up");
        assert_eq!(board.get(&key), Some(record));
        board.remove(&key);
        assert!(rx.has_changed().unwrap());
        assert!(board.snapshot().is_empty());
    }
}

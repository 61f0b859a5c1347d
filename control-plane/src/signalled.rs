//! A map by object shared between the task that fills it and tasks that wait for its changes:
//! provider rejections, translation verdicts, operator reconciles. Cheap to clone (shared).

use crate::model::ObjectKey;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::watch;

pub struct SignalledMap<V> {
    entries: Arc<Mutex<BTreeMap<ObjectKey, V>>>,
    /// Bumped on every change, so a reader can wait for one.
    changed: Arc<watch::Sender<u64>>,
}

impl<V> Clone for SignalledMap<V> {
    fn clone(&self) -> Self {
        Self {
            entries: self.entries.clone(),
            changed: self.changed.clone(),
        }
    }
}

impl<V> Default for SignalledMap<V> {
    fn default() -> Self {
        Self {
            entries: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl<V> std::fmt::Debug for SignalledMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignalledMap")
            .field("entries", &self.lock().len())
            .finish()
    }
}

impl<V: Clone + PartialEq> SignalledMap<V> {
    /// Sets `key`'s value; readers are woken only when it changed.
    pub fn insert(&self, key: ObjectKey, value: V) {
        let mut entries = self.lock();
        if entries.get(&key) != Some(&value) {
            entries.insert(key, value);
            drop(entries);
            self.signal();
        }
    }

    pub fn remove(&self, key: &ObjectKey) {
        let removed = self.lock().remove(key).is_some();
        if removed {
            self.signal();
        }
    }

    /// Keeps only the entries for which `keep` holds.
    pub fn retain(&self, mut keep: impl FnMut(&ObjectKey) -> bool) {
        let mut entries = self.lock();
        let before = entries.len();
        entries.retain(|k, _| keep(k));
        let changed = entries.len() != before;
        drop(entries);
        if changed {
            self.signal();
        }
    }

    pub fn get(&self, key: &ObjectKey) -> Option<V> {
        self.lock().get(key).cloned()
    }

    pub fn snapshot(&self) -> BTreeMap<ObjectKey, V> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Wakes on every change (`changed().await`).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl<V> SignalledMap<V> {
    fn signal(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<ObjectKey, V>> {
        // Every update is one map operation: the map is consistent whatever a panicking holder did.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    #[test]
    fn readers_wake_only_on_change() {
        let map: SignalledMap<u32> = SignalledMap::default();
        let mut rx = map.subscribe();
        let key = ObjectKey::new(Kind::GomaRoute, "default", "api");
        map.insert(key.clone(), 1);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        map.insert(key.clone(), 1);
        assert!(!rx.has_changed().unwrap(), "same value: no wake-up");
        assert_eq!(map.clone().get(&key), Some(1), "clones share the map");
        map.retain(|_| true);
        assert!(!rx.has_changed().unwrap());
        map.remove(&key);
        assert!(rx.has_changed().unwrap());
        assert!(map.is_empty());
    }
}

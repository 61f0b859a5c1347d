//! The objects a provider could not accept, and why: shared with whoever reports them (the status
//! writer sets a condition from it; the object keeps serving its last good version meanwhile).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use crate::model::ObjectKey;

/// Why the current version of an object was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectError {
    /// Names the field: `spec.backends[1].weight: ...`.
    pub message: String,
    /// `metadata.generation` of the rejected version (for `observedGeneration`).
    pub generation: Option<i64>,
}

/// Rejected objects by key; cheap to clone (shared). An entry is removed when the object becomes
/// valid again or is deleted.
#[derive(Clone)]
pub struct ObjectErrors {
    errors: Arc<RwLock<BTreeMap<ObjectKey, ObjectError>>>,
    /// Bumped on every change, so a reader can wait for one.
    changed: Arc<watch::Sender<u64>>,
}

impl Default for ObjectErrors {
    fn default() -> Self {
        Self {
            errors: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl ObjectErrors {
    pub fn get(&self, key: &ObjectKey) -> Option<ObjectError> {
        self.read().get(key).cloned()
    }

    pub fn snapshot(&self) -> BTreeMap<ObjectKey, ObjectError> {
        self.read().clone()
    }

    pub fn len(&self) -> usize {
        self.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Wakes on every change (`changed().await`).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub(crate) fn set(&self, key: ObjectKey, error: ObjectError) {
        let mut errors = self.errors.write().unwrap_or_else(|e| e.into_inner());
        if errors.get(&key) != Some(&error) {
            errors.insert(key, error);
            drop(errors);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    pub(crate) fn clear(&self, key: &ObjectKey) {
        let mut errors = self.errors.write().unwrap_or_else(|e| e.into_inner());
        if errors.remove(key).is_some() {
            drop(errors);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<ObjectKey, ObjectError>> {
        self.errors.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    #[test]
    fn set_and_clear_notify_only_on_change() {
        let errors = ObjectErrors::default();
        let mut rx = errors.subscribe();
        let key = ObjectKey::new(Kind::GomaRoute, "default", "api");
        let error = ObjectError {
            message: "spec.path: required".into(),
            generation: Some(2),
        };
        errors.set(key.clone(), error.clone());
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        errors.set(key.clone(), error.clone());
        assert!(!rx.has_changed().unwrap());
        assert_eq!(errors.get(&key), Some(error));
        errors.clear(&key);
        assert!(rx.has_changed().unwrap());
        assert!(errors.is_empty());
    }
}

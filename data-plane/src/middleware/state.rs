//! State that outlives snapshots: rate-limit buckets, caches, fetched JWKS, directory
//! connections. Keyed by the middleware's identity and configuration (`id`, `state_key`), so a
//! route recompiled for an unrelated reason, or the same middleware on another route, gets the
//! same state, and a changed middleware gets a fresh one.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

type Shared = Arc<dyn Any + Send + Sync>;

#[derive(Default)]
pub struct States {
    by_key: HashMap<(Box<str>, Box<str>), Shared>,
}

impl States {
    /// The state of (`id`, `state_key`), made by `make` the first time. State must be lazy: no
    /// I/O and no tasks in `make` (validation compiles against a scratch registry).
    pub fn get_or_insert<T: Any + Send + Sync>(
        &mut self,
        id: &str,
        state_key: &str,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        let key = (Box::from(id), Box::from(state_key));
        if let Some(existing) = self.by_key.get(&key)
            && let Ok(state) = existing.clone().downcast::<T>()
        {
            return state;
        }
        let state = Arc::new(make());
        self.by_key.insert(key, state.clone());
        state
    }

    /// Drops state no compiled middleware holds any more (after a compile).
    pub fn retain_used(&mut self) {
        self.by_key.retain(|_, s| Arc::strong_count(s) > 1);
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn same_identity_shares_changed_key_resets_unused_is_dropped() {
        let mut states = States::default();
        let a = states.get_or_insert("Middleware default/rl", "k1", || AtomicU32::new(0));
        a.fetch_add(1, Ordering::Relaxed);
        let again = states.get_or_insert("Middleware default/rl", "k1", || AtomicU32::new(0));
        assert_eq!(again.load(Ordering::Relaxed), 1);
        let changed = states.get_or_insert("Middleware default/rl", "k2", || AtomicU32::new(0));
        assert_eq!(changed.load(Ordering::Relaxed), 0);
        drop((a, again));
        states.retain_used();
        assert_eq!(states.len(), 1);
        drop(changed);
        states.retain_used();
        assert!(states.is_empty());
    }
}

//! The per-endpoint connection state of one client, by authority. Only compiling a cluster
//! looks it up (a compiled endpoint holds its state), and it holds no state alive: what no
//! compiled endpoint holds any more is gone, with its connections.

use http::uri::Authority;
use std::collections::HashMap;
use std::sync::{Arc, Weak};

pub struct Registry<T> {
    entries: HashMap<Authority, Weak<T>>,
    /// Size at which entries whose state is gone get dropped.
    prune_at: usize,
}

impl<T> Default for Registry<T> {
    fn default() -> Self {
        Registry {
            entries: HashMap::new(),
            prune_at: 0,
        }
    }
}

impl<T> Registry<T> {
    /// The state of `authority` in use, else a new one from `make`.
    pub fn get_or_insert_with(
        &mut self,
        authority: &Authority,
        make: impl FnOnce() -> T,
    ) -> Arc<T> {
        if let Some(state) = self.entries.get(authority).and_then(Weak::upgrade) {
            return state;
        }
        let state = Arc::new(make());
        self.entries
            .insert(authority.clone(), Arc::downgrade(&state));
        if self.entries.len() > self.prune_at {
            self.entries.retain(|_, s| s.strong_count() > 0);
            self.prune_at = (self.entries.len() * 2).max(64);
        }
        state
    }

    /// The states in use.
    pub fn live(&self) -> Vec<Arc<T>> {
        self.entries.values().filter_map(Weak::upgrade).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_the_state_in_use_and_forgets_dropped_ones() {
        let mut registry = Registry::default();
        let a: Authority = "a:80".parse().unwrap();
        let first = registry.get_or_insert_with(&a, || 1);
        assert!(Arc::ptr_eq(&first, &registry.get_or_insert_with(&a, || 2)));
        drop(first);
        assert!(registry.live().is_empty());
        assert_eq!(*registry.get_or_insert_with(&a, || 3), 3);
        // Entries of dropped states are pruned as the map grows.
        for i in 0..200 {
            let authority: Authority = format!("h{i}:80").parse().unwrap();
            drop(registry.get_or_insert_with(&authority, || i));
        }
        assert!(registry.entries.len() < 100, "{}", registry.entries.len());
    }
}

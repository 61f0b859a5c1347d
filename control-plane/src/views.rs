//! Per-gateway views: the resources each gateway sees, with a bounded change log so that a stream
//! catches up in O(changed) instead of diffing the whole view.

use crate::resource::Encoded;
use sluice_proto::type_url;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use tokio::sync::watch;

const TYPES: usize = type_url::ALL.len();
/// How many changes a view remembers; a stream further behind falls back to a full diff.
const LOG_CAPACITY: usize = 1 << 16;

/// The resources of one gateway, by type index (see `resource::type_index`) and name.
#[derive(Default)]
pub struct ViewState {
    pub resources: [BTreeMap<String, Arc<Encoded>>; TYPES],
    pub revision: u64,
    log: VecDeque<(u64, usize, String)>,
}

impl ViewState {
    /// Names changed after `revision`, or `None` when the log no longer reaches back that far.
    pub fn changes_since(&self, revision: u64) -> Option<Vec<(usize, String)>> {
        if revision >= self.revision {
            return Some(Vec::new());
        }
        match self.log.front() {
            Some((first, _, _)) if *first <= revision + 1 => {}
            _ => return None,
        }
        let start = self.log.partition_point(|(rev, _, _)| *rev <= revision);
        let mut out: Vec<(usize, String)> = self
            .log
            .range(start..)
            .map(|(_, t, n)| (*t, n.clone()))
            .collect();
        out.sort_unstable();
        out.dedup();
        Some(out)
    }

    pub fn count(&self, type_index: usize) -> usize {
        self.resources[type_index].len()
    }
}

pub struct GatewayView {
    state: RwLock<ViewState>,
    revision: watch::Sender<u64>,
}

impl GatewayView {
    fn new() -> Self {
        Self {
            state: RwLock::new(ViewState::default()),
            revision: watch::channel(0).0,
        }
    }

    /// Runs `f` with the current state under a read lock (keep it short: the writer waits).
    pub fn read<R>(&self, f: impl FnOnce(&ViewState) -> R) -> R {
        let guard = self.state.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    /// Wakes when the revision moves.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// Applies upserts and removals as one revision; streams are woken once, and only if
    /// something really changed.
    pub fn apply(&self, changes: ViewChanges) {
        if changes.is_empty() {
            return;
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let revision = state.revision + 1;
        let mut changed = false;
        for (t, name) in changes.removals {
            if state.resources[t].remove(&name).is_some() {
                state.log.push_back((revision, t, name));
                changed = true;
            }
        }
        for r in changes.upserts {
            let Some(t) = crate::resource::type_index(r.type_url) else {
                continue;
            };
            let same = state.resources[t]
                .get(&r.name)
                .is_some_and(|old| old.version == r.version);
            if !same {
                state.log.push_back((revision, t, r.name.clone()));
                state.resources[t].insert(r.name.clone(), r);
                changed = true;
            }
        }
        if !changed {
            return;
        }
        while state.log.len() > LOG_CAPACITY {
            state.log.pop_front();
        }
        state.revision = revision;
        drop(state);
        self.revision.send_replace(revision);
    }
}

/// A batch of changes to one gateway view.
#[derive(Default)]
pub struct ViewChanges {
    pub upserts: Vec<Arc<Encoded>>,
    pub removals: Vec<(usize, String)>,
}

impl ViewChanges {
    pub fn is_empty(&self) -> bool {
        self.upserts.is_empty() && self.removals.is_empty()
    }
}

/// Every gateway's view, keyed "namespace/name". Views are created on first use, by the
/// translator or by a data plane subscribing to a gateway that does not exist yet.
pub struct Views {
    gateways: RwLock<HashMap<String, Arc<GatewayView>>>,
    ready: watch::Sender<bool>,
}

impl Default for Views {
    fn default() -> Self {
        Self {
            gateways: RwLock::new(HashMap::new()),
            ready: watch::channel(false).0,
        }
    }
}

impl Views {
    pub fn gateway(&self, id: &str) -> Arc<GatewayView> {
        if let Some(v) = self
            .gateways
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
        {
            return v.clone();
        }
        self.gateways
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(GatewayView::new()))
            .clone()
    }

    pub fn existing(&self, id: &str) -> Option<Arc<GatewayView>> {
        self.gateways
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    pub fn apply(&self, id: &str, changes: ViewChanges) {
        if changes.is_empty() {
            return;
        }
        self.gateway(id).apply(changes);
    }

    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .gateways
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
    }

    /// Marks the views complete: every provider synced and a full translation ran (nothing is
    /// served before that, so a partial view can never look like deletions).
    pub fn set_ready(&self) {
        self.ready.send_replace(true);
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        // The sender lives as long as `self`, so this only ends when ready.
        let _ = rx.wait_for(|r| *r).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::test_listener as listener;

    #[test]
    fn log_reports_changes_since_a_revision() {
        let view = GatewayView::new();
        view.apply(ViewChanges {
            upserts: vec![listener("a", 1), listener("b", 2)],
            removals: vec![],
        });
        view.apply(ViewChanges {
            upserts: vec![listener("b", 3)],
            removals: vec![],
        });
        view.read(|s| {
            assert_eq!(s.revision, 2);
            assert_eq!(s.changes_since(1).unwrap(), vec![(2, "b".to_string())]);
            assert_eq!(s.changes_since(0).unwrap().len(), 2);
            assert!(s.changes_since(2).unwrap().is_empty());
        });
    }

    #[test]
    fn identical_content_does_not_bump_the_revision() {
        let view = GatewayView::new();
        view.apply(ViewChanges {
            upserts: vec![listener("a", 1)],
            removals: vec![],
        });
        view.apply(ViewChanges {
            upserts: vec![listener("a", 1)],
            removals: vec![(2, "missing".into())],
        });
        view.read(|s| assert_eq!(s.revision, 1));
    }

    #[test]
    fn truncated_log_asks_for_a_full_diff() {
        let view = GatewayView::new();
        for i in 0..(LOG_CAPACITY as u32 + 10) {
            view.apply(ViewChanges {
                upserts: vec![listener("a", i + 1)],
                removals: vec![],
            });
        }
        view.read(|s| {
            assert!(s.changes_since(0).is_none());
            assert!(s.changes_since(s.revision - 1).is_some());
        });
    }
}

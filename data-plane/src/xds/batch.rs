//! Pure bookkeeping for one stream: when each type's initial state is complete (the control
//! plane splits it under a size bound), and how many already-received responses to apply
//! together under one compile.

use sluice_proto::discovery::DeltaDiscoveryResponse;
use sluice_proto::type_url;

/// Responses applied together at most, so a long burst cannot hold back the ACKs.
pub const MAX_BATCH_RESPONSES: usize = 64;
/// Encoded bytes applied together at most (checked before adding the next response).
pub const MAX_BATCH_BYTES: usize = 4 << 20;

/// Whether one more response of `next_bytes` may join a batch of `count` responses and `bytes`.
pub fn batch_admits(count: usize, bytes: usize, next_bytes: usize) -> bool {
    count < MAX_BATCH_RESPONSES && bytes.saturating_add(next_bytes) <= MAX_BATCH_BYTES
}

/// Which types' initial state has fully arrived on the current stream.
#[derive(Debug, Default)]
pub struct InitialState {
    complete: [bool; type_url::ALL.len()],
}

impl InitialState {
    /// Records a response; its type is complete at the first one not marked
    /// `initial_state_continues` (unset from older control planes: complete at once).
    pub fn observe(&mut self, resp: &DeltaDiscoveryResponse) {
        if let Some(t) = type_url::ALL.iter().position(|u| *u == resp.type_url)
            && !resp.initial_state_continues
        {
            self.complete[t] = true;
        }
    }

    /// Every type's initial state has arrived.
    pub fn complete(&self) -> bool {
        self.complete.iter().all(|c| *c)
    }
}

/// Index of the response in `batch` a failed listener belongs to: the last one of the listener
/// type that upserted it, else the last listener response (it was compiled with that one).
pub fn owner_of_listener(batch: &[DeltaDiscoveryResponse], name: &str) -> Option<usize> {
    let listeners = || {
        batch
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, r)| r.type_url == type_url::LISTENER)
    };
    listeners()
        .find(|(_, r)| r.resources.iter().any(|res| res.name == name))
        .or_else(|| listeners().next())
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::discovery::Resource;

    fn resp(t: &str, continues: bool, names: &[&str]) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: t.into(),
            initial_state_continues: continues,
            resources: names
                .iter()
                .map(|n| Resource {
                    name: (*n).into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn complete_only_after_the_last_chunk_of_every_type() {
        let mut s = InitialState::default();
        for t in [type_url::SECRET, type_url::CLUSTER, type_url::LISTENER] {
            s.observe(&resp(t, false, &[]));
        }
        s.observe(&resp(type_url::ROUTE, true, &["a"]));
        s.observe(&resp(type_url::ROUTE, true, &["b"]));
        assert!(!s.complete(), "routes still arriving");
        s.observe(&resp(type_url::ROUTE, false, &["c"]));
        assert!(s.complete());
    }

    #[test]
    fn unmarked_responses_complete_at_once_as_from_older_control_planes() {
        let mut s = InitialState::default();
        for t in type_url::ALL {
            assert!(!s.complete());
            // A reconnect that resends nothing: one empty answer per type.
            s.observe(&resp(t, false, &[]));
        }
        assert!(s.complete());
    }

    #[test]
    fn a_later_marked_response_does_not_undo_completion() {
        let mut s = InitialState::default();
        for t in type_url::ALL {
            s.observe(&resp(t, false, &[]));
        }
        s.observe(&resp(type_url::ROUTE, true, &["x"]));
        assert!(s.complete());
    }

    #[test]
    fn unknown_types_are_ignored() {
        let mut s = InitialState::default();
        s.observe(&resp("type.example/Other", false, &[]));
        assert!(!s.complete());
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        assert!(batch_admits(1, 100, 100));
        assert!(!batch_admits(MAX_BATCH_RESPONSES, 0, 1));
        assert!(batch_admits(MAX_BATCH_RESPONSES - 1, 0, 1));
        assert!(!batch_admits(1, MAX_BATCH_BYTES, 1));
        assert!(batch_admits(1, MAX_BATCH_BYTES - 1, 1));
    }

    #[test]
    fn failed_listeners_are_charged_to_the_response_that_sent_them() {
        let batch = vec![
            resp(type_url::LISTENER, false, &["l1"]),
            resp(type_url::ROUTE, false, &["r"]),
            resp(type_url::LISTENER, false, &["l2"]),
        ];
        assert_eq!(owner_of_listener(&batch, "l1"), Some(0));
        assert_eq!(owner_of_listener(&batch, "l2"), Some(2));
        assert_eq!(owner_of_listener(&batch, "gone"), Some(2));
        assert_eq!(owner_of_listener(&batch[1..2], "l1"), None);
    }
}

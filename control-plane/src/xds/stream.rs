//! The server side of one delta ADS stream as a pure state machine: requests and view changes in,
//! responses out. No I/O, so every protocol rule is unit-tested here.

use super::held::HeldSet;
use crate::resource::{Encoded, type_index};
use crate::views::ViewState;
use sluice_proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use sluice_proto::type_url;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

const TYPES: usize = type_url::ALL.len();
/// Responses are split so none exceeds this (a resource bigger than it goes alone). Small, because
/// each stream keeps an encode buffer as big as the biggest message it sent (see
/// `sluice_proto::codec`): a connected pod then costs a few KiB, not its largest push.
/// The margin is for the response's own fields (type URL, nonce, framing).
pub const MAX_RESPONSE_BYTES: usize = sluice_proto::codec::ENCODE_BUFFER_BYTES - 512;

static NONCE: AtomicU64 = AtomicU64::new(1);

fn next_nonce() -> String {
    NONCE.fetch_add(1, Ordering::Relaxed).to_string()
}

/// What one client holds and has rejected, for inspection and status. Shared between the stream
/// (which updates it per ACK/NACK, in O(entries settled)) and the client registry (which reads it).
#[derive(Default, Clone, Debug)]
pub struct ClientLedger {
    /// Per type index, the resources the client ACKed (shared with the view that sent them).
    acked: [HeldSet; TYPES],
    /// (type index, name) -> reason the client gave.
    pub nacked: BTreeMap<(usize, String), String>,
}

impl ClientLedger {
    /// The version of `name` (type index `t`) the client ACKed.
    pub fn acked_version(&self, t: usize, name: &str) -> Option<&str> {
        self.acked.get(t)?.version(name)
    }

    /// Every ACKed resource as (type index, name, version), by type then name.
    pub fn acked(&self) -> Vec<(usize, &str, &str)> {
        let mut out: Vec<(usize, &str, &str)> = self
            .acked
            .iter()
            .enumerate()
            .flat_map(|(t, held)| {
                held.iter()
                    .map(move |r| (t, r.name.as_str(), r.version.as_str()))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Records that the client ACKed `resource`.
    pub fn ack(&mut self, resource: Arc<Encoded>) {
        if let Some(t) = type_index(resource.type_url) {
            self.acked[t].insert(resource);
        }
    }
}

/// One entry of a response, settled by the client's ACK or NACK of its nonce.
enum Sent {
    Upsert(Arc<Encoded>),
    Removal(String),
}

impl Sent {
    fn name(&self) -> &str {
        match self {
            Sent::Upsert(r) => &r.name,
            Sent::Removal(name) => name,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ProtocolError {
    #[error("unknown type_url {0:?}")]
    UnknownType(String),
    #[error("node.id changed on the stream from {0:?} to {1:?}")]
    NodeChanged(String, String),
}

#[derive(Default)]
struct TypeState {
    /// Has the client sent its first request for this type?
    opened: bool,
    wildcard: bool,
    names: HashSet<String>,
    /// What the client holds as far as this stream knows (what was sent, or reported in
    /// `initial_resource_versions`).
    sent: HeldSet,
    /// Names explicitly (re)subscribed that must be answered even if unchanged.
    force: HashSet<String>,
    /// nonce -> the entries of that response.
    pending: HashMap<String, Vec<Sent>>,
}

impl TypeState {
    fn subscribed(&self, name: &str) -> bool {
        self.wildcard || self.names.contains(name)
    }
}

/// Per-stream protocol state. Types are independent sub-streams (versions, nonces, subscriptions).
pub struct StreamState {
    node_id: String,
    types: [TypeState; TYPES],
    /// The view revision this stream has caught up with.
    revision: u64,
    ledger: Arc<Mutex<ClientLedger>>,
    /// NACKed resources not yet reported: (type index, name, reason).
    new_nacks: Vec<(usize, String, String)>,
}

impl StreamState {
    pub fn new(node_id: String, ledger: Arc<Mutex<ClientLedger>>) -> Self {
        Self {
            node_id,
            types: Default::default(),
            revision: 0,
            ledger,
            new_nacks: Vec::new(),
        }
    }

    /// Handles one request: ACK/NACK bookkeeping, then subscription changes (even with a stale
    /// nonce), then answers for that type.
    pub fn on_request(
        &mut self,
        req: DeltaDiscoveryRequest,
        view: &ViewState,
    ) -> Result<Vec<DeltaDiscoveryResponse>, ProtocolError> {
        if let Some(node) = &req.node
            && !node.id.is_empty()
            && node.id != self.node_id
        {
            return Err(ProtocolError::NodeChanged(
                self.node_id.clone(),
                node.id.clone(),
            ));
        }
        let t =
            type_index(&req.type_url).ok_or(ProtocolError::UnknownType(req.type_url.clone()))?;
        if !req.response_nonce.is_empty() {
            self.settle(t, &req);
        }
        let ts = &mut self.types[t];
        let first = !ts.opened;
        if first {
            ts.opened = true;
            // An empty first subscription is the legacy wildcard.
            ts.wildcard = req.resource_names_subscribe.is_empty();
            for (name, version) in req.initial_resource_versions {
                ts.sent
                    .insert(Encoded::reported(type_url::ALL[t], name, version));
            }
        }
        // Only what this request can have changed is diffed: everything on the first request or
        // a new wildcard, the newly subscribed names otherwise, nothing for a plain ACK.
        let mut full = first;
        let mut check: Vec<String> = Vec::new();
        for name in req.resource_names_subscribe {
            if name == "*" {
                full |= !ts.wildcard;
                ts.wildcard = true;
            } else {
                ts.force.insert(name.clone());
                check.push(name.clone());
                ts.names.insert(name);
            }
        }
        for name in req.resource_names_unsubscribe {
            if name == "*" {
                ts.wildcard = false;
            } else {
                ts.names.remove(&name);
            }
            if !ts.subscribed(&name) {
                // The client forgets it; phantom unsubscribes are ignored.
                ts.sent.remove(&name);
                ts.force.remove(&name);
            }
        }
        if !ts.wildcard {
            let names = &ts.names;
            ts.sent.retain(|n| names.contains(n));
        }
        let (upserts, removals) = if full {
            self.diff_type(t, view, None)
        } else if check.is_empty() {
            (Vec::new(), Vec::new())
        } else {
            let names: Vec<&str> = check.iter().map(String::as_str).collect();
            self.diff_type(t, view, Some(&names))
        };
        let mut out = self.respond(t, upserts, removals);
        if first && out.is_empty() {
            // Always answer the first request of a type, so the client knows its initial state
            // (possibly empty) is complete.
            out.push(self.response(t, Vec::new(), Vec::new()));
        }
        if first && let Some((_, rest)) = out.split_last_mut() {
            // The data plane waits for the last chunk of its initial state before it is ready.
            for r in rest {
                r.initial_state_continues = true;
            }
        }
        Ok(out)
    }

    /// Catches up with the view: upserts of every type first (secrets, clusters, listeners,
    /// routes), then removals in reverse order, so nothing is referenced before it exists or
    /// removed while still referenced.
    pub fn on_view_change(&mut self, view: &ViewState) -> Vec<DeltaDiscoveryResponse> {
        let changed = view.changes_since(self.revision);
        let mut per_type: Vec<(Vec<Arc<Encoded>>, Vec<String>)> = Vec::with_capacity(TYPES);
        for t in 0..TYPES {
            let names: Option<Vec<&str>> = changed.as_ref().map(|c| {
                c.iter()
                    .filter(|(ct, _)| *ct == t)
                    .map(|(_, n)| n.as_str())
                    .collect()
            });
            per_type.push(self.diff_type(t, view, names.as_deref()));
        }
        self.revision = view.revision;
        let mut out = Vec::new();
        for (t, (upserts, _)) in per_type.iter_mut().enumerate() {
            let upserts = std::mem::take(upserts);
            out.extend(self.respond(t, upserts, Vec::new()));
        }
        for (t, (_, removals)) in per_type.into_iter().enumerate().rev() {
            out.extend(self.respond(t, Vec::new(), removals));
        }
        out
    }

    /// Upserts and removals for type `t`, over `names` (a change-log slice) or the whole view.
    fn diff_type(
        &mut self,
        t: usize,
        view: &ViewState,
        names: Option<&[&str]>,
    ) -> (Vec<Arc<Encoded>>, Vec<String>) {
        let ts = &mut self.types[t];
        if !ts.opened {
            return (Vec::new(), Vec::new());
        }
        let current = &view.resources[t];
        let mut upserts = Vec::new();
        let mut removals = Vec::new();
        // Reported entries the view holds unchanged: kept as the view's copy from now on.
        let mut adopt = Vec::new();
        let mut consider = |name: &str, ts: &TypeState| {
            if !ts.subscribed(name) {
                return;
            }
            let forced = ts.force.contains(name);
            match (current.get(name), ts.sent.get(name)) {
                (Some(r), Some(held)) if held.version == r.version && !forced => {
                    if !Arc::ptr_eq(r, held) {
                        adopt.push(r.clone());
                    }
                }
                (Some(r), _) => upserts.push(r.clone()),
                (None, Some(_)) => removals.push(name.to_string()),
                // Explicitly subscribed but absent: say so at once.
                (None, None) if forced => removals.push(name.to_string()),
                (None, None) => {}
            }
        };
        match names {
            Some(names) => {
                for n in names {
                    consider(n, ts);
                }
                let forced: Vec<String> = ts.force.iter().cloned().collect();
                for n in forced {
                    if !names.contains(&n.as_str()) {
                        consider(&n, ts);
                    }
                }
            }
            None => {
                let mut seen: HashSet<&str> = HashSet::new();
                for n in current.keys() {
                    seen.insert(n);
                    consider(n, ts);
                }
                for n in ts.sent.names().chain(ts.force.iter().map(String::as_str)) {
                    if !seen.contains(n) {
                        consider(n, ts);
                    }
                }
            }
        }
        upserts.sort_by(|a, b| a.name.cmp(&b.name));
        upserts.dedup_by(|a, b| a.name == b.name);
        removals.sort();
        removals.dedup();
        for r in adopt {
            ts.sent.insert(r);
        }
        ts.force.clear();
        (upserts, removals)
    }

    /// Builds the responses for one type, split under the size bound, and records what was sent.
    /// Removals ride in the last response.
    fn respond(
        &mut self,
        t: usize,
        upserts: Vec<Arc<Encoded>>,
        removals: Vec<String>,
    ) -> Vec<DeltaDiscoveryResponse> {
        let mut batches: Vec<Vec<Arc<Encoded>>> = Vec::new();
        let mut batch: Vec<Arc<Encoded>> = Vec::new();
        let mut size = 0;
        for r in upserts {
            let len = r.bytes.len() + r.name.len() + r.version.len() + 64;
            if !batch.is_empty() && size + len > MAX_RESPONSE_BYTES {
                batches.push(std::mem::take(&mut batch));
                size = 0;
            }
            size += len;
            batch.push(r);
        }
        if !batch.is_empty() || !removals.is_empty() {
            batches.push(batch);
        }
        let last = batches.len().saturating_sub(1);
        let mut removals = Some(removals);
        batches
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let removed = if i == last {
                    removals.take().unwrap_or_default()
                } else {
                    Vec::new()
                };
                self.response(t, b, removed)
            })
            .collect()
    }

    fn response(
        &mut self,
        t: usize,
        upserts: Vec<Arc<Encoded>>,
        removals: Vec<String>,
    ) -> DeltaDiscoveryResponse {
        let nonce = next_nonce();
        let ts = &mut self.types[t];
        let mut entries = Vec::with_capacity(upserts.len() + removals.len());
        let resources: Vec<Resource> = upserts
            .into_iter()
            .map(|r| {
                let resource = r.to_resource();
                ts.sent.insert(r.clone());
                entries.push(Sent::Upsert(r));
                resource
            })
            .collect();
        for name in &removals {
            ts.sent.remove(name);
            entries.push(Sent::Removal(name.clone()));
        }
        ts.pending.insert(nonce.clone(), entries);
        DeltaDiscoveryResponse {
            system_version_info: String::new(),
            resources,
            type_url: type_url::ALL[t].to_string(),
            removed_resources: removals,
            nonce,
            initial_state_continues: false,
        }
    }

    /// Records the outcome of an ACK or NACK. Content is never re-pushed because of a NACK: it
    /// is sent again only when its version changes.
    fn settle(&mut self, t: usize, req: &DeltaDiscoveryRequest) {
        let Some(entries) = self.types[t].pending.remove(&req.response_nonce) else {
            return; // stale or unknown nonce: only the subscription part counts
        };
        let rejected: HashMap<&str, String> = req
            .resource_errors
            .iter()
            .map(|e| {
                let reason = e
                    .error_detail
                    .as_ref()
                    .map(|s| s.message.clone())
                    .unwrap_or_default();
                (e.name.as_str(), reason)
            })
            .collect();
        let whole = req.error_detail.as_ref().filter(|_| rejected.is_empty());
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        for entry in entries {
            let reason = rejected
                .get(entry.name())
                .cloned()
                .or_else(|| whole.map(|s| s.message.clone()));
            if let Some(reason) = reason {
                let name = entry.name().to_owned();
                self.new_nacks.push((t, name.clone(), reason.clone()));
                ledger.nacked.insert((t, name), reason);
                continue;
            }
            if !ledger.nacked.is_empty() {
                ledger.nacked.remove(&(t, entry.name().to_owned()));
            }
            match entry {
                Sent::Removal(name) => {
                    ledger.acked[t].remove(&name);
                }
                Sent::Upsert(r) => ledger.acked[t].insert(r),
            }
        }
    }

    /// What the client has ACKed and rejected.
    pub fn ledger(&self) -> MutexGuard<'_, ClientLedger> {
        self.ledger.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rejections reported by the client since the last call, for logging and metrics.
    pub fn take_new_nacks(&mut self) -> Vec<(usize, String, String)> {
        std::mem::take(&mut self.new_nacks)
    }

    /// Nonces still waiting for an ACK or NACK (all types).
    pub fn pending(&self) -> usize {
        self.types.iter().map(|t| t.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::test_listener as listener;
    use crate::views::{GatewayView, ViewChanges, Views};
    use sluice_proto::config as pb;
    use sluice_proto::discovery::{Node, ResourceError};
    use sluice_proto::google::rpc::Status;

    const L: usize = 2;
    const C: usize = 1;
    const R: usize = 3;

    fn cluster(name: &str) -> Arc<Encoded> {
        Encoded::new(
            type_url::CLUSTER,
            name.into(),
            &pb::Cluster {
                name: name.into(),
                ..Default::default()
            },
        )
    }
    fn route(name: &str) -> Arc<Encoded> {
        Encoded::new(
            type_url::ROUTE,
            name.into(),
            &pb::Route {
                name: name.into(),
                ..Default::default()
            },
        )
    }

    fn view_with(upserts: Vec<Arc<Encoded>>) -> Arc<GatewayView> {
        let views = Views::default();
        let v = views.gateway("ns/gw");
        v.apply(ViewChanges {
            upserts,
            removals: vec![],
        });
        v
    }

    fn req(t: usize) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            node: Some(Node {
                id: "pod-1".into(),
                gateway: "ns/gw".into(),
                ..Default::default()
            }),
            type_url: type_url::ALL[t].into(),
            resource_names_subscribe: vec!["*".into()],
            ..Default::default()
        }
    }

    fn ack(t: usize, nonce: &str) -> DeltaDiscoveryRequest {
        DeltaDiscoveryRequest {
            type_url: type_url::ALL[t].into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    fn names(r: &DeltaDiscoveryResponse) -> Vec<&str> {
        r.resources.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn wildcard_gets_everything_with_unique_nonces() {
        let v = view_with(vec![listener("a", 1), listener("b", 2)]);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        let out = v.read(|vs| s.on_request(req(L), vs)).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(names(&out[0]), ["a", "b"]);
        assert_eq!(out[0].type_url, type_url::LISTENER);
        let out2 = v.read(|vs| s.on_request(req(C), vs)).unwrap();
        assert_eq!(out2.len(), 1, "first request of a type is always answered");
        assert!(out2[0].resources.is_empty());
        assert_ne!(out[0].nonce, out2[0].nonce);
    }

    #[test]
    fn node_id_may_not_change() {
        let v = view_with(vec![]);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        let mut r = req(L);
        r.node.as_mut().unwrap().id = "pod-2".into();
        assert!(matches!(
            v.read(|vs| s.on_request(r, vs)),
            Err(ProtocolError::NodeChanged(..))
        ));
    }

    #[test]
    fn unknown_type_is_an_error() {
        let v = view_with(vec![]);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        let mut r = req(L);
        r.type_url = "type.googleapis.com/other.Thing".into();
        assert!(matches!(
            v.read(|vs| s.on_request(r, vs)),
            Err(ProtocolError::UnknownType(_))
        ));
    }

    #[test]
    fn initial_resource_versions_send_only_differences_and_removals() {
        let a = listener("a", 1);
        let b = listener("b", 2);
        let v = view_with(vec![a.clone(), b]);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        let mut r = req(L);
        r.initial_resource_versions
            .insert("a".into(), a.version.clone());
        r.initial_resource_versions
            .insert("b".into(), "stale".into());
        r.initial_resource_versions
            .insert("gone".into(), "v1".into());
        let out = v.read(|vs| s.on_request(r, vs)).unwrap();
        let upserts: Vec<&str> = out.iter().flat_map(names).collect();
        let removed: Vec<&String> = out.iter().flat_map(|r| &r.removed_resources).collect();
        assert_eq!(upserts, ["b"]);
        assert_eq!(removed, ["gone"]);
    }

    #[test]
    fn up_to_date_reconnect_sends_an_empty_answer_only() {
        let a = listener("a", 1);
        let v = view_with(vec![a.clone()]);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        let mut r = req(L);
        r.initial_resource_versions
            .insert("a".into(), a.version.clone());
        let out = v.read(|vs| s.on_request(r, vs)).unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].resources.is_empty() && out[0].removed_resources.is_empty());
    }

    #[test]
    fn reported_versions_the_view_holds_are_shared_with_the_view() {
        let a = listener("a", 1);
        let v = view_with(vec![a.clone()]);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        let mut r = req(L);
        r.initial_resource_versions
            .insert("a".into(), a.version.clone());
        v.read(|vs| s.on_request(r, vs)).unwrap();
        let held = s.types[L].sent.get("a").expect("held");
        assert!(
            Arc::ptr_eq(held, &a),
            "the stream keeps the view's resource, not a copy of its name and version"
        );
    }

    #[test]
    fn only_changes_are_sent_and_make_before_break_order_holds() {
        let v = view_with(vec![listener("l", 1), cluster("c1"), route("r1")]);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        for t in 0..TYPES {
            v.read(|vs| s.on_request(req(t), vs)).unwrap();
        }
        v.read(|vs| s.on_view_change(vs));
        // Replace route r1 -> r2 using new cluster c2; remove c1.
        v.apply(ViewChanges {
            upserts: vec![cluster("c2"), route("r2")],
            removals: vec![(R, "r1".into()), (C, "c1".into())],
        });
        let out = v.read(|vs| s.on_view_change(vs));
        let seq: Vec<(String, Vec<&str>, Vec<&str>)> = out
            .iter()
            .map(|r| {
                (
                    r.type_url.rsplit('.').next().unwrap().to_string(),
                    names(r),
                    r.removed_resources.iter().map(|s| s.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(
            seq,
            vec![
                ("Cluster".into(), vec!["c2"], vec![]),
                ("Route".into(), vec!["r2"], vec![]),
                ("Route".into(), vec![], vec!["r1"]),
                ("Cluster".into(), vec![], vec!["c1"]),
            ]
        );
        // Nothing changed: nothing sent.
        assert!(v.read(|vs| s.on_view_change(vs)).is_empty());
    }

    #[test]
    fn changes_missed_while_busy_coalesce_into_the_latest_version() {
        let v = view_with(vec![listener("l", 1), listener("m", 1)]);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        v.read(|vs| s.on_request(req(L), vs)).unwrap();
        // Ten revisions of "l" and a create-then-delete of "n" land before the stream wakes.
        for i in 2..=11 {
            v.apply(ViewChanges {
                upserts: vec![listener("l", i)],
                removals: vec![],
            });
        }
        v.apply(ViewChanges {
            upserts: vec![listener("n", 1)],
            removals: vec![],
        });
        v.apply(ViewChanges {
            upserts: vec![],
            removals: vec![(L, "n".into())],
        });
        let out = v.read(|vs| s.on_view_change(vs));
        assert_eq!(out.len(), 1, "one response for all missed revisions");
        assert_eq!(names(&out[0]), ["l"]);
        assert_eq!(out[0].resources[0].version, listener("l", 11).version);
        assert!(
            out[0].removed_resources.is_empty(),
            "never sent, so never removed"
        );
    }

    #[test]
    fn explicit_subscription_is_answered_even_if_held_and_missing_names_are_removed() {
        let a = listener("a", 1);
        let v = view_with(vec![a.clone()]);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        let mut r = req(L);
        r.resource_names_subscribe = vec!["a".into(), "nope".into()];
        r.initial_resource_versions
            .insert("a".into(), a.version.clone());
        let out = v.read(|vs| s.on_request(r, vs)).unwrap();
        let upserts: Vec<&str> = out.iter().flat_map(names).collect();
        let removed: Vec<&String> = out.iter().flat_map(|r| &r.removed_resources).collect();
        assert_eq!(upserts, ["a"]);
        assert_eq!(removed, ["nope"]);
        // "nope" appears later: pushed without a new request.
        v.apply(ViewChanges {
            upserts: vec![listener("nope", 2), listener("other", 3)],
            removals: vec![],
        });
        let out = v.read(|vs| s.on_view_change(vs));
        let upserts: Vec<&str> = out.iter().flat_map(names).collect();
        assert_eq!(upserts, ["nope"], "non-subscribed names are not sent");
    }

    #[test]
    fn subscription_changes_apply_with_a_stale_nonce() {
        let v = view_with(vec![listener("a", 1), listener("b", 2)]);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        let mut r = req(L);
        r.resource_names_subscribe = vec!["a".into()];
        v.read(|vs| s.on_request(r, vs)).unwrap();
        let r2 = DeltaDiscoveryRequest {
            type_url: type_url::LISTENER.into(),
            response_nonce: "does-not-exist".into(),
            resource_names_subscribe: vec!["b".into()],
            ..Default::default()
        };
        let out = v.read(|vs| s.on_request(r2, vs)).unwrap();
        assert_eq!(out.iter().flat_map(names).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn nack_is_recorded_per_resource_and_not_repushed() {
        let v = view_with(vec![listener("a", 1), listener("b", 2)]);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        let out = v.read(|vs| s.on_request(req(L), vs)).unwrap();
        let nack = DeltaDiscoveryRequest {
            type_url: type_url::LISTENER.into(),
            response_nonce: out[0].nonce.clone(),
            error_detail: Some(Status {
                code: 3,
                message: "1 rejected".into(),
                details: vec![],
            }),
            resource_errors: vec![ResourceError {
                name: "b".into(),
                error_detail: Some(Status {
                    code: 3,
                    message: "port in use".into(),
                    details: vec![],
                }),
            }],
            ..Default::default()
        };
        let out = v.read(|vs| s.on_request(nack, vs)).unwrap();
        assert!(out.is_empty(), "a NACK does not trigger a re-push");
        assert_eq!(
            s.ledger().nacked.get(&(L, "b".into())).unwrap(),
            "port in use"
        );
        assert!(s.ledger().acked_version(L, "a").is_some());
        assert!(v.read(|vs| s.on_view_change(vs)).is_empty());
        // New content for b is pushed.
        v.apply(ViewChanges {
            upserts: vec![listener("b", 3)],
            removals: vec![],
        });
        let out = v.read(|vs| s.on_view_change(vs));
        assert_eq!(out.iter().flat_map(names).collect::<Vec<_>>(), ["b"]);
        let _ = v
            .read(|vs| s.on_request(ack(L, &out[0].nonce), vs))
            .unwrap();
        assert!(s.ledger().nacked.is_empty());
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn a_wildcard_added_later_sends_the_rest_and_an_ack_sends_nothing() {
        let v = view_with(vec![listener("a", 1), listener("b", 2)]);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        let mut r = req(L);
        r.resource_names_subscribe = vec!["a".into()];
        let out = v.read(|vs| s.on_request(r, vs)).unwrap();
        assert_eq!(out.iter().flat_map(names).collect::<Vec<_>>(), ["a"]);
        assert!(
            v.read(|vs| s.on_request(ack(L, &out[0].nonce), vs))
                .unwrap()
                .is_empty()
        );
        let star = DeltaDiscoveryRequest {
            type_url: type_url::LISTENER.into(),
            resource_names_subscribe: vec!["*".into()],
            ..Default::default()
        };
        let out = v.read(|vs| s.on_request(star, vs)).unwrap();
        assert_eq!(out.iter().flat_map(names).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn unsubscribe_stops_updates() {
        let v = view_with(vec![listener("a", 1)]);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        let mut r = req(L);
        r.resource_names_subscribe = vec!["a".into()];
        v.read(|vs| s.on_request(r, vs)).unwrap();
        let un = DeltaDiscoveryRequest {
            type_url: type_url::LISTENER.into(),
            resource_names_unsubscribe: vec!["a".into(), "phantom".into()],
            ..Default::default()
        };
        assert!(v.read(|vs| s.on_request(un, vs)).unwrap().is_empty());
        v.apply(ViewChanges {
            upserts: vec![listener("a", 9)],
            removals: vec![],
        });
        assert!(v.read(|vs| s.on_view_change(vs)).is_empty());
    }

    #[test]
    fn large_pushes_are_split_under_the_bound() {
        let route_of = |i: usize, size: usize| {
            Encoded::new(
                type_url::ROUTE,
                format!("r{i:02}"),
                &pb::Route {
                    name: format!("r{i:02}"),
                    source: "x".repeat(size),
                    ..Default::default()
                },
            )
        };
        // 40 routes of 1 KiB, and one bigger than the bound, which goes alone.
        let mut routes: Vec<Arc<Encoded>> = (0..40).map(|i| route_of(i, 1 << 10)).collect();
        routes.push(route_of(40, 64 << 10));
        let v = view_with(routes);
        let mut s = StreamState::new("pod-1".into(), Default::default());
        let out = v.read(|vs| s.on_request(req(R), vs)).unwrap();
        // About three 1 KiB routes fit a response; the big one goes alone.
        assert!((14..=16).contains(&out.len()), "{} responses", out.len());
        let mut seen = HashSet::new();
        for r in &out {
            let names = names(r);
            if names.contains(&"r40") {
                assert_eq!(names, ["r40"], "an oversized resource goes alone");
            } else {
                // What the encoder writes: the bound keeps it within the stream's buffer.
                assert!(prost::Message::encoded_len(r) <= sluice_proto::codec::ENCODE_BUFFER_BYTES);
            }
            for n in names {
                assert!(seen.insert(n.to_string()), "no duplicate names");
            }
        }
        assert_eq!(seen.len(), 41);
        // The data plane is ready only at the last chunk of its initial state.
        let (last, rest) = out.split_last().unwrap();
        assert!(rest.iter().all(|r| r.initial_state_continues));
        assert!(!last.initial_state_continues);
    }

    #[test]
    fn only_the_initial_state_is_marked_as_continuing() {
        let route_of = |i: usize| {
            Encoded::new(
                type_url::ROUTE,
                format!("r{i:02}"),
                &pb::Route {
                    name: format!("r{i:02}"),
                    source: "x".repeat(1 << 10),
                    ..Default::default()
                },
            )
        };
        let v = view_with((0..10).map(route_of).collect());
        let mut s = StreamState::new("pod-1".into(), Default::default());
        let initial = v.read(|vs| s.on_request(req(R), vs)).unwrap();
        assert!(initial.len() > 1);
        // A later split push is not initial state: nothing waits on it.
        v.apply(ViewChanges {
            upserts: (10..20).map(route_of).collect(),
            removals: vec![],
        });
        let pushed = v.read(|vs| s.on_view_change(vs));
        assert!(pushed.len() > 1);
        assert!(pushed.iter().all(|r| !r.initial_state_continues));
    }
}

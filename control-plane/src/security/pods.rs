//! Which data-plane pods are alive, and which gateway each serves. A credential holds only
//! while its pod lives and still belongs to the gateway it was issued for: once the pod is
//! deleted, or relabelled to another gateway, its certificates are refused at the next connect
//! or renewal and its open streams are closed.

use super::identity::PodIdentity;
use super::tokens::gateway_of_pod;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::watcher;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Whether an authenticated pod's credentials still hold.
#[derive(Clone, Default)]
pub enum PodLiveness {
    /// Outside Kubernetes: a credential holds until it expires.
    #[default]
    Unchecked,
    /// The pod (by UID) must be among the live data-plane pods, of the credential's gateway.
    Kubernetes(Arc<PodSet>),
}

impl PodLiveness {
    pub fn check(&self, identity: &PodIdentity) -> Result<(), String> {
        match self {
            PodLiveness::Unchecked => Ok(()),
            PodLiveness::Kubernetes(pods) => pods.check(identity),
        }
    }

    /// Wakes when the set of live pods changes (streams re-check their pod then).
    pub fn subscribe(&self) -> Option<watch::Receiver<u64>> {
        match self {
            PodLiveness::Unchecked => None,
            PodLiveness::Kubernetes(pods) => Some(pods.changed.subscribe()),
        }
    }
}

/// A live data-plane pod as its labels describe it now.
#[derive(Clone, Debug, PartialEq)]
struct LivePod {
    /// `namespace/name`.
    name: String,
    /// The gateway (name, in the pod's namespace) its operator labels name; `None` when they
    /// name none (the instance label removed).
    gateway: Option<String>,
}

#[derive(Default)]
struct State {
    synced: bool,
    live: HashMap<String, LivePod>,
    /// UIDs seen deleted: their credentials are revoked for good.
    revoked: HashSet<String>,
    /// The relist in progress (a watch restart): replaces `live` when done.
    relist: Option<HashMap<String, LivePod>>,
}

/// The live data-plane pods, from a watch. Pure bookkeeping: the watch adapter feeds it.
pub struct PodSet {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl Default for PodSet {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            changed: watch::channel(0).0,
        }
    }
}

fn key(pod: &Pod) -> Option<(String, LivePod)> {
    let uid = pod.metadata.uid.clone()?;
    let name = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod.metadata.name.as_deref().unwrap_or_default()
    );
    // The same labels bootstrap read to name the pod's gateway.
    let gateway = gateway_of_pod(pod);
    Some((uid, LivePod { name, gateway }))
}

impl PodSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn check(&self, identity: &PodIdentity) -> Result<(), String> {
        let Some(uid) = &identity.uid else {
            return Err(format!(
                "the credential of {identity} carries no pod uid; Kubernetes pods need one"
            ));
        };
        let state = self.lock();
        if state.revoked.contains(uid) {
            return Err(format!(
                "the credentials of {identity} are revoked: the pod was deleted"
            ));
        }
        if !state.synced {
            return Err("the control plane has not listed the data-plane pods yet; retry".into());
        }
        let Some(pod) = state.live.get(uid) else {
            return Err(format!(
                "the credentials of {identity} are revoked: the pod does not exist"
            ));
        };
        match &pod.gateway {
            Some(gateway) if *gateway == identity.gateway => Ok(()),
            // The pod's namespace is the credential's: only the gateway name can differ.
            Some(gateway) => Err(format!(
                "the credentials of {identity} no longer hold: the pod was relabelled from \
                 gateway {} to gateway {}/{gateway}",
                identity.gateway_id(),
                identity.namespace
            )),
            None => Err(format!(
                "the credentials of {identity} no longer hold: the pod was relabelled from \
                 gateway {} to no gateway",
                identity.gateway_id()
            )),
        }
    }

    pub fn apply(&self, event: watcher::Event<Pod>) {
        let mut state = self.lock();
        match event {
            watcher::Event::Init => state.relist = Some(HashMap::new()),
            watcher::Event::InitApply(pod) => {
                if let (Some(relist), Some((uid, live))) = (state.relist.as_mut(), key(&pod)) {
                    relist.insert(uid, live);
                }
            }
            watcher::Event::InitDone => {
                let relist = state.relist.take().unwrap_or_default();
                // Pods gone while the watch was down are deletions too.
                let gone: Vec<String> = state
                    .live
                    .keys()
                    .filter(|uid| !relist.contains_key(*uid))
                    .cloned()
                    .collect();
                state.revoked.extend(gone);
                state.live = relist;
                state.synced = true;
                drop(state);
                self.notify();
            }
            watcher::Event::Apply(pod) => {
                if let Some((uid, live)) = key(&pod) {
                    let before = state.live.insert(uid.clone(), live.clone());
                    // Pods change often (status); streams re-check only when a gateway did.
                    if let Some(before) = before
                        && before.gateway != live.gateway
                    {
                        drop(state);
                        tracing::info!(
                            pod = %live.name,
                            %uid,
                            from = before.gateway.as_deref().unwrap_or("-"),
                            to = live.gateway.as_deref().unwrap_or("-"),
                            "data-plane pod changed gateway: its credentials no longer hold"
                        );
                        self.notify();
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                if let Some((uid, live)) = key(&pod) {
                    state.live.remove(&uid);
                    state.revoked.insert(uid.clone());
                    drop(state);
                    tracing::info!(pod = %live.name, %uid, "data-plane pod deleted: its credentials are revoked");
                    self.notify();
                }
            }
        }
    }
}

/// The label selector of the operator's data-plane pods.
pub fn data_plane_pod_selector() -> String {
    use crate::operator::metadata::{
        COMPONENT_LABEL, DATA_PLANE_COMPONENT, MANAGED_BY, MANAGED_BY_LABEL,
    };
    format!("{MANAGED_BY_LABEL}={MANAGED_BY},{COMPONENT_LABEL}={DATA_PLANE_COMPONENT}")
}

/// Keeps `pods` following the data-plane pods of `namespace` (all when `None`) until dropped.
pub async fn watch_pods(client: kube::Client, namespace: Option<String>, pods: Arc<PodSet>) {
    let api: Api<Pod> = match &namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let config = watcher::Config::default().labels(&data_plane_pod_selector());
    let mut events = watcher(api, config).boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(event) => pods.apply(event),
            Err(e) => tracing::warn!(error = %e, "data-plane pod watch failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A data-plane pod of `gateway` as the operator labels it (`None`: no instance label).
    fn labelled(name: &str, uid: &str, gateway: Option<&str>) -> Pod {
        let mut labels = json!({
            "app.kubernetes.io/component": "data-plane",
            "app.kubernetes.io/managed-by": "sluice"});
        if let Some(gateway) = gateway {
            labels["app.kubernetes.io/instance"] = json!(gateway);
        }
        serde_json::from_value(json!({"metadata": {
            "name": name, "namespace": "edge", "uid": uid, "labels": labels}}))
        .expect("a Pod")
    }

    fn pod(name: &str, uid: &str) -> Pod {
        labelled(name, uid, Some("a"))
    }

    fn identity(name: &str, uid: &str) -> PodIdentity {
        PodIdentity {
            namespace: "edge".into(),
            gateway: "a".into(),
            pod: name.into(),
            uid: Some(uid.into()),
        }
    }

    #[test]
    fn nothing_is_trusted_before_the_list_and_deleted_pods_are_revoked() {
        let pods = PodSet::default();
        let a = identity("a-1", "u1");
        assert!(pods.check(&a).expect_err("unsynced").contains("not listed"));
        pods.apply(watcher::Event::Init);
        pods.apply(watcher::Event::InitApply(pod("a-1", "u1")));
        pods.apply(watcher::Event::InitApply(pod("a-2", "u2")));
        pods.apply(watcher::Event::InitDone);
        let changed = pods.changed.subscribe();
        assert_eq!(pods.check(&a), Ok(()));
        pods.apply(watcher::Event::Delete(pod("a-1", "u1")));
        assert!(changed.has_changed().expect("open"));
        assert_eq!(
            pods.check(&a),
            Err(
                "the credentials of pod edge/a-1 (uid u1) of gateway edge/a are revoked: \
                 the pod was deleted"
                    .into()
            )
        );
        // A re-created pod of the same name is another pod: the old uid stays revoked.
        pods.apply(watcher::Event::Apply(pod("a-1", "u3")));
        assert!(pods.check(&a).is_err());
        assert_eq!(pods.check(&identity("a-1", "u3")), Ok(()));
        // Unknown to the list: refused.
        assert!(
            pods.check(&identity("a-9", "u9"))
                .expect_err("unknown")
                .contains("does not exist")
        );
        // A relist that misses a pod revokes it.
        pods.apply(watcher::Event::Init);
        pods.apply(watcher::Event::InitApply(pod("a-1", "u3")));
        pods.apply(watcher::Event::InitDone);
        assert!(
            pods.check(&identity("a-2", "u2"))
                .expect_err("gone")
                .contains("revoked")
        );
        let no_uid = PodIdentity {
            uid: None,
            ..identity("a-1", "u3")
        };
        assert!(
            pods.check(&no_uid)
                .expect_err("no uid")
                .contains("no pod uid")
        );
    }

    #[test]
    fn a_pod_relabelled_to_another_gateway_loses_its_credentials() {
        let pods = PodSet::default();
        pods.apply(watcher::Event::Init);
        pods.apply(watcher::Event::InitApply(pod("a-1", "u1")));
        pods.apply(watcher::Event::InitDone);
        let a = identity("a-1", "u1");
        assert_eq!(pods.check(&a), Ok(()));
        // A status update that keeps the gateway wakes no stream.
        let mut changed = pods.changed.subscribe();
        pods.apply(watcher::Event::Apply(pod("a-1", "u1")));
        assert!(!changed.has_changed().expect("open"));
        assert_eq!(pods.check(&a), Ok(()));

        pods.apply(watcher::Event::Apply(labelled("a-1", "u1", Some("b"))));
        assert!(changed.has_changed().expect("open"), "streams re-check");
        changed.mark_unchanged();
        assert_eq!(
            pods.check(&a),
            Err(
                "the credentials of pod edge/a-1 (uid u1) of gateway edge/a no longer hold: \
                 the pod was relabelled from gateway edge/a to gateway edge/b"
                    .into()
            )
        );
        // Its new gateway's credential (a new bootstrap) holds.
        let as_b = PodIdentity {
            gateway: "b".into(),
            ..a.clone()
        };
        assert_eq!(pods.check(&as_b), Ok(()));

        pods.apply(watcher::Event::Apply(labelled("a-1", "u1", None)));
        assert!(changed.has_changed().expect("open"));
        assert_eq!(
            pods.check(&as_b),
            Err(
                "the credentials of pod edge/a-1 (uid u1) of gateway edge/b no longer hold: \
                 the pod was relabelled from gateway edge/b to no gateway"
                    .into()
            )
        );
        // Relabelled back: the original credential holds again (the pod is the same pod).
        pods.apply(watcher::Event::Apply(pod("a-1", "u1")));
        assert_eq!(pods.check(&a), Ok(()));

        // A relabel missed while the watch was down is seen by the relist.
        pods.apply(watcher::Event::Init);
        pods.apply(watcher::Event::InitApply(labelled("a-1", "u1", Some("b"))));
        pods.apply(watcher::Event::InitDone);
        assert!(
            pods.check(&a)
                .expect_err("relabelled")
                .contains("relabelled from gateway edge/a to gateway edge/b")
        );
    }
}

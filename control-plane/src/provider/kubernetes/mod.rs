//! The Kubernetes provider: one kube-runtime watcher per watched kind feeding [`WatchCore`], which
//! turns watch events into the same provider batches the file provider sends.
//!
//! This module is the thin I/O edge: it builds the watchers (cluster-wide, or one namespace for
//! namespaced kinds), drops `managedFields` as objects arrive, picks streaming or paged initial
//! lists by server version, and classifies watch errors. A resource the server does not serve
//! (404: its CRD is not installed) is logged once, counts as synced and empty, and keeps being
//! retried with backoff, so installing the CRD later starts the watch without a restart.

pub mod core;
mod secrets;
pub mod watches;

use std::pin::pin;
use std::time::Duration;

use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, core::Status};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

pub use self::core::WatchCore;
use self::watches::{WatchId, WatchSpec, streams_initial_lists, watch_specs};
use super::ProviderEvent;
use super::object_errors::ObjectErrors;

/// How often the provider says which watches it still waits for before the first sync.
const WAITING_LOG_PERIOD: Duration = Duration::from_secs(10);

/// What a watch task reports to the core.
enum WatchInput {
    /// Boxed: an object is large, the channel holds many.
    Event(Box<watcher::Event<DynamicObject>>),
    NotServed,
}

/// Watches the cluster and sends provider batches. See the module documentation.
pub struct KubernetesProvider {
    client: Client,
    namespace: Option<String>,
    errors: ObjectErrors,
}

impl KubernetesProvider {
    /// `namespace` restricts the namespaced kinds to one namespace; cluster-scoped kinds
    /// (GatewayClass, Namespace) are always watched cluster-wide. Rejected objects are recorded in
    /// `errors`.
    pub fn new(client: Client, namespace: Option<String>, errors: ObjectErrors) -> Self {
        Self {
            client,
            namespace,
            errors,
        }
    }

    /// Runs until the receiver of `tx` is dropped.
    pub async fn run(self, tx: mpsc::UnboundedSender<Vec<ProviderEvent>>) {
        let streaming = match self.client.apiserver_version().await {
            Ok(info) => {
                let streaming = streams_initial_lists(&info.major, &info.minor);
                tracing::info!(
                    server = %info.git_version,
                    streaming_lists = streaming,
                    namespace = self.namespace.as_deref().unwrap_or("(all)"),
                    "watching the Kubernetes API"
                );
                streaming
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the API server version; using paged lists");
                false
            }
        };
        let specs = watch_specs();
        let (inputs_tx, mut inputs) = mpsc::unbounded_channel();
        // Dropping the set (when `run` returns) aborts every watch.
        let mut tasks = JoinSet::new();
        for (id, spec) in specs.iter().enumerate() {
            let ar = spec.api_resource();
            let api = match &self.namespace {
                Some(ns) if spec.kind.is_namespaced() => {
                    Api::<DynamicObject>::namespaced_with(self.client.clone(), ns, &ar)
                }
                _ => Api::<DynamicObject>::all_with(self.client.clone(), &ar),
            };
            tasks.spawn(run_watch(
                id,
                spec.clone(),
                api,
                streaming,
                inputs_tx.clone(),
            ));
        }
        drop(inputs_tx);

        let mut core = WatchCore::new(specs, self.errors);
        let mut waiting = tokio::time::interval(WAITING_LOG_PERIOD);
        waiting.tick().await;
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                input = inputs.recv() => {
                    let Some(first) = input else { return };
                    let mut out = Vec::new();
                    apply(&mut core, first, &mut out);
                    // Everything already queued goes in the same batch.
                    while let Ok(more) = inputs.try_recv() {
                        apply(&mut core, more, &mut out);
                    }
                    if out.iter().any(|e| matches!(e, ProviderEvent::Synced)) {
                        tracing::info!("every watch has listed: configuration complete");
                    }
                    if !out.is_empty() && tx.send(out).is_err() {
                        return;
                    }
                }
                _ = waiting.tick(), if !core.is_synced() => {
                    let pending: Vec<String> = core.pending().iter().map(ToString::to_string).collect();
                    tracing::info!(waiting_for = %pending.join(", "), "not serving configuration until every watch has listed");
                }
            }
        }
    }
}

fn apply(core: &mut WatchCore, (id, input): (WatchId, WatchInput), out: &mut Vec<ProviderEvent>) {
    match input {
        WatchInput::Event(event) => core.handle(id, *event, out),
        WatchInput::NotServed => core.not_installed(id, out),
    }
}

/// How a watch error is handled.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    /// 404: the resource is not served (CRD not installed, or removed).
    NotServed,
    /// The server refused a streaming list (WatchList turned off): list in pages instead.
    StreamingRefused,
    /// Anything else: logged, retried with backoff by the watcher.
    Other,
}

fn classify(error: &watcher::Error, streaming: bool) -> Failure {
    let status: Option<&Status> = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(s))
        | watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s)) => Some(s),
        watcher::Error::WatchError(s) => Some(s),
        _ => None,
    };
    match status.map(|s| s.code) {
        Some(404) => Failure::NotServed,
        Some(400 | 422) if streaming && matches!(error, watcher::Error::WatchStartFailed(_)) => {
            Failure::StreamingRefused
        }
        _ => Failure::Other,
    }
}

fn watcher_config(spec: &WatchSpec, streaming: bool) -> watcher::Config {
    let mut config = watcher::Config::default();
    if let Some(selector) = spec.field_selector {
        config = config.fields(selector);
    }
    if streaming {
        config = config.streaming_lists();
    }
    config
}

/// One watch, forever: events to the core, errors classified and logged. The watcher retries
/// with backoff on its own; only a refused streaming list restarts it in paged mode.
async fn run_watch(
    id: WatchId,
    spec: WatchSpec,
    api: Api<DynamicObject>,
    mut streaming: bool,
    tx: mpsc::UnboundedSender<(WatchId, WatchInput)>,
) {
    let mut not_served = false;
    loop {
        let events = watcher(api.clone(), watcher_config(&spec, streaming))
            // Nothing reads managedFields; they are often the largest part of an object.
            .modify(|o: &mut DynamicObject| o.metadata.managed_fields = None)
            .default_backoff();
        let mut events = pin!(events);
        let mut restart = false;
        while let Some(item) = events.next().await {
            let input = match item {
                Ok(event) => {
                    if not_served && matches!(event, watcher::Event::InitDone) {
                        tracing::info!(watch = %spec, "resource is served now; watching it");
                        not_served = false;
                    }
                    WatchInput::Event(Box::new(event))
                }
                Err(e) => match classify(&e, streaming) {
                    Failure::NotServed if not_served => {
                        tracing::debug!(watch = %spec, "still not served");
                        continue;
                    }
                    Failure::NotServed => {
                        not_served = true;
                        let hint = if spec.is_custom() {
                            "is its CRD installed? "
                        } else {
                            ""
                        };
                        tracing::warn!(watch = %spec, error = %e, "resource not served by the API server ({hint}treated as empty; retrying in the background)");
                        WatchInput::NotServed
                    }
                    Failure::StreamingRefused => {
                        tracing::warn!(watch = %spec, error = %e, "streaming list refused; falling back to paged lists");
                        streaming = false;
                        restart = true;
                        break;
                    }
                    Failure::Other => {
                        tracing::warn!(watch = %spec, error = %e, "watch failed; retrying");
                        continue;
                    }
                },
            };
            if tx.send((id, input)).is_err() {
                return;
            }
        }
        if !restart {
            // A watcher stream does not end; if it ever did, the watch is over.
            tracing::error!(watch = %spec, "watch ended");
            return;
        }
    }
}

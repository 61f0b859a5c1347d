//! The connection loop: connect, subscribe to every type with what is already held, apply and
//! ACK each response, and reconnect with exponential backoff and jitter when the stream ends.

use super::batch::{InitialState, batch_admits, owner_of_listener};
use super::identity::{Credentials, XdsTls, keep_renewed};
use super::state::{ConfigState, acknowledgement};
use crate::config_dump::ActiveConfig;
use crate::listeners::ProxyRuntime;
use crate::metrics::Metrics;
use crate::snapshot::Changed;
use futures::FutureExt;
use prost::Message;
use sluice_proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use sluice_proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node};
use sluice_proto::type_url;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// e.g. "http://127.0.0.1:18000".
    pub endpoint: String,
    pub node_id: String,
    /// "namespace/name".
    pub gateway: String,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// GeoIP country database for geoBlock middlewares (`--geoip-database`).
    pub geoip_database: Option<std::path::PathBuf>,
    /// TLS with a client certificate from the control plane; `None`: plaintext (loopback).
    pub tls: Option<XdsTls>,
}

/// `type_url::ALL` as metric labels.
const TYPE_NAMES: [&str; type_url::ALL.len()] = ["secret", "cluster", "listener", "route"];

/// Why one connection attempt ended.
#[derive(Debug, thiserror::Error)]
enum StreamEnd {
    #[error("connect: {0}")]
    Connect(#[from] tonic::transport::Error),
    #[error("stream: {0}")]
    Status(#[from] tonic::Status),
    #[error("control plane closed the stream")]
    Closed,
    #[error("client certificate: {0}")]
    Identity(#[from] super::identity::IdentityError),
}

/// Runs until the process ends. `ready` becomes true once the initial state of every type has
/// been applied and is serving, and stays true across reconnects (the last good config serves).
/// Routes record metrics in the runtime's registry; `active` follows the held resources.
pub async fn run(
    opts: ClientOptions,
    runtime: Arc<ProxyRuntime>,
    ready: watch::Sender<bool>,
    active: Arc<ActiveConfig>,
) {
    let metrics = runtime.observer().metrics().clone();
    let mut state = ConfigState::with_metrics(metrics.clone());
    state.set_geoip_database(opts.geoip_database.clone());
    let mut backoff = opts.backoff_initial;
    let credentials = opts.tls.clone().map(Credentials::new);
    if let Some(credentials) = &credentials {
        tokio::spawn(keep_renewed(
            credentials.clone(),
            opts.endpoint.clone(),
            node(&opts),
        ));
    }
    loop {
        let mut got_response = false;
        let result = session(
            &opts,
            credentials.as_deref(),
            &runtime,
            &ready,
            &mut state,
            &active,
            &mut got_response,
        )
        .await;
        metrics.xds_connected(false);
        let end = match result {
            Ok(()) => StreamEnd::Closed,
            Err(e) => e,
        };
        if got_response {
            backoff = opts.backoff_initial;
        }
        // Full jitter: a fleet reconnecting after a control-plane restart spreads out.
        let delay = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
        tracing::warn!(error = %end, retry_in_ms = delay.as_millis() as u64, "xDS stream down; serving last good config");
        tokio::time::sleep(delay).await;
        backoff = (backoff * 2).min(opts.backoff_max);
    }
}

fn node(opts: &ClientOptions) -> Node {
    Node {
        id: opts.node_id.clone(),
        gateway: opts.gateway.clone(),
        metadata: Default::default(),
        build_version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// One connection: returns when the stream ends.
async fn session(
    opts: &ClientOptions,
    credentials: Option<&Credentials>,
    runtime: &Arc<ProxyRuntime>,
    ready: &watch::Sender<bool>,
    state: &mut ConfigState,
    active: &ActiveConfig,
    got_response: &mut bool,
) -> Result<(), StreamEnd> {
    let mut endpoint = tonic::transport::Endpoint::from_shared(opts.endpoint.clone())?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30));
    if let Some(credentials) = credentials {
        if !credentials.has_valid() {
            credentials.issue(&opts.endpoint, &node(opts)).await?;
        }
        endpoint = endpoint.tls_config(credentials.tls_config())?;
    }
    let channel = endpoint.connect().await?;
    let mut client =
        AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(16 << 20);
    let (tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(16);
    let node = node(opts);
    // The first request of every type carries the node and what is already held, so the
    // server sends only what differs.
    for (t, url) in type_url::ALL.iter().enumerate() {
        let req = DeltaDiscoveryRequest {
            node: Some(node.clone()),
            type_url: url.to_string(),
            resource_names_subscribe: vec!["*".into()],
            initial_resource_versions: state
                .versions(t)
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            ..Default::default()
        };
        if tx.send(req).await.is_err() {
            return Err(StreamEnd::Closed);
        }
    }
    let mut inbound = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    tracing::info!(endpoint = %opts.endpoint, gateway = %opts.gateway, "xDS stream open");
    let metrics = runtime.observer().metrics();
    metrics.xds_connected(true);
    let mut initial = InitialState::default();
    loop {
        let Some(first) = inbound.message().await? else {
            return Ok(());
        };
        *got_response = true;
        // Everything already received is applied together: one compile and one swap per burst
        // (a split initial state arrives as hundreds of responses), bounded so ACKs keep flowing.
        let mut bytes = first.encoded_len();
        let mut batch = vec![first];
        let mut end = None;
        while let Some(next) = inbound.message().now_or_never() {
            match next {
                Ok(Some(resp)) => {
                    bytes += resp.encoded_len();
                    batch.push(resp);
                }
                Ok(None) => end = Some(Ok(())),
                Err(status) => end = Some(Err(StreamEnd::Status(status))),
            }
            if end.is_some() || !batch_admits(batch.len(), bytes, 0) {
                break;
            }
        }
        let rejected = apply_batch(&batch, state, runtime, active).await;
        for (resp, rejected) in batch.iter().zip(&rejected) {
            initial.observe(resp);
            record(resp, rejected, state, metrics);
        }
        if initial.complete() && !*ready.borrow() {
            tracing::info!(gateway = %opts.gateway, "initial configuration applied; ready");
            ready.send_replace(true);
        }
        // ACK only now: the snapshot holding every response of the batch is serving.
        for (resp, rejected) in batch.iter().zip(&rejected) {
            if tx.send(acknowledgement(resp, rejected)).await.is_err() {
                return Err(StreamEnd::Closed);
            }
        }
        if let Some(end) = end {
            return end;
        }
    }
}

/// Applies `batch` to the held state with one compile and one swap; returns each response's
/// rejected (name, reason) pairs, listeners the runtime could not start included.
async fn apply_batch(
    batch: &[DeltaDiscoveryResponse],
    state: &mut ConfigState,
    runtime: &Arc<ProxyRuntime>,
    active: &ActiveConfig,
) -> Vec<Vec<(String, String)>> {
    let started = std::time::Instant::now();
    let mut changed = Changed::default();
    let mut rejected = Vec::with_capacity(batch.len());
    for resp in batch {
        let applied = state.apply(resp);
        changed.merge(applied.changed);
        rejected.push(applied.rejected);
    }
    if changed.is_empty() {
        return rejected;
    }
    let snapshot = state.compile(&changed);
    let failed = runtime.apply(snapshot).await;
    active.update(&state.resources, state, &changed);
    if !failed.is_empty() {
        let names: Vec<String> = failed.iter().map(|(n, _)| n.clone()).collect();
        let dropped = state.drop_listeners(&names);
        let snapshot = state.compile(&dropped);
        runtime.apply(snapshot).await;
        active.update(&state.resources, state, &dropped);
        for (name, reason) in failed {
            if let Some(i) = owner_of_listener(batch, &name) {
                rejected[i].push((name, reason));
            }
        }
    }
    tracing::info!(
        responses = batch.len(),
        apply_us = started.elapsed().as_micros() as u64,
        "applied snapshot"
    );
    rejected
}

/// Metrics and logs for one applied response.
fn record(
    resp: &DeltaDiscoveryResponse,
    rejected: &[(String, String)],
    state: &ConfigState,
    metrics: &Metrics,
) {
    if let Some(t) = type_url::ALL.iter().position(|u| *u == resp.type_url) {
        let accepted = resp.resources.len() + resp.removed_resources.len();
        metrics.config_applied(
            TYPE_NAMES[t],
            state.held(t),
            accepted.saturating_sub(rejected.len()) as u64,
            rejected.len() as u64,
        );
    }
    if resp.resources.is_empty() && resp.removed_resources.is_empty() {
        tracing::debug!(type_url = %resp.type_url, nonce = %resp.nonce, "applied response (no changes)");
    } else {
        tracing::info!(
            type_url = %resp.type_url,
            resources = resp.resources.len(),
            removed = resp.removed_resources.len(),
            rejected = rejected.len(),
            initial_state_continues = resp.initial_state_continues,
            "applied update"
        );
    }
    for (name, reason) in rejected {
        tracing::warn!(type_url = %resp.type_url, resource = %name, %reason, "rejected resource");
    }
}

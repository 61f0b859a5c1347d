//! The tonic edge of the delta ADS service: accepts streams, checks the node, and drives a
//! `StreamState` from requests and view changes.

use super::clients::{ClientInfo, Clients};
use super::identity::IdentityService;
use super::inspection::InspectionService;
use super::peer::ads_peer;
use super::stream::StreamState;
use crate::security::Security;
use crate::security::authorize::authorize_node;
use crate::views::Views;
use futures::{Stream, StreamExt};
use sluice_proto::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use sluice_proto::discovery::identity_server::IdentityServer;
use sluice_proto::discovery::inspection_server::InspectionServer;
use sluice_proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Responses buffered per stream before the stream task waits for the client to read.
const STREAM_BUFFER: usize = 16;

#[derive(Clone)]
pub struct AdsService {
    views: Arc<Views>,
    clients: Arc<Clients>,
    security: Arc<Security>,
    closing: Closing,
}

impl AdsService {
    pub fn new(
        views: Arc<Views>,
        clients: Arc<Clients>,
        security: Arc<Security>,
        closing: Closing,
    ) -> Self {
        Self {
            views,
            clients,
            security,
            closing,
        }
    }
}

/// Becomes true when the server shuts down: long-lived streams end so connections can close.
pub type Closing = tokio::sync::watch::Receiver<bool>;

/// Resolves once the server is shutting down.
pub async fn closed(mut closing: Closing) {
    let _ = closing.wait_for(|c| *c).await;
}

/// A gateway id is "namespace/name" with both parts non-empty.
pub fn valid_gateway_id(id: &str) -> bool {
    matches!(id.split_once('/'), Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/'))
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

/// What a stream task queues for its client. Boxed: the queue allocates its slots up front
/// (32 per block), and an unboxed response would make that ~4 KiB per connected pod.
type Outbound = Result<Box<DeltaDiscoveryResponse>, Status>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for AdsService {
    type DeltaAggregatedResourcesStream = ResponseStream;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let authenticated = ads_peer(&request, &self.security)?;
        let peer = request
            .remote_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("stream closed before its first request"))?;
        let node = first
            .node
            .clone()
            .filter(|n| !n.id.is_empty())
            .ok_or_else(|| Status::invalid_argument("the first request must carry node.id"))?;
        if !valid_gateway_id(&node.gateway) {
            return Err(Status::invalid_argument(format!(
                "node.gateway {:?} must be \"namespace/name\"",
                node.gateway
            )));
        }
        if let Some(cert) = &authenticated {
            authorize_node(&cert.identity, &node, "client certificate").map_err(|reason| {
                tracing::warn!(node = %node.id, gateway = %node.gateway, %peer, serial = %cert.serial, %reason, "ADS refused");
                Status::permission_denied(reason)
            })?;
        }
        let serial = authenticated
            .as_ref()
            .map(|c| c.serial.clone())
            .unwrap_or_default();
        if let Err(retry_after) = self.clients.admission().admit_stream() {
            tracing::debug!(node = %node.id, gateway = %node.gateway, %peer, ?retry_after, "new stream shed");
            return Err(super::admission::shed_status(retry_after));
        }
        tracing::info!(node = %node.id, gateway = %node.gateway, %peer, %serial, "data plane connected");
        let ledger = Arc::new(std::sync::Mutex::new(Default::default()));
        let id = self.clients.register(ClientInfo {
            node_id: node.id.clone(),
            gateway: node.gateway.clone(),
            peer,
            build_version: node.build_version.clone(),
            ledger: ledger.clone(),
        });
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let views = self.views.clone();
        let clients = self.clients.clone();
        let closing = self.closing.clone();
        let security = self.security.clone();
        let refusals = tx.clone();
        tokio::spawn(async move {
            let node_id = node.id.clone();
            tokio::select! {
                _ = run_stream(&views, &clients, node, ledger, first, inbound, tx) => {}
                _ = closed(closing) => {}
                status = super::credentials::ended(&security, authenticated.as_ref()) => {
                    tracing::warn!(node = %node_id, %serial, reason = %status.message(), "closing the stream: its credentials no longer hold");
                    let _ = refusals.send(Err(status)).await;
                }
            }
            clients.remove(id);
        });
        Ok(Response::new(Box::pin(
            ReceiverStream::new(rx).map(|queued| queued.map(|r| *r)),
        )))
    }
}

async fn run_stream(
    views: &Views,
    clients: &Clients,
    node: sluice_proto::discovery::Node,
    ledger: Arc<std::sync::Mutex<super::stream::ClientLedger>>,
    first: DeltaDiscoveryRequest,
    mut inbound: Streaming<DeltaDiscoveryRequest>,
    tx: mpsc::Sender<Outbound>,
) {
    // Nothing is served before every provider synced and a full translation ran.
    views.wait_ready().await;
    let view = views.gateway(&node.gateway);
    let mut revisions = view.subscribe();
    let mut state = StreamState::new(node.id.clone(), ledger);
    let mut next = Some(first);
    loop {
        if let Some(req) = next.take() {
            let settles = !req.response_nonce.is_empty();
            let result = {
                let _slot = clients.admission().push_permit().await;
                view.read(|v| state.on_request(req, v))
            };
            if settles {
                clients.touch();
            }
            match result {
                Ok(responses) => {
                    for r in responses {
                        if tx.send(Ok(Box::new(r))).await.is_err() {
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(node = %node.id, error = %e, "closing stream");
                    let _ = tx.send(Err(Status::invalid_argument(e.to_string()))).await;
                    return;
                }
            }
            for (t, name, reason) in state.take_new_nacks() {
                tracing::warn!(node = %node.id, gateway = %node.gateway, type_url = sluice_proto::type_url::ALL[t], resource = %name, %reason, "data plane rejected a resource");
            }
        }
        tokio::select! {
            msg = inbound.message() => match msg {
                Ok(Some(req)) => next = Some(req),
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(node = %node.id, error = %e, "stream ended");
                    break;
                }
            },
            changed = revisions.changed() => {
                if changed.is_err() {
                    break;
                }
                // Latest wins: revisions that arrived while this stream was busy (or its
                // client slow to read) are one catch-up from the view's change log here.
                let responses = {
                    let _slot = clients.admission().push_permit().await;
                    view.read(|v| state.on_view_change(v))
                };
                for r in responses {
                    if tx.send(Ok(Box::new(r))).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    tracing::info!(node = %node.id, gateway = %node.gateway, "data plane disconnected");
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error(transparent)]
    Tls(#[from] super::tls::TlsSetupError),
    #[error("binding the health address {0}: {1}")]
    Health(SocketAddr, std::io::Error),
}

/// Serves ADS, inspection, health and reflection (v1 and v1alpha, so grpcurl 1.8 works) on `addr`
/// until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    views: Arc<Views>,
    clients: Arc<Clients>,
    security: Arc<Security>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_not_serving::<AggregatedDiscoveryServiceServer<AdsService>>()
        .await;
    {
        let views = views.clone();
        tokio::spawn(async move {
            views.wait_ready().await;
            health
                .set_serving::<AggregatedDiscoveryServiceServer<AdsService>>()
                .await;
        });
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let v1 = reflection()
        .build_v1()
        .expect("embedded descriptor sets are valid");
    let v1alpha = reflection()
        .build_v1alpha()
        .expect("embedded descriptor sets are valid");
    let (close_tx, closing) = tokio::sync::watch::channel(false);
    let shutdown = async move {
        shutdown.await;
        close_tx.send_replace(true);
    };
    if let Some(health_addr) = security.health_listen {
        let health_listener = tokio::net::TcpListener::bind(health_addr)
            .await
            .map_err(|e| ServeError::Health(health_addr, e))?;
        tracing::info!(addr = %health_addr, "plaintext gRPC health listening");
        let health_only = tonic::transport::Server::builder()
            .add_service(health_service.clone())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(health_listener),
                closed(closing.clone()),
            );
        tokio::spawn(async move {
            if let Err(e) = health_only.await {
                tracing::error!(error = %e, "plaintext gRPC health stopped");
            }
        });
    }
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let tls_config = security.tls.as_ref().map(super::tls::server_config);
    tracing::info!(addr = ?addr, tls = security.tls.is_some(), "xDS server listening");
    let router = tonic::transport::Server::builder()
        .tcp_nodelay(true)
        .add_service(health_service)
        .add_service(v1)
        .add_service(v1alpha)
        .add_service(
            AggregatedDiscoveryServiceServer::new(AdsService::new(
                views.clone(),
                clients.clone(),
                security.clone(),
                closing.clone(),
            ))
            .max_decoding_message_size(16 << 20),
        )
        .add_service(IdentityServer::new(IdentityService::new(security.clone())))
        .add_service(InspectionServer::new(InspectionService::new(
            views, clients, security, closing,
        )));
    match tls_config {
        None => {
            router
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    shutdown,
                )
                .await?
        }
        Some(Ok(config)) => {
            router
                .serve_with_incoming_shutdown(super::tls::incoming(listener, config), shutdown)
                .await?
        }
        Some(Err(e)) => return Err(e.into()),
    }
    Ok(())
}

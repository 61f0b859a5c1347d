//! Read-only inspection for operators: which gateways exist, who is connected, what they ACKed,
//! and each gateway's resources (fetched once or watched).

use super::clients::Clients;
use super::credentials::{admin_ended, check_admin};
use super::peer::{bearer_token, certified_peer};
use super::server::{Closing, closed, valid_gateway_id};
use crate::security::identity::{AdminCertificate, CertifiedPeer};
use crate::security::{AdminScope, Security};
use crate::views::{GatewayView, Views};
use futures::Stream;
use sluice_proto::discovery::inspection_server::Inspection;
use sluice_proto::discovery::{
    ClientStatus, GatewayStatus, GetResourcesRequest, GetResourcesResponse, ListGatewaysRequest,
    ListGatewaysResponse, Resource, ResourceError, ResourceVersion, WatchResourcesResponse,
};
use sluice_proto::google::rpc::Status as RpcStatus;
use sluice_proto::type_url;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// An authorized caller of the inspection service.
struct Inspector {
    scope: AdminScope,
    /// Names the credential in refusals.
    who: String,
    /// The admin certificate it authenticated with, if any (a watch ends with it).
    certificate: Option<AdminCertificate>,
}

pub struct InspectionService {
    views: Arc<Views>,
    clients: Arc<Clients>,
    security: Arc<Security>,
    closing: Closing,
}

impl InspectionService {
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

    /// Who the caller is and what its admin credential lets it see: an admin client
    /// certificate of our CA, else an admin bearer token. A pod's certificate never inspects.
    fn inspector<T>(&self, request: &Request<T>) -> Result<Inspector, Status> {
        match certified_peer(request)? {
            Some(CertifiedPeer::Admin(cert)) => {
                check_admin(&self.security, &cert).map_err(Status::permission_denied)?;
                Ok(Inspector {
                    scope: cert.identity.scope.clone(),
                    who: format!("the admin certificate of {}", cert.identity),
                    certificate: Some(cert),
                })
            }
            Some(CertifiedPeer::Pod(pod)) => Err(Status::permission_denied(format!(
                "the client certificate of {} is a pod's: pods may not inspect (the inspection \
                 service needs an admin certificate or token)",
                pod.identity
            ))),
            None => {
                let scope = self
                    .security
                    .admin
                    .authorize(bearer_token(request).as_deref())
                    .map_err(Status::unauthenticated)?;
                Ok(Inspector {
                    scope,
                    who: "the admin token".into(),
                    certificate: None,
                })
            }
        }
    }

    fn view(
        &self,
        req: &GetResourcesRequest,
        inspector: &Inspector,
    ) -> Result<(Arc<GatewayView>, Option<usize>), Status> {
        if !valid_gateway_id(&req.gateway) {
            return Err(Status::invalid_argument(format!(
                "gateway {:?} must be \"namespace/name\"",
                req.gateway
            )));
        }
        if !inspector.scope.allows(&req.gateway) {
            return Err(Status::permission_denied(format!(
                "{} may not inspect gateway {} (outside its namespaces)",
                inspector.who, req.gateway
            )));
        }
        let type_filter = if req.type_url.is_empty() {
            None
        } else {
            Some(crate::resource::type_index(&req.type_url).ok_or_else(|| {
                Status::invalid_argument(format!("unknown type_url {:?}", req.type_url))
            })?)
        };
        let view = self
            .views
            .existing(&req.gateway)
            .ok_or_else(|| Status::not_found(format!("gateway {} is not known", req.gateway)))?;
        Ok((view, type_filter))
    }
}

/// (type index, name) -> version, for diffing what a watcher has seen.
type Seen = BTreeMap<(usize, String), String>;

fn collect(view: &GatewayView, type_filter: Option<usize>) -> (Vec<Resource>, Seen) {
    view.read(|v| {
        let mut out = Vec::new();
        let mut seen = Seen::new();
        for (t, map) in v.resources.iter().enumerate() {
            if type_filter.is_some_and(|f| f != t) {
                continue;
            }
            for r in map.values() {
                seen.insert((t, r.name.clone()), r.version.clone());
                out.push(r.to_resource());
            }
        }
        (out, seen)
    })
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<WatchResourcesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Inspection for InspectionService {
    async fn list_gateways(
        &self,
        request: Request<ListGatewaysRequest>,
    ) -> Result<Response<ListGatewaysResponse>, Status> {
        let scope = self.inspector(&request)?.scope;
        let mut ids = self.views.ids();
        for c in self.clients.all() {
            if !ids.contains(&c.gateway) {
                ids.push(c.gateway);
            }
        }
        ids.retain(|id| scope.allows(id));
        ids.sort();
        let gateways = ids
            .into_iter()
            .map(|id| {
                let resource_counts = self
                    .views
                    .existing(&id)
                    .map(|v| {
                        v.read(|s| {
                            type_url::ALL
                                .iter()
                                .enumerate()
                                .map(|(t, url)| (url.to_string(), s.count(t) as u32))
                                .collect()
                        })
                    })
                    .unwrap_or_default();
                let clients = self
                    .clients
                    .of_gateway(&id)
                    .into_iter()
                    .map(|c| {
                        let ledger = c.ledger.lock().unwrap_or_else(|e| e.into_inner());
                        ClientStatus {
                            node_id: c.node_id.clone(),
                            peer: c.peer.clone(),
                            build_version: c.build_version.clone(),
                            acked: ledger
                                .acked()
                                .into_iter()
                                .map(|(t, name, version)| ResourceVersion {
                                    type_url: type_url::ALL[t].to_string(),
                                    name: name.to_owned(),
                                    version: version.to_owned(),
                                })
                                .collect(),
                            nacked: ledger
                                .nacked
                                .iter()
                                .map(|((t, name), reason)| ResourceError {
                                    name: format!("{}/{}", type_url::ALL[*t], name),
                                    error_detail: Some(RpcStatus {
                                        code: tonic::Code::InvalidArgument as i32,
                                        message: reason.clone(),
                                        details: vec![],
                                    }),
                                })
                                .collect(),
                        }
                    })
                    .collect();
                GatewayStatus {
                    gateway: id,
                    resource_counts,
                    clients,
                }
            })
            .collect();
        Ok(Response::new(ListGatewaysResponse { gateways }))
    }

    async fn get_resources(
        &self,
        request: Request<GetResourcesRequest>,
    ) -> Result<Response<GetResourcesResponse>, Status> {
        let inspector = self.inspector(&request)?;
        let req = request.into_inner();
        let (view, filter) = self.view(&req, &inspector)?;
        let (resources, _) = collect(&view, filter);
        Ok(Response::new(GetResourcesResponse {
            gateway: req.gateway,
            resources,
        }))
    }

    type WatchResourcesStream = WatchStream;

    async fn watch_resources(
        &self,
        request: Request<GetResourcesRequest>,
    ) -> Result<Response<Self::WatchResourcesStream>, Status> {
        let inspector = self.inspector(&request)?;
        let req = request.into_inner();
        let (view, filter) = self.view(&req, &inspector)?;
        let (tx, rx) = mpsc::channel(4);
        let gateway = req.gateway;
        let closing = self.closing.clone();
        let security = self.security.clone();
        tokio::spawn(async move {
            // A watch does not outlive the admin certificate it authenticated with.
            let credential_ended = async {
                match &inspector.certificate {
                    Some(cert) => admin_ended(&security, cert).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = watch(view, filter, gateway, tx.clone()) => {}
                _ = closed(closing) => {}
                status = credential_ended => {
                    tracing::info!(reason = %status.message(), "closing an inspection watch: its admin certificate no longer holds");
                    let _ = tx.send(Err(status)).await;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Streams the view's resources, then every change, until the client goes away.
async fn watch(
    view: Arc<GatewayView>,
    filter: Option<usize>,
    gateway: String,
    tx: mpsc::Sender<Result<WatchResourcesResponse, Status>>,
) {
    let mut revisions = view.subscribe();
    let (resources, mut seen) = collect(&view, filter);
    let first = WatchResourcesResponse {
        gateway: gateway.clone(),
        resources,
        removed: vec![],
    };
    if tx.send(Ok(first)).await.is_err() {
        return;
    }
    while revisions.changed().await.is_ok() {
        let (all, now) = collect(&view, filter);
        let resources: Vec<Resource> = all
            .into_iter()
            .zip(now.iter())
            .filter(|(_, (key, version))| seen.get(*key) != Some(*version))
            .map(|(r, _)| r)
            .collect();
        let removed: Vec<String> = seen
            .keys()
            .filter(|k| !now.contains_key(*k))
            .map(|(t, name)| format!("{}/{}", type_url::ALL[*t], name))
            .collect();
        seen = now;
        if resources.is_empty() && removed.is_empty() {
            continue;
        }
        let msg = WatchResourcesResponse {
            gateway: gateway.clone(),
            resources,
            removed,
        };
        if tx.send(Ok(msg)).await.is_err() {
            return;
        }
    }
}

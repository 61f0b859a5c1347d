//! The live state of each Gateway's workload (its Deployment and Service, as the operator made
//! them), for Gateway status: replicas, ready replicas and addresses.

use crate::model::goma;
use crate::model::{Kind, ObjectKey};
use crate::operator::gateway::GATEWAY_API_VERSION;
use crate::operator::metadata::managed_selector;
use crate::operator::{WorkloadStatus, workload_status};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use std::collections::BTreeMap;
use tokio::sync::watch;

/// The Gateway controlling an object, from its controller owner reference: a Goma Gateway or a
/// Gateway API Gateway.
fn owning_gateway(meta: &ObjectMeta) -> Option<ObjectKey> {
    let namespace = meta.namespace.as_deref()?;
    meta.owner_references
        .iter()
        .flatten()
        .filter(|o| o.controller == Some(true) && o.kind == "Gateway")
        .find_map(|o| {
            let kind = match o.api_version.as_str() {
                goma::API_VERSION => Kind::GomaGateway,
                GATEWAY_API_VERSION => Kind::Gateway,
                _ => return None,
            };
            Some(ObjectKey::new(kind, namespace, &o.name))
        })
}

/// Each Gateway's workload, from the Deployments and Services the operator created. A Gateway
/// with a Deployment and no Service yet reports its replicas and no address.
pub fn workloads<'a>(
    deployments: impl IntoIterator<Item = &'a Deployment>,
    services: impl IntoIterator<Item = &'a Service>,
) -> BTreeMap<ObjectKey, WorkloadStatus> {
    let services: BTreeMap<ObjectKey, &Service> = services
        .into_iter()
        .filter_map(|s| Some((owning_gateway(&s.metadata)?, s)))
        .collect();
    deployments
        .into_iter()
        .filter_map(|d| {
            let key = owning_gateway(&d.metadata)?;
            let status = match services.get(&key) {
                Some(service) => workload_status(d, service),
                None => workload_status(d, &Service::default()),
            };
            Some((key, status))
        })
        .collect()
}

/// Publishes [`workloads`] into `tx` whenever a managed Deployment or Service changes, until
/// the receivers are gone. `namespace`: one namespace only.
pub async fn run(
    client: kube::Client,
    namespace: Option<String>,
    tx: watch::Sender<BTreeMap<ObjectKey, WorkloadStatus>>,
) {
    let (deployments, services): (Api<Deployment>, Api<Service>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client, ns),
        ),
        None => (Api::all(client.clone()), Api::all(client)),
    };
    let config = watcher::Config::default().labels(&managed_selector());
    let (d_store, d_writer) = reflector::store();
    let (s_store, s_writer) = reflector::store();
    let d_events = reflector(d_writer, watcher(deployments, config.clone()))
        .default_backoff()
        .touched_objects()
        .map(|_| ());
    let s_events = reflector(s_writer, watcher(services, config))
        .default_backoff()
        .touched_objects()
        .map(|_| ());
    let mut events = std::pin::pin!(futures::stream::select(d_events, s_events));
    while events.next().await.is_some() {
        let current = workloads(
            d_store.state().iter().map(|d| &**d),
            s_store.state().iter().map(|s| &**s),
        );
        tx.send_if_modified(|published| {
            let changed = *published != current;
            if changed {
                *published = current;
            }
            changed
        });
        if tx.is_closed() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::DeploymentStatus;
    use k8s_openapi::api::core::v1::ServiceSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owned(name: &str, gateway: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("edge".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: goma::API_VERSION.into(),
                kind: "Gateway".into(),
                name: gateway.into(),
                uid: "u".into(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn workloads_join_deployment_and_service_by_owning_gateway() {
        let deployment = |gw: &str, ready| Deployment {
            metadata: owned(gw, gw),
            status: Some(DeploymentStatus {
                replicas: Some(3),
                ready_replicas: Some(ready),
                ..Default::default()
            }),
            ..Default::default()
        };
        let service = Service {
            metadata: owned("a", "a"),
            spec: Some(ServiceSpec {
                cluster_ips: Some(vec!["10.96.0.10".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let stray = Deployment {
            metadata: ObjectMeta {
                name: Some("stray".into()),
                namespace: Some("edge".into()),
                ..ObjectMeta::default()
            },
            ..Default::default()
        };
        let mut api_owned = deployment("c", 1);
        if let Some(owners) = api_owned.metadata.owner_references.as_mut() {
            owners[0].api_version = "gateway.networking.k8s.io/v1".into();
        }
        let got = workloads(
            [&deployment("a", 2), &deployment("b", 0), &stray, &api_owned],
            [&service],
        );
        let c = &got[&ObjectKey::new(Kind::Gateway, "edge", "c")];
        assert_eq!((c.replicas, c.ready_replicas), (3, 1));
        let a = &got[&ObjectKey::new(Kind::GomaGateway, "edge", "a")];
        assert_eq!((a.replicas, a.ready_replicas), (3, 2));
        assert_eq!(a.addresses, ["10.96.0.10"]);
        let b = &got[&ObjectKey::new(Kind::GomaGateway, "edge", "b")];
        assert_eq!((b.replicas, b.ready_replicas, b.addresses.len()), (3, 0, 0));
        assert_eq!(got.len(), 3, "objects no Gateway controls are ignored");
    }
}

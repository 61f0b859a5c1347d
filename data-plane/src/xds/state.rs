//! Applying one `DeltaDiscoveryResponse` to the held resources: per-resource validation, so valid
//! resources apply while invalid ones are rejected with reasons (gRFC A46 semantics).

use crate::config_dump::Versions;
use crate::metrics::Metrics;
use crate::resources::{Held, Resources};
use crate::snapshot::{Changed, Compiler, Snapshot};
use prost::Message;
use sluice_proto::config as pb;
use sluice_proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, ResourceError};
use sluice_proto::google::rpc::Status;
use sluice_proto::type_url;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

const TYPES: usize = type_url::ALL.len();
const SECRET: usize = 0;
const CLUSTER: usize = 1;
const LISTENER: usize = 2;
const ROUTE: usize = 3;

/// Outcome of one response, before the snapshot is swapped in.
#[derive(Debug, Default)]
pub struct Applied {
    /// What changed in the held resources (empty: no new snapshot is needed).
    pub changed: Changed,
    /// (resource name, reason) for every rejected resource.
    pub rejected: Vec<(String, String)>,
}

pub struct ConfigState {
    pub resources: Resources,
    /// name -> version of every accepted Secret and Listener (reported on reconnect); routes
    /// and clusters carry their version in their held entry.
    versions: [BTreeMap<String, String>; TYPES],
    compiler: Compiler,
}

impl Default for ConfigState {
    fn default() -> Self {
        Self::new()
    }
}

impl ConfigState {
    pub fn new() -> Self {
        Self::with_compiler(Compiler::new())
    }

    /// A state whose compiled routes record metrics in `metrics`.
    pub fn with_metrics(metrics: Arc<Metrics>) -> Self {
        Self::with_compiler(Compiler::with_metrics(metrics))
    }

    /// The GeoIP database geoBlock middlewares compile against.
    pub fn set_geoip_database(&mut self, path: Option<std::path::PathBuf>) {
        self.compiler.set_geoip_database(path);
    }

    fn with_compiler(compiler: Compiler) -> Self {
        Self {
            resources: Resources::default(),
            versions: Default::default(),
            compiler,
        }
    }

    /// Resources held of the type at `type_index` (metrics).
    pub fn held(&self, type_index: usize) -> usize {
        match type_index {
            CLUSTER => self.resources.clusters.len(),
            ROUTE => self.resources.routes.len(),
            t => self.versions.get(t).map_or(0, BTreeMap::len),
        }
    }

    /// (name, version) of every accepted resource of the type at `type_index`, in name order.
    pub fn versions(&self, type_index: usize) -> Box<dyn Iterator<Item = (&str, &str)> + '_> {
        match type_index {
            CLUSTER => Box::new(
                self.resources
                    .clusters
                    .iter()
                    .map(|h| (h.name(), h.version())),
            ),
            ROUTE => Box::new(
                self.resources
                    .routes
                    .iter()
                    .map(|h| (h.name(), h.version())),
            ),
            t => Box::new(
                self.versions
                    .get(t)
                    .into_iter()
                    .flatten()
                    .map(|(n, v)| (n.as_str(), v.as_str())),
            ),
        }
    }

    /// Validates and applies `resp` to the held resources. A response with duplicate names is
    /// rejected whole; otherwise each resource is accepted or rejected on its own.
    pub fn apply(&mut self, resp: &DeltaDiscoveryResponse) -> Applied {
        let mut out = Applied::default();
        let Some(t) = type_url::ALL.iter().position(|u| *u == resp.type_url) else {
            out.rejected.push((
                String::new(),
                format!("unknown type_url {:?}", resp.type_url),
            ));
            return out;
        };
        let mut names = HashSet::new();
        for r in &resp.resources {
            if !names.insert(r.name.as_str()) {
                out.rejected.push((
                    r.name.clone(),
                    "duplicate resource name in one response; response rejected".into(),
                ));
            }
        }
        if !out.rejected.is_empty() {
            return out;
        }
        for r in &resp.resources {
            match self.accept(t, &resp.type_url, r) {
                Ok(()) => {
                    if t == SECRET || t == LISTENER {
                        self.versions[t].insert(r.name.clone(), r.version.clone());
                    }
                    out.changed.record(t, &r.name);
                }
                Err(reason) => out.rejected.push((r.name.clone(), reason)),
            }
        }
        // Only `removed_resources` deletes; absent names stay.
        for name in &resp.removed_resources {
            let removed = match t {
                SECRET => self.resources.secrets.remove(name).is_some(),
                CLUSTER => self.resources.clusters.remove(name),
                LISTENER => self.resources.listeners.remove(name).is_some(),
                _ => self.resources.routes.remove(name),
            };
            self.versions[t].remove(name);
            if removed {
                out.changed.record(t, name);
            }
        }
        out
    }

    fn accept(
        &mut self,
        t: usize,
        type_url: &str,
        r: &sluice_proto::discovery::Resource,
    ) -> Result<(), String> {
        let any = r.resource.as_ref().ok_or("resource has no body")?;
        if any.type_url != type_url {
            return Err(format!(
                "resource type {:?} does not match the response type {:?}",
                any.type_url, type_url
            ));
        }
        fn decode<M: Message + Default>(bytes: &[u8]) -> Result<M, String> {
            M::decode(bytes).map_err(|e| format!("cannot decode: {e}"))
        }
        fn same_name(inner: &str, outer: &str) -> Result<(), String> {
            if inner == outer {
                Ok(())
            } else {
                Err(format!(
                    "name {inner:?} does not match the resource name {outer:?}"
                ))
            }
        }
        fn held<T>(r: &sluice_proto::discovery::Resource, value: &[u8]) -> Result<Held<T>, String> {
            Held::new(&r.name, &r.version, value)
                .ok_or_else(|| "name or version longer than 4 GiB".to_string())
        }
        let res = &mut self.resources;
        match t {
            SECRET => {
                let m: pb::Secret = decode(&any.value)?;
                same_name(&m.name, &r.name)?;
                self.compiler.validate_secret(&m)?;
                res.secrets.insert(r.name.clone(), Arc::new(m));
            }
            CLUSTER => {
                let m: pb::Cluster = decode(&any.value)?;
                same_name(&m.name, &r.name)?;
                self.compiler.validate_cluster(&m, res)?;
                res.clusters.put(held(r, &any.value)?);
            }
            LISTENER => {
                let m: pb::Listener = decode(&any.value)?;
                same_name(&m.name, &r.name)?;
                self.compiler.validate_listener(&m, res)?;
                res.listeners.insert(r.name.clone(), Arc::new(m));
            }
            ROUTE => {
                let m: pb::Route = decode(&any.value)?;
                same_name(&m.name, &r.name)?;
                self.compiler.validate_route(&m, res)?;
                res.routes.put(held(r, &any.value)?);
            }
            _ => return Err("unknown type".into()),
        }
        Ok(())
    }

    /// Drops listeners the runtime could not bind, so they are not reported as held.
    pub fn drop_listeners(&mut self, names: &[String]) -> Changed {
        for n in names {
            self.resources.listeners.remove(n);
            self.versions[LISTENER].remove(n);
        }
        Changed {
            listeners: true,
            ..Changed::default()
        }
    }

    /// The next snapshot, given what changed since the previous one.
    pub fn compile(&mut self, changed: &Changed) -> Arc<Snapshot> {
        self.compiler.compile_changes(&self.resources, changed)
    }
}

impl Versions for ConfigState {
    fn version(&self, type_url: &str, name: &str) -> Option<&str> {
        let t = type_url::ALL.iter().position(|u| *u == type_url)?;
        match t {
            CLUSTER => self.resources.clusters.held(name).map(Held::version),
            ROUTE => self.resources.routes.held(name).map(Held::version),
            _ => self.versions[t].get(name).map(String::as_str),
        }
    }
}

impl Changed {
    /// Adds what `other` changed (responses applied together under one compile).
    pub fn merge(&mut self, other: Changed) {
        self.listeners |= other.listeners;
        self.clusters.extend(other.clusters);
        self.routes.extend(other.routes);
        self.secrets.extend(other.secrets);
    }

    fn record(&mut self, type_index: usize, name: &str) {
        match type_index {
            CLUSTER => {
                self.clusters.insert(name.to_string());
            }
            LISTENER => self.listeners = true,
            ROUTE => {
                self.routes.insert(name.to_string());
            }
            SECRET => {
                self.secrets.insert(name.to_string());
            }
            _ => {}
        }
    }
}

/// The ACK (no rejections) or NACK (with per-resource reasons) for a response.
pub fn acknowledgement(
    resp: &DeltaDiscoveryResponse,
    rejected: &[(String, String)],
) -> DeltaDiscoveryRequest {
    let mut req = DeltaDiscoveryRequest {
        type_url: resp.type_url.clone(),
        response_nonce: resp.nonce.clone(),
        ..Default::default()
    };
    if !rejected.is_empty() {
        let summary: Vec<String> = rejected
            .iter()
            .map(|(n, reason)| format!("{n}: {reason}"))
            .collect();
        req.error_detail = Some(Status {
            code: tonic::Code::InvalidArgument as i32,
            message: format!(
                "{} of {} resources rejected: {}",
                rejected.len(),
                resp.resources.len(),
                summary.join("; ")
            ),
            details: vec![],
        });
        req.resource_errors = rejected
            .iter()
            .map(|(name, reason)| ResourceError {
                name: name.clone(),
                error_detail: Some(Status {
                    code: tonic::Code::InvalidArgument as i32,
                    message: reason.clone(),
                    details: vec![],
                }),
            })
            .collect();
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::test_certs::self_signed;
    use sluice_proto::discovery::Resource;

    fn response<M: Message>(type_url: &str, resources: &[(&str, M)]) -> DeltaDiscoveryResponse {
        DeltaDiscoveryResponse {
            type_url: type_url.into(),
            resources: resources
                .iter()
                .map(|(name, m)| Resource {
                    name: (*name).into(),
                    version: "1".into(),
                    resource: Some(prost_types::Any {
                        type_url: type_url.into(),
                        value: m.encode_to_vec(),
                    }),
                    ..Default::default()
                })
                .collect(),
            nonce: "n".into(),
            ..Default::default()
        }
    }

    #[test]
    fn secrets_are_recorded_and_checked_by_listeners() {
        let mut state = ConfigState::new();
        let cert = self_signed(&["a.test"]).secret("cert");
        let applied = state.apply(&response(type_url::SECRET, &[("cert", cert)]));
        assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
        assert!(applied.changed.secrets.contains("cert"));
        assert!(!applied.changed.is_empty());
        state.compile(&applied.changed);

        let https = |name: &str, secret: &str| pb::Listener {
            name: name.into(),
            port: 8443,
            protocol: pb::Protocol::Https as i32,
            tls: Some(pb::ListenerTls {
                certificate_secrets: vec![secret.into()],
                ..Default::default()
            }),
            ..Default::default()
        };
        let applied = state.apply(&response(
            type_url::LISTENER,
            &[("ok", https("ok", "cert")), ("bad", https("bad", "nope"))],
        ));
        assert_eq!(applied.rejected.len(), 1);
        assert_eq!(applied.rejected[0].0, "bad");
        assert!(
            applied.rejected[0]
                .1
                .starts_with("tls.certificate_secrets[0]:"),
            "{:?}",
            applied.rejected
        );
        let snapshot = state.compile(&applied.changed);
        assert!(
            snapshot
                .tls(8443)
                .is_some_and(|i| i.resolve(None).is_some())
        );
    }
}

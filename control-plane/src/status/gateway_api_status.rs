//! The `status` each Gateway API object should show, as JSON in the exact shape of the v1.6 CRDs,
//! from translation's report ([`ApiStatus`]), what the data planes acknowledged, the gateway's
//! workload and the status the object shows now. Pure: the writer supplies the inputs and the
//! clock.
//!
//! Two rules shape it. A condition keeps its `lastTransitionTime` while its status does not
//! change. And `status.parents` (routes) and `status.ancestors` (BackendTLSPolicy) are atomic
//! lists shared with other controllers: a server-side apply replaces them whole, so the entries
//! of other controllers are copied from the live object into every write ([`merge`]).

use super::compute::Pod;
use super::gateway_api::{ApiStatus, CONTROLLER_NAME, Condition, GroupKind, ParentRef};
use crate::model::{GATEWAY_API_GROUP, Kind, ObjectKey};
use crate::operator::WorkloadStatus;
use crate::status::ResourceRef;
use k8s_openapi::jiff::Timestamp;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The CRDs' limit on `message`.
const MAX_MESSAGE: usize = 32768;

/// What the status of a Gateway depends on beyond its report.
pub struct GatewayInputs<'a> {
    /// Connected data-plane pods by gateway id ("namespace/name").
    pub pods: &'a BTreeMap<String, Vec<Pod>>,
    /// Workloads by gateway key (`Kind::Gateway`), when the operator runs them.
    pub workloads: &'a BTreeMap<ObjectKey, WorkloadStatus>,
    /// True when a Goma Gateway of the same namespace/name holds the gateway id.
    pub goma_holds_id: bool,
}

/// The list a kind shares with other controllers, if any: `parents` or `ancestors`.
pub fn shared_list(kind: Kind) -> Option<&'static str> {
    match kind {
        Kind::HttpRoute | Kind::GrpcRoute | Kind::TlsRoute | Kind::TcpRoute | Kind::UdpRoute => {
            Some("parents")
        }
        Kind::BackendTlsPolicy => Some("ancestors"),
        _ => None,
    }
}

/// Our part of the object's status. For a GatewayClass and a Gateway that is the whole
/// `status`; for a route or policy it is `{"parents"|"ancestors": [our entries]}`.
/// `previous`: the status the object shows now (ours or whole), for the transition times.
pub fn ours(
    key: &ObjectKey,
    report: &ApiStatus,
    gateway: &GatewayInputs<'_>,
    previous: Option<&Value>,
    now: Timestamp,
) -> Value {
    let stamp = Stamp { now };
    match report {
        ApiStatus::GatewayClass {
            generation,
            conditions,
            supported_features,
        } => {
            let mut features: Vec<&String> = supported_features.iter().collect();
            features.sort();
            features.dedup();
            json!({
                "conditions": stamp.conditions(conditions, *generation, previous.and_then(|p| p.get("conditions"))),
                "supportedFeatures": features.iter().map(|f| json!({"name": f})).collect::<Vec<_>>(),
            })
        }
        ApiStatus::Gateway {
            generation,
            conditions,
            listeners,
            resources,
        } => {
            let delivery = gateway_delivery(key, resources, gateway);
            let conditions = gate_programmed(conditions, &delivery);
            let previous_listeners = previous.and_then(|p| p.get("listeners"));
            let listeners: Vec<Value> = listeners
                .iter()
                .map(|l| {
                    let before = previous_listeners
                        .and_then(Value::as_array)
                        .and_then(|ls| ls.iter().find(|p| p["name"] == l.name.as_str()))
                        .and_then(|p| p.get("conditions"));
                    json!({
                        "name": l.name,
                        "supportedKinds": l.supported_kinds.iter().map(group_kind).collect::<Vec<_>>(),
                        "attachedRoutes": l.attached_routes,
                        "conditions": stamp.conditions(&gate_programmed(&l.conditions, &delivery), *generation, before),
                    })
                })
                .collect();
            let addresses: Vec<Value> = gateway
                .workloads
                .get(&ObjectKey::new(Kind::Gateway, &key.namespace, &key.name))
                .map(|w| w.addresses.iter().map(|a| address(a)).collect())
                .unwrap_or_default();
            json!({
                "addresses": addresses,
                "conditions": stamp.conditions(&conditions, *generation, previous.and_then(|p| p.get("conditions"))),
                "listeners": listeners,
            })
        }
        ApiStatus::Route {
            generation,
            parents,
        }
        | ApiStatus::Policy {
            generation,
            ancestors: parents,
        } => {
            let (list, ref_field) = match report {
                ApiStatus::Route { .. } => ("parents", "parentRef"),
                _ => ("ancestors", "ancestorRef"),
            };
            let previous_entries = previous.and_then(|p| p.get(list)).and_then(Value::as_array);
            let entries: Vec<Value> = parents
                .iter()
                .map(|p| {
                    let reference = parent_ref(&p.parent_ref);
                    let before = previous_entries
                        .into_iter()
                        .flatten()
                        .find(|e| {
                            e["controllerName"] == CONTROLLER_NAME
                                && same_ref(&e[ref_field], &reference, &key.namespace)
                        })
                        .and_then(|e| e.get("conditions"));
                    json!({
                        ref_field: reference,
                        "controllerName": CONTROLLER_NAME,
                        "conditions": stamp.conditions(&p.conditions, *generation, before),
                    })
                })
                .collect();
            json!({ list: entries })
        }
    }
}

/// The whole `status` to apply: `ours`, plus, for kinds that share a list, the entries other
/// controllers have in `live` (the object's current status), kept in their order before ours.
pub fn merge(kind: Kind, ours: &Value, live: Option<&Value>) -> Value {
    let Some(list) = shared_list(kind) else {
        return ours.clone();
    };
    let mut entries: Vec<Value> = live
        .and_then(|s| s.get(list))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e["controllerName"] != CONTROLLER_NAME)
        .cloned()
        .collect();
    entries.extend(
        ours.get(list)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .cloned(),
    );
    json!({ list: entries })
}

/// Our part of a live status (what [`ours`] would have produced last time), for comparisons
/// and transition times.
pub fn ours_in(kind: Kind, live: &Value) -> Value {
    let Some(list) = shared_list(kind) else {
        return live.clone();
    };
    let entries: Vec<Value> = live
        .get(list)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e["controllerName"] == CONTROLLER_NAME)
        .cloned()
        .collect();
    json!({ list: entries })
}

/// Whether the gateway's data planes serve its listeners.
#[derive(Debug, PartialEq)]
enum Delivery {
    /// At least one connected data plane ACKed every listed resource at its version.
    Acked,
    Pending(String),
    Rejected(String),
    /// A Goma Gateway holds the id: nothing is served for this one.
    IdTaken(String),
}

fn gateway_delivery(
    key: &ObjectKey,
    resources: &[ResourceRef],
    inputs: &GatewayInputs<'_>,
) -> Delivery {
    let id = format!("{}/{}", key.namespace, key.name);
    if inputs.goma_holds_id {
        return Delivery::IdTaken(format!(
            "the Goma Gateway {id} (gateway.jkaninda.dev) holds the gateway id {id}; this Gateway \
             is not served"
        ));
    }
    let pods = inputs.pods.get(&id).map_or(&[][..], Vec::as_slice);
    if pods.is_empty() {
        return Delivery::Pending(format!("no data plane of gateway {id} is connected"));
    }
    let holds_all = |pod: &Pod| {
        resources.iter().all(|r| {
            pod.ledger
                .acked
                .get(&(r.type_index, r.name.clone()))
                .is_some_and(|v| *v == r.version)
        })
    };
    if pods.iter().any(holds_all) {
        return Delivery::Acked;
    }
    for pod in pods {
        for r in resources {
            if let Some(reason) = pod.ledger.nacked.get(&(r.type_index, r.name.clone())) {
                return Delivery::Rejected(format!(
                    "data plane {} of gateway {id} rejected {}: {reason}",
                    pod.node_id, r.name
                ));
            }
        }
    }
    Delivery::Pending(format!(
        "none of the {} connected data planes of gateway {id} has acknowledged its listeners yet",
        pods.len()
    ))
}

/// Translation's `Programmed=True` holds only once delivered; other verdicts pass through.
fn gate_programmed(conditions: &[Condition], delivery: &Delivery) -> Vec<Condition> {
    conditions
        .iter()
        .map(|c| {
            if c.type_ != "Programmed" || !c.status {
                return c.clone();
            }
            match delivery {
                Delivery::Acked => c.clone(),
                Delivery::Pending(message) => {
                    Condition::new("Programmed", false, "Pending", message.clone())
                }
                Delivery::Rejected(message) | Delivery::IdTaken(message) => {
                    Condition::new("Programmed", false, "Invalid", message.clone())
                }
            }
        })
        .collect()
}

struct Stamp {
    now: Timestamp,
}

impl Stamp {
    /// Conditions as the CRDs spell them; a condition whose status is unchanged from
    /// `previous` keeps its transition time.
    fn conditions(
        &self,
        conditions: &[Condition],
        generation: Option<i64>,
        previous: Option<&Value>,
    ) -> Vec<Value> {
        conditions
            .iter()
            .map(|c| {
                let status = if c.status { "True" } else { "False" };
                let kept = previous
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|p| p["type"] == c.type_ && p["status"] == status)
                    .and_then(|p| p.get("lastTransitionTime"))
                    .filter(|t| t.is_string())
                    .cloned();
                let mut out = Map::new();
                out.insert("type".into(), c.type_.into());
                out.insert("status".into(), status.into());
                out.insert("reason".into(), c.reason.into());
                out.insert("message".into(), truncate(&c.message).into());
                if let Some(g) = generation {
                    out.insert("observedGeneration".into(), g.into());
                }
                out.insert(
                    "lastTransitionTime".into(),
                    kept.unwrap_or_else(|| rfc3339(self.now).into()),
                );
                Value::Object(out)
            })
            .collect()
    }
}

/// Seconds precision, as `metav1.Time` serialises.
fn rfc3339(t: Timestamp) -> String {
    let seconds = Timestamp::from_second(t.as_second()).unwrap_or(t);
    seconds.to_string()
}

fn truncate(message: &str) -> &str {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

fn group_kind(gk: &GroupKind) -> Value {
    json!({"group": gk.group, "kind": gk.kind})
}

/// A parent reference with the fields the route set (the API server defaults the others).
fn parent_ref(p: &ParentRef) -> Value {
    let mut out = Map::new();
    if let Some(group) = &p.group {
        out.insert("group".into(), group.clone().into());
    }
    if let Some(kind) = &p.kind {
        out.insert("kind".into(), kind.clone().into());
    }
    if let Some(namespace) = &p.namespace {
        out.insert("namespace".into(), namespace.clone().into());
    }
    out.insert("name".into(), p.name.clone().into());
    if let Some(section) = &p.section_name {
        out.insert("sectionName".into(), section.clone().into());
    }
    if let Some(port) = p.port {
        out.insert("port".into(), port.into());
    }
    Value::Object(out)
}

/// Two references to the same parent, with the API server's defaults applied to both (group
/// `gateway.networking.k8s.io`, kind `Gateway`, the referrer's namespace).
fn same_ref(a: &Value, b: &Value, namespace: &str) -> bool {
    let field = |v: &Value, name: &str, default: &str| -> String {
        v.get(name)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let normal = |v: &Value| {
        (
            field(v, "group", GATEWAY_API_GROUP),
            field(v, "kind", "Gateway"),
            field(v, "namespace", namespace),
            field(v, "name", ""),
            field(v, "sectionName", ""),
            v.get("port").and_then(Value::as_i64),
        )
    };
    normal(a) == normal(b)
}

fn address(value: &str) -> Value {
    let type_ = if value.parse::<IpAddr>().is_ok() {
        "IPAddress"
    } else {
        "Hostname"
    };
    json!({"type": type_, "value": value})
}

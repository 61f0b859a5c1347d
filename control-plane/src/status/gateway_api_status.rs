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
    /// Why the operator could not apply the gateway's workload, if it tried and failed.
    pub workload_error: Option<&'a str>,
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

/// The CRDs' `maxItems` on a shared list: 32 route parents, 16 policy ancestors.
fn max_entries(kind: Kind) -> usize {
    match kind {
        Kind::BackendTlsPolicy => 16,
        _ => 32,
    }
}

/// The whole `status` to apply: `ours`, plus, for kinds that share a list, the entries other
/// controllers have in `live` (the object's current status), kept in their order before ours.
/// The list is cut at the CRD's limit (the API server would refuse the whole write): entries
/// past it are ours, which is all we may drop.
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
    entries.truncate(max_entries(kind));
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

/// Whether `ours` (as [`ours_in`] or [`ours`] give it) holds any entry in the kind's shared list.
pub fn has_entries(kind: Kind, ours: &Value) -> bool {
    shared_list(kind)
        .and_then(|list| ours.get(list))
        .and_then(Value::as_array)
        .is_some_and(|entries| !entries.is_empty())
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
        // Without pods, an operator that failed is the reason; its error names the field.
        return match inputs.workload_error {
            Some(error) => Delivery::Rejected(format!(
                "the data-plane workload of gateway {id} could not be applied: {error}"
            )),
            None => Delivery::Pending(format!("no data plane of gateway {id} is connected")),
        };
    }
    let holds_all = |pod: &Pod| {
        resources.iter().all(|r| {
            pod.ledger
                .acked_version(r.type_index, &r.name)
                .is_some_and(|v| v == r.version)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::gateway_api::{ListenerReport, ParentReport};
    use crate::xds::stream::ClientLedger;

    const LISTENER_TYPE: usize = 2;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).expect("a time")
    }

    fn later() -> Timestamp {
        Timestamp::from_second(1_800_000_100).expect("a time")
    }

    fn gateway_key() -> ObjectKey {
        ObjectKey::new(Kind::Gateway, "edge", "gw")
    }

    fn listeners_resource() -> ResourceRef {
        ResourceRef {
            type_index: LISTENER_TYPE,
            name: "http".into(),
            version: "v7".into(),
        }
    }

    fn gateway_report(programmed: bool) -> ApiStatus {
        ApiStatus::Gateway {
            generation: Some(3),
            conditions: vec![
                Condition::new("Accepted", true, "Accepted", ""),
                Condition::new(
                    "Programmed",
                    programmed,
                    if programmed { "Programmed" } else { "Invalid" },
                    if programmed { "" } else { "no usable listener" },
                ),
            ],
            listeners: vec![ListenerReport {
                name: "http".into(),
                supported_kinds: vec![GroupKind {
                    group: "gateway.networking.k8s.io".into(),
                    kind: "HTTPRoute".into(),
                }],
                attached_routes: 2,
                conditions: vec![
                    Condition::new("Accepted", true, "Accepted", ""),
                    Condition::new("Programmed", true, "Programmed", ""),
                ],
            }],
            resources: vec![listeners_resource()],
        }
    }

    fn pod(acked: Option<&str>, nacked: Option<&str>) -> Pod {
        let mut ledger = ClientLedger::default();
        let id = (LISTENER_TYPE, "http".to_owned());
        if let Some(v) = acked {
            ledger.ack(crate::resource::Encoded::reported(
                sluice_proto::type_url::ALL[id.0],
                id.1.clone(),
                v.into(),
            ));
        }
        if let Some(why) = nacked {
            ledger.nacked.insert(id, why.into());
        }
        Pod {
            node_id: "pod-1".into(),
            ledger,
        }
    }

    fn gateway_status(
        report: &ApiStatus,
        pods: Vec<Pod>,
        workloads: &BTreeMap<ObjectKey, WorkloadStatus>,
        goma_holds_id: bool,
        previous: Option<&Value>,
        at: Timestamp,
    ) -> Value {
        let pods = BTreeMap::from([("edge/gw".to_owned(), pods)]);
        let inputs = GatewayInputs {
            pods: &pods,
            workloads,
            goma_holds_id,
            workload_error: None,
        };
        ours(&gateway_key(), report, &inputs, previous, at)
    }

    fn condition<'a>(conditions: &'a Value, type_: &str) -> &'a Value {
        conditions
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_))
            .unwrap_or_else(|| panic!("no {type_} condition in {conditions}"))
    }

    #[test]
    fn gateway_status_has_the_crd_shape() {
        let workloads = BTreeMap::from([(
            gateway_key(),
            WorkloadStatus {
                replicas: 1,
                ready_replicas: 1,
                addresses: vec!["203.0.113.7".into(), "lb.example.com".into()],
            },
        )]);
        let status = gateway_status(
            &gateway_report(true),
            vec![pod(Some("v7"), None)],
            &workloads,
            false,
            None,
            now(),
        );
        assert_eq!(
            status,
            json!({
                "addresses": [
                    {"type": "IPAddress", "value": "203.0.113.7"},
                    {"type": "Hostname", "value": "lb.example.com"}
                ],
                "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                     "observedGeneration": 3, "lastTransitionTime": "2027-01-15T08:00:00Z"},
                    {"type": "Programmed", "status": "True", "reason": "Programmed", "message": "",
                     "observedGeneration": 3, "lastTransitionTime": "2027-01-15T08:00:00Z"}
                ],
                "listeners": [{
                    "name": "http",
                    "supportedKinds": [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"}],
                    "attachedRoutes": 2,
                    "conditions": [
                        {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                         "observedGeneration": 3, "lastTransitionTime": "2027-01-15T08:00:00Z"},
                        {"type": "Programmed", "status": "True", "reason": "Programmed", "message": "",
                         "observedGeneration": 3, "lastTransitionTime": "2027-01-15T08:00:00Z"}
                    ]
                }]
            })
        );
    }

    #[test]
    fn programmed_waits_for_one_data_plane_to_ack_the_listed_version() {
        let none = BTreeMap::new();
        let report = gateway_report(true);
        let reason_and_message = |pods| {
            let s = gateway_status(&report, pods, &none, false, None, now());
            let gw = condition(&s["conditions"], "Programmed").clone();
            let listener = condition(&s["listeners"][0]["conditions"], "Programmed").clone();
            assert_eq!(
                gw["status"], listener["status"],
                "listeners follow the gateway"
            );
            (
                gw["status"].clone(),
                gw["reason"].clone(),
                gw["message"].clone(),
            )
        };
        assert_eq!(
            reason_and_message(vec![]),
            (
                json!("False"),
                json!("Pending"),
                json!("no data plane of gateway edge/gw is connected")
            )
        );
        let (status, reason, _) = reason_and_message(vec![pod(Some("v6"), None)]);
        assert_eq!((status, reason), (json!("False"), json!("Pending")));
        let (status, reason, message) = reason_and_message(vec![pod(None, Some("bad cert"))]);
        assert_eq!((status, reason), (json!("False"), json!("Invalid")));
        assert_eq!(
            message,
            "data plane pod-1 of gateway edge/gw rejected http: bad cert"
        );
        // One pod holding the version is enough, whatever the others do.
        let (status, reason, _) =
            reason_and_message(vec![pod(None, Some("old")), pod(Some("v7"), None)]);
        assert_eq!((status, reason), (json!("True"), json!("Programmed")));
    }

    #[test]
    fn an_invalid_verdict_passes_through_and_a_goma_gateway_takes_the_id() {
        let none = BTreeMap::new();
        let s = gateway_status(
            &gateway_report(false),
            vec![pod(Some("v7"), None)],
            &none,
            false,
            None,
            now(),
        );
        let c = condition(&s["conditions"], "Programmed");
        assert_eq!(
            (&c["status"], &c["reason"]),
            (&json!("False"), &json!("Invalid"))
        );
        assert_eq!(c["message"], "no usable listener");

        let s = gateway_status(
            &gateway_report(true),
            vec![pod(Some("v7"), None)],
            &none,
            true,
            None,
            now(),
        );
        let c = condition(&s["conditions"], "Programmed");
        assert_eq!(
            (&c["status"], &c["reason"]),
            (&json!("False"), &json!("Invalid"))
        );
        assert!(
            c["message"]
                .as_str()
                .is_some_and(|m| m.contains("Goma Gateway edge/gw")),
            "{c}"
        );
        assert_eq!(s["addresses"], json!([]));
    }

    #[test]
    fn a_workload_the_operator_could_not_apply_is_named_until_a_pod_serves() {
        let (pods, workloads) = (BTreeMap::new(), BTreeMap::new());
        let inputs = GatewayInputs {
            pods: &pods,
            workloads: &workloads,
            goma_holds_id: false,
            workload_error: Some("spec.listeners[0].port: 9901 is the data plane's admin port"),
        };
        let s = ours(&gateway_key(), &gateway_report(true), &inputs, None, now());
        let c = condition(&s["conditions"], "Programmed");
        assert_eq!(
            (&c["status"], &c["reason"]),
            (&json!("False"), &json!("Invalid"))
        );
        assert_eq!(
            c["message"],
            "the data-plane workload of gateway edge/gw could not be applied: \
             spec.listeners[0].port: 9901 is the data plane's admin port"
        );
    }

    #[test]
    fn transition_times_change_only_with_the_status() {
        let none = BTreeMap::new();
        let report = gateway_report(true);
        let first = gateway_status(&report, vec![], &none, false, None, now());
        // Same statuses later: every time kept, so the status compares equal.
        let again = gateway_status(&report, vec![], &none, false, Some(&first), later());
        assert_eq!(again, first);
        // Programmed flips: its time (gateway and listener) moves, Accepted keeps its own.
        let acked = gateway_status(
            &report,
            vec![pod(Some("v7"), None)],
            &none,
            false,
            Some(&first),
            later(),
        );
        let time =
            |s: &Value, t: &str| condition(&s["conditions"], t)["lastTransitionTime"].clone();
        assert_eq!(time(&acked, "Accepted"), time(&first, "Accepted"));
        assert_eq!(time(&acked, "Programmed"), json!("2027-01-15T08:01:40Z"));
        assert_eq!(
            condition(&acked["listeners"][0]["conditions"], "Programmed")["lastTransitionTime"],
            json!("2027-01-15T08:01:40Z")
        );
        assert_eq!(
            condition(&acked["listeners"][0]["conditions"], "Accepted")["lastTransitionTime"],
            json!("2027-01-15T08:00:00Z")
        );
    }

    fn route_report(accepted: bool) -> ApiStatus {
        ApiStatus::Route {
            generation: Some(5),
            parents: vec![ParentReport {
                parent_ref: ParentRef {
                    group: Some("gateway.networking.k8s.io".into()),
                    kind: Some("Gateway".into()),
                    namespace: None,
                    name: "gw".into(),
                    section_name: Some("http".into()),
                    port: None,
                },
                conditions: vec![
                    Condition::new(
                        "Accepted",
                        accepted,
                        if accepted {
                            "Accepted"
                        } else {
                            "NotAllowedByListeners"
                        },
                        "",
                    ),
                    Condition::new("ResolvedRefs", true, "ResolvedRefs", ""),
                ],
            }],
        }
    }

    fn route_status(report: &ApiStatus, previous: Option<&Value>, at: Timestamp) -> Value {
        let pods = BTreeMap::new();
        let workloads = BTreeMap::new();
        let inputs = GatewayInputs {
            pods: &pods,
            workloads: &workloads,
            goma_holds_id: false,
            workload_error: None,
        };
        let key = ObjectKey::new(Kind::HttpRoute, "edge", "api");
        ours(&key, report, &inputs, previous, at)
    }

    fn other_controllers_entry() -> Value {
        json!({
            "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "theirs"},
            "controllerName": "example.com/other",
            "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                            "lastTransitionTime": "2020-01-01T00:00:00Z"}]
        })
    }

    #[test]
    fn route_parents_echo_the_ref_and_name_our_controller() {
        let status = route_status(&route_report(true), None, now());
        assert_eq!(
            status,
            json!({"parents": [{
                "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "gw", "sectionName": "http"},
                "controllerName": "sluice.dev/gateway-controller",
                "conditions": [
                    {"type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
                     "observedGeneration": 5, "lastTransitionTime": "2027-01-15T08:00:00Z"},
                    {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs", "message": "",
                     "observedGeneration": 5, "lastTransitionTime": "2027-01-15T08:00:00Z"}
                ]
            }]})
        );
    }

    #[test]
    fn other_controllers_parents_are_kept_and_ours_replaced() {
        let ours_before = route_status(&route_report(true), None, now());
        let mut live = ours_before.clone();
        let mut parents = vec![other_controllers_entry()];
        parents.extend(
            ours_before["parents"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        live["parents"] = Value::Array(parents);
        // The API server defaulted the namespace of our ref: still the same parent.
        live["parents"][1]["parentRef"]["namespace"] = json!("edge");

        assert_eq!(
            ours_in(Kind::HttpRoute, &live)["parents"]
                .as_array()
                .map(Vec::len),
            Some(1)
        );
        let ours_now = route_status(
            &route_report(false),
            Some(&ours_in(Kind::HttpRoute, &live)),
            later(),
        );
        let merged = merge(Kind::HttpRoute, &ours_now, Some(&live));
        let parents = merged["parents"].as_array().cloned().unwrap_or_default();
        assert_eq!(parents.len(), 2);
        assert_eq!(parents[0], other_controllers_entry());
        let accepted = condition(&parents[1]["conditions"], "Accepted");
        assert_eq!(accepted["reason"], "NotAllowedByListeners");
        assert_eq!(accepted["lastTransitionTime"], "2027-01-15T08:01:40Z");
        let resolved = condition(&parents[1]["conditions"], "ResolvedRefs");
        assert_eq!(resolved["lastTransitionTime"], "2027-01-15T08:00:00Z");

        // A route no longer ours on any parent: the others' entries stay, ours go.
        let empty = route_status(
            &ApiStatus::Route {
                generation: Some(6),
                parents: vec![],
            },
            None,
            later(),
        );
        assert_eq!(
            merge(Kind::HttpRoute, &empty, Some(&live)),
            json!({"parents": [other_controllers_entry()]})
        );
    }

    #[test]
    fn policy_ancestors_and_class_features() {
        let pods = BTreeMap::new();
        let workloads = BTreeMap::new();
        let inputs = GatewayInputs {
            pods: &pods,
            workloads: &workloads,
            goma_holds_id: false,
            workload_error: None,
        };
        let policy = ApiStatus::Policy {
            generation: Some(1),
            ancestors: vec![ParentReport {
                parent_ref: ParentRef {
                    name: "gw".into(),
                    ..ParentRef::default()
                },
                conditions: vec![Condition::new("Accepted", true, "Accepted", "")],
            }],
        };
        let key = ObjectKey::new(Kind::BackendTlsPolicy, "edge", "p");
        let s = ours(&key, &policy, &inputs, None, now());
        assert_eq!(s["ancestors"][0]["ancestorRef"], json!({"name": "gw"}));
        assert_eq!(s["ancestors"][0]["controllerName"], CONTROLLER_NAME);
        let live = json!({"ancestors": [
            {"ancestorRef": {"name": "x"}, "controllerName": "example.com/other", "conditions": []}
        ]});
        assert_eq!(
            merge(Kind::BackendTlsPolicy, &s, Some(&live))["ancestors"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );

        let class = ApiStatus::GatewayClass {
            generation: Some(2),
            conditions: vec![Condition::new("Accepted", true, "Accepted", "")],
            supported_features: vec![
                "HTTPRouteQueryParamMatching".into(),
                "Gateway".into(),
                "Gateway".into(),
            ],
        };
        let key = ObjectKey::new(Kind::GatewayClass, "", "sluice");
        let s = ours(&key, &class, &inputs, None, now());
        assert_eq!(
            s["supportedFeatures"],
            json!([{"name": "Gateway"}, {"name": "HTTPRouteQueryParamMatching"}])
        );
        assert_eq!(s["conditions"][0]["observedGeneration"], 2);
        // A GatewayClass and a Gateway share nothing with other controllers.
        assert_eq!(merge(Kind::GatewayClass, &s, Some(&json!({"x": 1}))), s);
    }

    #[test]
    fn a_shared_list_is_cut_at_the_crd_limit_dropping_ours_only() {
        let entry = |controller: &str, i: usize| json!({"parentRef": {"name": format!("gw-{i}")}, "controllerName": controller, "conditions": []});
        let theirs: Vec<Value> = (0..30).map(|i| entry("example.com/other", i)).collect();
        let ours_list: Vec<Value> = (0..5).map(|i| entry(CONTROLLER_NAME, i)).collect();
        let merged = merge(
            Kind::HttpRoute,
            &json!({"parents": ours_list}),
            Some(&json!({"parents": theirs})),
        );
        let parents = merged["parents"].as_array().cloned().unwrap_or_default();
        assert_eq!(parents.len(), 32);
        assert_eq!(parents[..30], theirs[..]);
        assert_eq!(parents[30..], ours_list[..2]);
        let ancestors: Vec<Value> = (0..20)
            .map(|i| {
                json!({"ancestorRef": {"name": format!("gw-{i}")}, "controllerName": CONTROLLER_NAME, "conditions": []})
            })
            .collect();
        let merged = merge(
            Kind::BackendTlsPolicy,
            &json!({"ancestors": ancestors}),
            None,
        );
        assert_eq!(merged["ancestors"].as_array().map(Vec::len), Some(16));
    }

    #[test]
    fn long_messages_are_cut_at_the_crd_limit() {
        let message = "é".repeat(MAX_MESSAGE);
        let cut = truncate(&message);
        assert!(cut.len() <= MAX_MESSAGE && cut.len() > MAX_MESSAGE - 2);
    }
}

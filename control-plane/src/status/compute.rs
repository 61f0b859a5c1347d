//! The status each Goma object should show, from translation's verdicts, the provider's
//! rejections and what every connected data plane acknowledged. Pure: the writer supplies the
//! inputs and the clock.

use super::board::{Record, ResourceRef, Verdict};
use crate::model::goma::status::{
    CONDITION_AVAILABLE, CONDITION_MIDDLEWARES_RESOLVED, CONDITION_PROGRAMMED, CONDITION_VALID,
};
use crate::model::goma::{GatewayStatus, MiddlewareStatus, RouteStatus};
use crate::model::{Kind, ObjectKey};
use crate::operator::{Report, WorkloadStatus as Workload};
use crate::provider::object_errors::ObjectError;
use crate::xds::stream::ClientLedger;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use sluice_proto::type_url;
use std::collections::{BTreeMap, BTreeSet};

/// One connected data-plane pod and what it holds.
#[derive(Clone, Debug, Default)]
pub struct Pod {
    pub node_id: String,
    pub ledger: ClientLedger,
}

/// Everything status is computed from.
pub struct Inputs<'a> {
    pub records: &'a BTreeMap<ObjectKey, Record>,
    pub errors: &'a BTreeMap<ObjectKey, ObjectError>,
    /// Connected pods by gateway id ("namespace/name").
    pub pods: &'a BTreeMap<String, Vec<Pod>>,
    /// Workloads by gateway key, when an operator runs them.
    pub workloads: &'a BTreeMap<ObjectKey, Workload>,
    /// The operator's last reconcile of each gateway.
    pub reconciles: &'a BTreeMap<ObjectKey, Report>,
}

/// The status of one object.
#[derive(Clone, Debug, PartialEq)]
pub enum Status {
    Route(RouteStatus),
    Middleware(MiddlewareStatus),
    Gateway(GatewayStatus),
}

impl Status {
    pub fn conditions(&self) -> &[Condition] {
        match self {
            Status::Route(s) => &s.conditions,
            Status::Middleware(s) => &s.conditions,
            Status::Gateway(s) => &s.conditions,
        }
    }

    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        match self {
            Status::Route(s) => &mut s.conditions,
            Status::Middleware(s) => &mut s.conditions,
            Status::Gateway(s) => &mut s.conditions,
        }
    }

    /// As the `status` field of a server-side apply patch.
    pub fn to_json(&self) -> serde_json::Value {
        let value = match self {
            Status::Route(s) => serde_json::to_value(s),
            Status::Middleware(s) => serde_json::to_value(s),
            Status::Gateway(s) => serde_json::to_value(s),
        };
        value.unwrap_or_default()
    }
}

/// The status every Goma object known to the board or rejected by the provider should show.
/// Conditions carry a placeholder transition time: see [`carry_transition_times`].
pub fn desired(inputs: &Inputs<'_>) -> BTreeMap<ObjectKey, Status> {
    let keys: BTreeSet<&ObjectKey> = inputs.records.keys().chain(inputs.errors.keys()).collect();
    keys.into_iter()
        .filter_map(|key| {
            let status = match key.kind {
                Kind::GomaRoute => Status::Route(route_status(key, inputs)),
                Kind::GomaMiddleware => Status::Middleware(middleware_status(key, inputs)),
                Kind::GomaGateway => Status::Gateway(gateway_status(key, inputs)),
                _ => return None,
            };
            Some((key.clone(), status))
        })
        .collect()
}

/// Keeps each condition's `lastTransitionTime` from `previous` when its status did not change
/// (so an unchanged status compares equal and is not rewritten), else stamps `now`.
pub fn carry_transition_times(status: &mut Status, previous: Option<&Status>, now: Timestamp) {
    for c in status.conditions_mut() {
        let kept = previous
            .into_iter()
            .flat_map(|p| p.conditions())
            .find(|p| p.type_ == c.type_ && p.status == c.status)
            .map(|p| p.last_transition_time.clone());
        c.last_transition_time = kept.unwrap_or(Time(now));
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(Timestamp::UNIX_EPOCH),
    }
}

/// Whether the data planes of `gateways` hold `resources`.
#[derive(Debug, PartialEq)]
enum Delivery {
    Acked,
    Pending { acked: usize, pods: usize },
    Rejected(String),
    NoDataPlane(String),
    GatewayNotFound(String),
}

fn delivery(resources: &[ResourceRef], gateways: &[String], inputs: &Inputs<'_>) -> Delivery {
    for gw in gateways {
        for pod in inputs.pods.get(gw).into_iter().flatten() {
            for r in resources {
                if let Some(reason) = pod.ledger.nacked.get(&(r.type_index, r.name.clone())) {
                    let kind = type_url::ALL
                        .get(r.type_index)
                        .and_then(|t| t.rsplit('.').next())
                        .unwrap_or("resource");
                    return Delivery::Rejected(format!(
                        "data plane {} of gateway {gw} rejected {kind} {}: {reason}",
                        pod.node_id, r.name
                    ));
                }
            }
        }
    }
    for gw in gateways {
        if !gateway_exists(gw, inputs) {
            return Delivery::GatewayNotFound(gw.clone());
        }
    }
    let (mut pods, mut acked) = (0, 0);
    for gw in gateways {
        let connected = inputs.pods.get(gw).map_or(&[][..], Vec::as_slice);
        if connected.is_empty() {
            return Delivery::NoDataPlane(gw.clone());
        }
        for pod in connected {
            pods += 1;
            let holds_all = resources.iter().all(|r| {
                pod.ledger
                    .acked_version(r.type_index, &r.name)
                    .is_some_and(|v| v == r.version)
            });
            acked += usize::from(holds_all);
        }
    }
    if acked == pods {
        Delivery::Acked
    } else {
        Delivery::Pending { acked, pods }
    }
}

fn gateway_exists(id: &str, inputs: &Inputs<'_>) -> bool {
    let Some((namespace, name)) = id.split_once('/') else {
        return false;
    };
    let key = ObjectKey::new(Kind::GomaGateway, namespace, name);
    inputs
        .records
        .get(&key)
        .is_some_and(|r| matches!(r.verdict, Verdict::Served(_)))
}

fn programmed(
    resources: &[ResourceRef],
    gateways: &[String],
    generation: Option<i64>,
    what: &str,
    inputs: &Inputs<'_>,
) -> Condition {
    let c = |ok, reason, message: String| {
        condition(CONDITION_PROGRAMMED, ok, reason, message, generation)
    };
    if gateways.is_empty() {
        return c(false, "NoGateway", format!("{what} names no gateway"));
    }
    match delivery(resources, gateways, inputs) {
        Delivery::Acked => c(
            true,
            "Programmed",
            format!("every data plane of {} serves {what}", gateways.join(", ")),
        ),
        Delivery::Pending { acked, pods } => c(
            false,
            "Pending",
            format!("{acked} of {pods} data planes acknowledged {what}"),
        ),
        Delivery::Rejected(message) => c(false, "Rejected", message),
        Delivery::NoDataPlane(gw) => c(
            false,
            "NoDataPlane",
            format!("no data plane of gateway {gw} is connected"),
        ),
        Delivery::GatewayNotFound(gw) => c(
            false,
            "GatewayNotFound",
            format!("gateway {gw} does not exist or is invalid"),
        ),
    }
}

/// The generation a status describes: the rejected one when the provider refused the current
/// version, else the one translation last judged.
fn observed_generation(key: &ObjectKey, inputs: &Inputs<'_>) -> Option<i64> {
    match inputs.errors.get(key) {
        Some(e) => e.generation,
        None => inputs.records.get(key).and_then(|r| r.generation),
    }
}

fn route_status(key: &ObjectKey, inputs: &Inputs<'_>) -> RouteStatus {
    let record = inputs.records.get(key);
    let rejected = inputs.errors.get(key);
    let generation = observed_generation(key, inputs);

    let valid = match (rejected, record.map(|r| &r.verdict)) {
        (Some(e), _) => condition(CONDITION_VALID, false, "Invalid", &e.message, generation),
        (None, Some(Verdict::Invalid { message, .. })) => {
            condition(CONDITION_VALID, false, "Invalid", message, generation)
        }
        (None, Some(Verdict::Withdrawn(message))) => {
            condition(CONDITION_VALID, false, "Unenforceable", message, generation)
        }
        _ => condition(CONDITION_VALID, true, "Valid", "", generation),
    };

    let middlewares = record.map_or(&[][..], |r| r.middlewares.as_slice());
    let unresolved: Vec<String> = middlewares
        .iter()
        .filter_map(|m| {
            let mk = ObjectKey::new(Kind::GomaMiddleware, &key.namespace, m);
            if inputs.errors.contains_key(&mk) {
                Some(format!("{m} (invalid)"))
            } else if !inputs.records.contains_key(&mk) {
                Some(format!("{m} (not found)"))
            } else {
                None
            }
        })
        .collect();
    let resolved = if unresolved.is_empty() {
        condition(
            CONDITION_MIDDLEWARES_RESOLVED,
            true,
            "Resolved",
            "",
            generation,
        )
    } else {
        condition(
            CONDITION_MIDDLEWARES_RESOLVED,
            false,
            "MiddlewareNotResolved",
            format!("middlewares {}", unresolved.join(", ")),
            generation,
        )
    };

    let gateways = record.map_or(&[][..], |r| r.gateways.as_slice());
    let what = format!("route {}", key.name);
    let programmed = match record.map(|r| &r.verdict) {
        Some(Verdict::Served(resources)) if rejected.is_none() => {
            programmed(resources, gateways, generation, &what, inputs)
        }
        // The last valid generation keeps serving; say so rather than hide it.
        Some(
            Verdict::Served(resources)
            | Verdict::Invalid {
                last_good: resources,
                ..
            },
        ) if !resources.is_empty() => {
            let mut c = programmed(resources, gateways, generation, &what, inputs);
            c.status = "False".into();
            c.reason = "ServingLastValid".into();
            c.message = format!(
                "the current generation is invalid; the last valid one is served ({})",
                c.message
            );
            c
        }
        Some(Verdict::Disabled) => condition(
            CONDITION_PROGRAMMED,
            false,
            "Disabled",
            "the route is disabled (spec.enabled: false)",
            generation,
        ),
        Some(Verdict::Withdrawn(_)) => condition(
            CONDITION_PROGRAMMED,
            false,
            "Withdrawn",
            "not served: it asks for protection this gateway cannot enforce",
            generation,
        ),
        _ => condition(
            CONDITION_PROGRAMMED,
            false,
            "Invalid",
            "no valid generation to serve",
            generation,
        ),
    };

    let ready = [&valid, &resolved].iter().all(|c| c.status == "True")
        && !gateways.is_empty()
        && gateways.iter().all(|g| gateway_exists(g, inputs))
        && !matches!(record.map(|r| &r.verdict), Some(Verdict::Disabled) | None);
    RouteStatus {
        ready,
        synced: programmed.status == "True",
        observed_generation: generation,
        conditions: vec![valid, resolved, programmed],
    }
}

fn middleware_status(key: &ObjectKey, inputs: &Inputs<'_>) -> MiddlewareStatus {
    let rejected = inputs.errors.get(key);
    let generation = observed_generation(key, inputs);
    let valid = match rejected {
        Some(e) => condition(CONDITION_VALID, false, "Invalid", &e.message, generation),
        None => condition(CONDITION_VALID, true, "Valid", "", generation),
    };
    let referenced_by = inputs
        .records
        .iter()
        .filter(|(k, r)| {
            k.kind == Kind::GomaRoute
                && k.namespace == key.namespace
                && r.middlewares.contains(&key.name)
        })
        .map(|(k, _)| k.name.clone())
        .collect();
    MiddlewareStatus {
        ready: rejected.is_none(),
        referenced_by,
        observed_generation: generation,
        conditions: vec![valid],
    }
}

fn gateway_status(key: &ObjectKey, inputs: &Inputs<'_>) -> GatewayStatus {
    let id = format!("{}/{}", key.namespace, key.name);
    let record = inputs.records.get(key);
    let rejected = inputs.errors.get(key);
    let generation = observed_generation(key, inputs);
    let attached: Vec<&Record> = inputs
        .records
        .iter()
        .filter(|(k, r)| {
            k.kind == Kind::GomaRoute
                && r.gateways.contains(&id)
                && matches!(r.verdict, Verdict::Served(_))
        })
        .map(|(_, r)| r)
        .collect();
    let middlewares: BTreeSet<&String> = attached.iter().flat_map(|r| &r.middlewares).collect();
    let what = format!("gateway {}", key.name);
    let programmed = match (rejected, record.map(|r| &r.verdict)) {
        (Some(e), _) => condition(
            CONDITION_PROGRAMMED,
            false,
            "Invalid",
            &e.message,
            generation,
        ),
        (None, Some(Verdict::Invalid { message, .. })) => {
            condition(CONDITION_PROGRAMMED, false, "Invalid", message, generation)
        }
        (None, Some(Verdict::Served(listeners))) => programmed(
            listeners,
            std::slice::from_ref(&id),
            generation,
            &what,
            inputs,
        ),
        _ => condition(
            CONDITION_PROGRAMMED,
            false,
            "Invalid",
            "no valid listeners",
            generation,
        ),
    };
    let workload = inputs.workloads.get(key).cloned().unwrap_or_default();
    let failed_reconcile = inputs
        .reconciles
        .get(key)
        .and_then(|r| r.outcome.as_ref().err());
    let available = if let Some(error) = failed_reconcile {
        condition(
            CONDITION_AVAILABLE,
            false,
            "WorkloadNotApplied",
            error,
            generation,
        )
    } else if workload.ready_replicas > 0 {
        condition(
            CONDITION_AVAILABLE,
            true,
            "MinimumReplicasAvailable",
            format!(
                "{} of {} data-plane replicas ready",
                workload.ready_replicas, workload.replicas
            ),
            generation,
        )
    } else {
        condition(
            CONDITION_AVAILABLE,
            false,
            "NoReadyReplicas",
            format!("0 of {} data-plane replicas ready", workload.replicas),
            generation,
        )
    };
    GatewayStatus {
        replicas: workload.replicas,
        ready_replicas: workload.ready_replicas,
        routes: i32::try_from(attached.len()).unwrap_or(i32::MAX),
        middlewares: i32::try_from(middlewares.len()).unwrap_or(i32::MAX),
        addresses: workload.addresses,
        observed_generation: generation,
        conditions: vec![available, programmed],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE_TYPE: usize = 3; // type_url::ALL: Secret, Cluster, Listener, Route

    fn res(name: &str, version: &str) -> ResourceRef {
        ResourceRef {
            type_index: ROUTE_TYPE,
            name: name.into(),
            version: version.into(),
        }
    }

    fn route_key(name: &str) -> ObjectKey {
        ObjectKey::new(Kind::GomaRoute, "default", name)
    }

    fn gateway_key() -> ObjectKey {
        ObjectKey::new(Kind::GomaGateway, "default", "gw")
    }

    fn route(resources: Vec<ResourceRef>, middlewares: &[&str]) -> Record {
        Record {
            generation: Some(3),
            verdict: Verdict::Served(resources),
            gateways: vec!["default/gw".into()],
            middlewares: middlewares.iter().map(|m| m.to_string()).collect(),
        }
    }

    fn pod(node: &str, acked: &[(&str, &str)], nacked: &[(&str, &str)]) -> Pod {
        let mut ledger = ClientLedger::default();
        for (n, v) in acked {
            ledger.ack(crate::resource::Encoded::reported(
                type_url::ALL[ROUTE_TYPE],
                n.to_string(),
                v.to_string(),
            ));
        }
        for (n, why) in nacked {
            ledger
                .nacked
                .insert((ROUTE_TYPE, n.to_string()), why.to_string());
        }
        Pod {
            node_id: node.into(),
            ledger,
        }
    }

    struct World {
        records: BTreeMap<ObjectKey, Record>,
        errors: BTreeMap<ObjectKey, ObjectError>,
        pods: BTreeMap<String, Vec<Pod>>,
        workloads: BTreeMap<ObjectKey, Workload>,
        reconciles: BTreeMap<ObjectKey, Report>,
    }

    impl World {
        fn new() -> Self {
            let mut records = BTreeMap::new();
            records.insert(gateway_key(), Record::new(Some(1), Verdict::Served(vec![])));
            World {
                records,
                errors: BTreeMap::new(),
                pods: BTreeMap::new(),
                workloads: BTreeMap::new(),
                reconciles: BTreeMap::new(),
            }
        }

        fn status(&self, key: &ObjectKey) -> Status {
            let inputs = Inputs {
                records: &self.records,
                errors: &self.errors,
                pods: &self.pods,
                workloads: &self.workloads,
                reconciles: &self.reconciles,
            };
            desired(&inputs).remove(key).expect("status for the key")
        }

        fn route(&self, name: &str) -> RouteStatus {
            match self.status(&route_key(name)) {
                Status::Route(s) => s,
                other => panic!("not a route status: {other:?}"),
            }
        }
    }

    fn find<'a>(s: &'a RouteStatus, t: &str) -> &'a Condition {
        s.conditions.iter().find(|c| c.type_ == t).unwrap()
    }

    #[test]
    fn route_is_synced_once_every_pod_acked_its_versions() {
        let mut w = World::new();
        w.records
            .insert(route_key("api"), route(vec![res("default/api", "v2")], &[]));
        // No pod yet.
        let s = w.route("api");
        assert!(s.ready && !s.synced);
        assert_eq!(find(&s, CONDITION_PROGRAMMED).reason, "NoDataPlane");
        // One pod of two holds the new version.
        w.pods.insert(
            "default/gw".into(),
            vec![
                pod("a", &[("default/api", "v2")], &[]),
                pod("b", &[("default/api", "v1")], &[]),
            ],
        );
        let s = w.route("api");
        assert!(!s.synced);
        let p = find(&s, CONDITION_PROGRAMMED);
        assert_eq!(
            (p.reason.as_str(), p.message.as_str()),
            ("Pending", "1 of 2 data planes acknowledged route api")
        );
        // Both.
        w.pods.get_mut("default/gw").unwrap()[1] = pod("b", &[("default/api", "v2")], &[]);
        let s = w.route("api");
        assert!(s.ready && s.synced);
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(find(&s, CONDITION_PROGRAMMED).status, "True");
    }

    #[test]
    fn a_nack_names_the_pod_and_reason() {
        let mut w = World::new();
        w.records
            .insert(route_key("api"), route(vec![res("default/api", "v2")], &[]));
        w.pods.insert(
            "default/gw".into(),
            vec![pod("pod-1", &[], &[("default/api", "regex too large")])],
        );
        let s = w.route("api");
        let p = find(&s, CONDITION_PROGRAMMED);
        assert_eq!(p.status, "False");
        assert_eq!(p.reason, "Rejected");
        assert_eq!(
            p.message,
            "data plane pod-1 of gateway default/gw rejected Route default/api: regex too large"
        );
        assert!(!s.synced);
    }

    #[test]
    fn invalid_routes_say_which_field_and_what_still_serves() {
        let mut w = World::new();
        // Rejected by the provider, never valid: nothing serves.
        w.errors.insert(
            route_key("bad"),
            ObjectError {
                message: "spec.backends[0].weight: invalid type".into(),
                generation: Some(7),
            },
        );
        let s = w.route("bad");
        assert!(!s.ready && !s.synced);
        assert_eq!(s.observed_generation, Some(7));
        let v = find(&s, CONDITION_VALID);
        assert_eq!(
            (v.status.as_str(), v.message.as_str()),
            ("False", "spec.backends[0].weight: invalid type")
        );
        assert_eq!(find(&s, CONDITION_PROGRAMMED).reason, "Invalid");

        // Invalid after a valid generation: the last valid one keeps serving, and status says so.
        w.records.insert(
            route_key("old"),
            Record {
                verdict: Verdict::Invalid {
                    message: "spec.path: must start with /".into(),
                    last_good: vec![res("default/old", "v1")],
                },
                ..route(vec![], &[])
            },
        );
        w.pods.insert(
            "default/gw".into(),
            vec![pod("a", &[("default/old", "v1")], &[])],
        );
        let s = w.route("old");
        assert!(!s.ready && !s.synced);
        let p = find(&s, CONDITION_PROGRAMMED);
        assert_eq!(p.reason, "ServingLastValid");
        assert!(
            p.message.contains("every data plane of default/gw serves"),
            "{}",
            p.message
        );
    }

    #[test]
    fn middlewares_resolve_by_name_in_the_namespace() {
        let mut w = World::new();
        w.records
            .insert(route_key("api"), route(vec![], &["auth", "limit", "gone"]));
        w.records.insert(
            ObjectKey::new(Kind::GomaMiddleware, "default", "auth"),
            Record::new(Some(1), Verdict::Served(vec![])),
        );
        w.errors.insert(
            ObjectKey::new(Kind::GomaMiddleware, "default", "limit"),
            ObjectError {
                message: "spec.rule.requestsPerUnit: required".into(),
                generation: Some(2),
            },
        );
        let s = w.route("api");
        let m = find(&s, CONDITION_MIDDLEWARES_RESOLVED);
        assert_eq!(m.status, "False");
        assert_eq!(m.message, "middlewares limit (invalid), gone (not found)");
        assert!(!s.ready);
        let Status::Middleware(auth) =
            w.status(&ObjectKey::new(Kind::GomaMiddleware, "default", "auth"))
        else {
            panic!()
        };
        assert!(auth.ready);
        assert_eq!(auth.referenced_by, ["api"]);
        let Status::Middleware(limit) =
            w.status(&ObjectKey::new(Kind::GomaMiddleware, "default", "limit"))
        else {
            panic!()
        };
        assert!(!limit.ready);
        assert_eq!(
            limit.conditions[0].message,
            "spec.rule.requestsPerUnit: required"
        );
        assert_eq!(limit.observed_generation, Some(2));
    }

    #[test]
    fn gateways_count_routes_and_report_their_workload() {
        let mut w = World::new();
        w.records.insert(
            route_key("a"),
            route(vec![res("default/a", "1")], &["auth"]),
        );
        w.records.insert(
            route_key("b"),
            route(vec![res("default/b", "1")], &["auth", "cors"]),
        );
        w.records.insert(
            route_key("off"),
            Record {
                verdict: Verdict::Disabled,
                ..route(vec![], &[])
            },
        );
        w.workloads.insert(
            gateway_key(),
            Workload {
                replicas: 2,
                ready_replicas: 1,
                addresses: vec!["10.0.0.7".into()],
            },
        );
        let Status::Gateway(g) = w.status(&gateway_key()) else {
            panic!()
        };
        assert_eq!((g.routes, g.middlewares), (2, 2));
        assert_eq!((g.replicas, g.ready_replicas), (2, 1));
        assert_eq!(g.addresses, ["10.0.0.7"]);
        assert_eq!(g.conditions[0].type_, CONDITION_AVAILABLE);
        assert_eq!(g.conditions[0].status, "True");
        assert_eq!(g.conditions[1].reason, "NoDataPlane");
        // The operator could not apply the workload: Available says why.
        w.reconciles.insert(
            gateway_key(),
            Report {
                generation: Some(1),
                outcome: Err("spec.service.httpNodePort: only for type NodePort".into()),
            },
        );
        let Status::Gateway(g) = w.status(&gateway_key()) else {
            panic!()
        };
        assert_eq!(g.conditions[0].reason, "WorkloadNotApplied");
        assert_eq!(
            g.conditions[0].message,
            "spec.service.httpNodePort: only for type NodePort"
        );
        // A route naming a gateway that does not exist is not ready.
        w.records.remove(&gateway_key());
        let s = w.route("a");
        assert!(!s.ready);
        assert_eq!(find(&s, CONDITION_PROGRAMMED).reason, "GatewayNotFound");
    }

    #[test]
    fn transition_times_move_only_when_a_condition_flips() {
        let mut w = World::new();
        w.records
            .insert(route_key("api"), route(vec![res("default/api", "v1")], &[]));
        let t1 = Timestamp::from_second(1_000).unwrap();
        let t2 = Timestamp::from_second(2_000).unwrap();
        let mut first = w.status(&route_key("api"));
        carry_transition_times(&mut first, None, t1);
        assert!(
            first
                .conditions()
                .iter()
                .all(|c| c.last_transition_time.0 == t1)
        );
        // Same statuses later: times kept, so the status compares equal (no write).
        let mut again = w.status(&route_key("api"));
        carry_transition_times(&mut again, Some(&first), t2);
        assert_eq!(again, first);
        // Programmed flips: only its time moves.
        w.pods.insert(
            "default/gw".into(),
            vec![pod("a", &[("default/api", "v1")], &[])],
        );
        let mut flipped = w.status(&route_key("api"));
        carry_transition_times(&mut flipped, Some(&first), t2);
        for c in flipped.conditions() {
            let expect = if c.type_ == CONDITION_PROGRAMMED {
                t2
            } else {
                t1
            };
            assert_eq!(c.last_transition_time.0, expect, "{}", c.type_);
        }
    }
}

//! Gateway API status as translation decided it, per object: conditions with the spec's reasons,
//! per listener and per route parent. The Gateway API controller fills the board; the status
//! writer (leader only) combines it with what the data planes acknowledged and applies it.

use crate::signalled::SignalledMap;
use crate::status::ResourceRef;

/// `spec.controllerName` of the GatewayClasses this control plane owns.
pub const CONTROLLER_NAME: &str = "sluice.dev/gateway-controller";

/// One status condition (`lastTransitionTime` and `observedGeneration` are the writer's).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    /// "Accepted", "ResolvedRefs", "Programmed", "Conflicted", "PartiallyInvalid", ...
    pub type_: &'static str,
    pub status: bool,
    /// The spec's reason, e.g. "NoMatchingListenerHostname".
    pub reason: &'static str,
    /// Names the field and the object at fault.
    pub message: String,
}

impl Condition {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Condition {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// `group`/`kind` pair as written in status (`supportedKinds`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKind {
    pub group: String,
    pub kind: String,
}

/// A parent reference exactly as the route (or policy) wrote it: status must echo it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ParentRef {
    pub group: Option<String>,
    pub kind: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    pub section_name: Option<String>,
    pub port: Option<i32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerReport {
    pub name: String,
    pub supported_kinds: Vec<GroupKind>,
    /// Accepted routes attached to this listener.
    pub attached_routes: i32,
    pub conditions: Vec<Condition>,
}

/// A route's status for one of its parents (only parents of our GatewayClasses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParentReport {
    pub parent_ref: ParentRef,
    pub conditions: Vec<Condition>,
}

/// Translation's view of one Gateway API object's status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiStatus {
    GatewayClass {
        generation: Option<i64>,
        conditions: Vec<Condition>,
        /// `status.supportedFeatures[].name`, e.g. "HTTPRouteQueryParamMatching".
        supported_features: Vec<String>,
    },
    Gateway {
        generation: Option<i64>,
        /// Accepted (and ResolvedRefs when relevant). `Programmed` here is translation's verdict
        /// (Invalid when no listener is usable); the writer turns a valid one into
        /// Programmed=True only once a data plane of the gateway has ACKed `resources`.
        conditions: Vec<Condition>,
        listeners: Vec<ListenerReport>,
        /// The listener resources data planes must ACK before the gateway is Programmed.
        resources: Vec<ResourceRef>,
    },
    /// HTTPRoute, GRPCRoute, TLSRoute, TCPRoute, UDPRoute.
    Route {
        generation: Option<i64>,
        parents: Vec<ParentReport>,
    },
    /// BackendTLSPolicy: one entry per ancestor Gateway (`ancestors` in the spec).
    Policy {
        generation: Option<i64>,
        ancestors: Vec<ParentReport>,
    },
}

/// Keyed by the object (`ObjectKey` of a Gateway API kind).
pub type GatewayApiBoard = SignalledMap<ApiStatus>;

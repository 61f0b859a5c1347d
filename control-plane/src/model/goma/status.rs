//! Status of the Goma kinds, written by the status writer through the status subresource.
//!
//! Conditions are metav1 Conditions in a list keyed by `type` (`x-kubernetes-list-type: map`), so
//! server-side apply merges them per condition type.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Route and Middleware condition: the spec passed validation.
pub const CONDITION_VALID: &str = "Valid";
/// Route condition: every middleware the route names exists and is valid.
pub const CONDITION_MIDDLEWARES_RESOLVED: &str = "MiddlewaresResolved";
/// Route and Gateway condition: the data planes acknowledged the configuration.
pub const CONDITION_PROGRAMMED: &str = "Programmed";
/// Gateway condition: enough data-plane replicas are ready.
pub const CONDITION_AVAILABLE: &str = "Available";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    /// Data-plane pods of this gateway.
    #[serde(default)]
    pub replicas: i32,
    /// Data-plane pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Routes attached to this gateway.
    #[serde(default)]
    pub routes: i32,
    /// Middlewares used by the attached routes.
    #[serde(default)]
    pub middlewares: i32,
    /// Addresses the gateway's Service is reachable at (load-balancer ingress, external IPs or
    /// the cluster IP).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Available` and `Programmed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteStatus {
    /// The route is valid, its middlewares resolve and its gateways serve it.
    #[serde(default)]
    pub ready: bool,
    /// The data planes of every gateway of the route acknowledged its current generation.
    #[serde(default)]
    pub synced: bool,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid`, `MiddlewaresResolved` and `Programmed`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MiddlewareStatus {
    /// The middleware's rule is valid for its type.
    #[serde(default)]
    pub ready: bool,
    /// Routes (in the middleware's namespace) that use this middleware.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub referenced_by: Vec<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Valid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

//! The operator: a Goma `Gateway`, or a Gateway API `Gateway` of a GatewayClass naming our
//! controller, becomes the workload that serves it — a ServiceAccount, a bootstrap ConfigMap, a
//! Deployment of `sluice data-plane` pods, a Service and, when `spec.autoScaling.enabled` (Goma),
//! a HorizontalPodAutoscaler.
//!
//! The desired objects are computed by pure functions ([`desired_objects`]); [`apply`] sends them
//! with server-side apply under one field manager; [`run`] (Goma) and
//! [`gateway_api_controller::run`] are the kube-runtime controllers that re-apply them whenever
//! the Gateway or one of its children changes (drift correction). Every child carries a
//! controller owner reference to its Gateway, so deleting the Gateway lets the garbage collector
//! delete the children.

pub mod apply;
pub mod autoscaler;
pub mod bootstrap;
pub mod controller;
pub mod deployment;
pub mod desired;
pub mod error;
pub mod gateway;
pub mod gateway_api;
pub mod gateway_api_controller;
pub mod metadata;
pub mod ports;
pub mod reports;
pub mod service;
pub mod service_account;
pub mod settings;
pub mod workload_status;

#[cfg(test)]
mod api_tests;

pub use apply::{apply, remove_workload};
pub use controller::run;
pub use desired::{DesiredObjects, desired_objects};
pub use error::OperatorError;
pub use gateway::{GatewayApiWorkload, GatewayObject, GatewaySource};
pub use reports::{GatewayReports, Report};
pub use settings::OperatorSettings;
pub use workload_status::{WorkloadStatus, workload_status};

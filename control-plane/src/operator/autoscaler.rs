//! The HorizontalPodAutoscaler (autoscaling/v2) of a Gateway with `spec.autoScaling.enabled`.
//! While it exists the Deployment's applied object carries no `replicas`: the HPA owns them.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::GatewayObject;
use super::metadata::child_metadata;
use crate::translate::Errors;

/// Goma's defaults.
pub const DEFAULT_MIN_REPLICAS: i32 = 1;
pub const DEFAULT_MAX_REPLICAS: i32 = 10;
/// The target when the Gateway names neither CPU nor memory (the API's own default, explicit).
pub const DEFAULT_CPU_UTILIZATION: i32 = 80;

pub fn autoscaler_name(gw: &GatewayObject) -> String {
    gw.name.clone()
}

/// The HPA when autoscaling is enabled, `None` otherwise; field errors are pushed to `errors`.
pub(crate) fn autoscaler(
    gw: &GatewayObject,
    errors: &mut Errors,
) -> Option<HorizontalPodAutoscaler> {
    let spec = gw.spec.auto_scaling.as_ref().filter(|a| a.enabled)?;
    let min = spec.min_replicas.unwrap_or(DEFAULT_MIN_REPLICAS);
    let max = spec.max_replicas.unwrap_or(DEFAULT_MAX_REPLICAS);
    if min < 1 {
        errors.push(
            "spec.autoScaling.minReplicas",
            format!("{min} must be at least 1"),
        );
    }
    if max < 1 {
        errors.push(
            "spec.autoScaling.maxReplicas",
            format!("{max} must be at least 1"),
        );
    } else if max < min {
        errors.push(
            "spec.autoScaling.maxReplicas",
            format!("{max} is below minReplicas ({min})"),
        );
    }
    let mut utilization = |field: &str, resource: &str, value: Option<i32>| {
        let value = value?;
        if value < 1 {
            errors.push(
                format!("spec.autoScaling.{field}"),
                format!("{value} must be at least 1 (percent of the requested {resource})"),
            );
        }
        Some(resource_metric(resource, value))
    };
    let mut metrics: Vec<MetricSpec> = [
        utilization(
            "targetCPUUtilizationPercentage",
            "cpu",
            spec.target_cpu_utilization_percentage,
        ),
        utilization(
            "targetMemoryUtilizationPercentage",
            "memory",
            spec.target_memory_utilization_percentage,
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    if metrics.is_empty() {
        metrics.push(resource_metric("cpu", DEFAULT_CPU_UTILIZATION));
    }
    Some(HorizontalPodAutoscaler {
        metadata: child_metadata(gw, &autoscaler_name(gw)),
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_owned()),
                kind: "Deployment".to_owned(),
                name: gw.name.clone(),
            },
            min_replicas: Some(min),
            max_replicas: max,
            metrics: Some(metrics),
            ..HorizontalPodAutoscalerSpec::default()
        },
        ..HorizontalPodAutoscaler::default()
    })
}

fn resource_metric(resource: &str, average_utilization: i32) -> MetricSpec {
    MetricSpec {
        type_: "Resource".to_owned(),
        resource: Some(ResourceMetricSource {
            name: resource.to_owned(),
            target: MetricTarget {
                type_: "Utilization".to_owned(),
                average_utilization: Some(average_utilization),
                ..MetricTarget::default()
            },
        }),
        ..MetricSpec::default()
    }
}

//! What a Gateway's status reports about its workload, read from the live Deployment and Service.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkloadStatus {
    pub replicas: i32,
    pub ready_replicas: i32,
    /// Where clients reach the gateway: the load balancer's ingress IPs and host names, else the
    /// Service's external IPs, else its cluster IPs (Goma's order).
    pub addresses: Vec<String>,
}

pub fn workload_status(deployment: &Deployment, service: &Service) -> WorkloadStatus {
    let status = deployment.status.as_ref();
    WorkloadStatus {
        replicas: status.and_then(|s| s.replicas).unwrap_or(0),
        ready_replicas: status.and_then(|s| s.ready_replicas).unwrap_or(0),
        addresses: service_addresses(service),
    }
}

fn service_addresses(service: &Service) -> Vec<String> {
    let ingress: Vec<String> = service
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone().or_else(|| i.hostname.clone()))
        .filter(|a| !a.is_empty())
        .collect();
    if !ingress.is_empty() {
        return ingress;
    }
    let spec = service.spec.as_ref();
    let external: Vec<String> = spec
        .and_then(|s| s.external_ips.clone())
        .unwrap_or_default();
    if !external.is_empty() {
        return external;
    }
    let cluster_ips = spec
        .and_then(|s| s.cluster_ips.clone())
        .filter(|ips| !ips.is_empty())
        .or_else(|| spec.and_then(|s| s.cluster_ip.clone()).map(|ip| vec![ip]))
        .unwrap_or_default();
    cluster_ips
        .into_iter()
        .filter(|ip| !ip.is_empty() && ip != "None")
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(status: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "gw", "namespace": "edge"},
            "status": status
        }))
        .expect("deployment")
    }

    fn service(spec: serde_json::Value, status: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "gw", "namespace": "edge"},
            "spec": spec, "status": status
        }))
        .expect("service")
    }

    #[test]
    fn replicas_come_from_the_deployment_status() {
        let d = deployment(json!({"replicas": 3, "readyReplicas": 2}));
        let s = service(
            json!({"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"]}),
            json!({}),
        );
        assert_eq!(
            workload_status(&d, &s),
            WorkloadStatus {
                replicas: 3,
                ready_replicas: 2,
                addresses: vec!["10.0.0.7".into()],
            }
        );
        let fresh = deployment(json!({}));
        assert_eq!(workload_status(&fresh, &s).ready_replicas, 0);
    }

    #[test]
    fn load_balancer_ingress_wins_then_external_ips_then_cluster_ips() {
        let d = deployment(json!({}));
        let lb = service(
            json!({"type": "LoadBalancer", "clusterIP": "10.0.0.7", "externalIPs": ["198.51.100.1"]}),
            json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}]}}),
        );
        assert_eq!(
            workload_status(&d, &lb).addresses,
            ["203.0.113.9", "lb.example.com"]
        );
        let pending = service(
            json!({"type": "LoadBalancer", "clusterIP": "10.0.0.7", "externalIPs": ["198.51.100.1"]}),
            json!({"loadBalancer": {}}),
        );
        assert_eq!(workload_status(&d, &pending).addresses, ["198.51.100.1"]);
        let dual = service(
            json!({"clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7", "fd00::7"]}),
            json!({}),
        );
        assert_eq!(
            workload_status(&d, &dual).addresses,
            ["10.0.0.7", "fd00::7"]
        );
        let headless = service(json!({"clusterIP": "None"}), json!({}));
        assert!(workload_status(&d, &headless).addresses.is_empty());
    }
}

//! The Service in front of a Gateway's pods, with every `spec.service` knob. Fields the API
//! server refuses for the chosen type are reported against the Gateway instead of failing the
//! apply with the API server's wording.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::GatewayObject;
use super::metadata::{child_metadata, selector_labels};
use super::ports::ListenerPort;
use crate::model::goma::{
    ExternalTrafficPolicy, IpFamily, IpFamilyPolicy, ServiceType, SessionAffinity,
};
use crate::translate::Errors;
use crate::translate::goma::{HTTP_LISTENER, HTTPS_LISTENER};

pub fn service_name(gw: &GatewayObject) -> String {
    gw.name.clone()
}

/// The Service; invalid combinations are pushed to `errors`, knobs without effect to `warnings`.
pub(crate) fn service(
    gw: &GatewayObject,
    ports: &[ListenerPort],
    errors: &mut Errors,
    warnings: &mut Vec<String>,
) -> Service {
    let s = &gw.spec.service;
    let load_balancer = s.service_type == ServiceType::LoadBalancer;
    let external = s.service_type != ServiceType::ClusterIP;
    let service_type = match s.service_type {
        ServiceType::ClusterIP => "ClusterIP",
        ServiceType::NodePort => "NodePort",
        ServiceType::LoadBalancer => "LoadBalancer",
    };

    let mut node_port = |field: &str, value: Option<i32>| -> Option<i32> {
        let port = value?;
        if !external {
            errors.push(
                format!("spec.service.{field}"),
                "only for type NodePort or LoadBalancer",
            );
        } else if !(1..=65535).contains(&port) {
            errors.push(
                format!("spec.service.{field}"),
                format!("{port} is not a port (1-65535)"),
            );
        }
        Some(port)
    };
    let http_node_port = node_port("httpNodePort", s.http_node_port);
    let https_node_port = node_port("httpsNodePort", s.https_node_port);
    if https_node_port.is_some() && !ports.iter().any(|p| p.name == HTTPS_LISTENER) {
        warnings.push(
            "spec.service.httpsNodePort: the gateway has no HTTPS listener (spec.server.tls is \
             empty); not exposed"
                .to_owned(),
        );
    }
    let service_ports = ports
        .iter()
        .map(|p| ServicePort {
            name: Some(p.name.clone()),
            port: i32::from(p.port),
            target_port: Some(IntOrString::String(p.name.clone())),
            protocol: Some(p.protocol.to_owned()),
            node_port: match p.name.as_str() {
                HTTP_LISTENER => http_node_port,
                HTTPS_LISTENER => https_node_port,
                _ => None,
            },
            ..ServicePort::default()
        })
        .collect();

    let lb_only = |errors: &mut Errors, field: &str, set: bool| {
        if set && !load_balancer {
            errors.push(
                format!("spec.service.{field}"),
                "only for type LoadBalancer",
            );
        }
    };
    lb_only(
        errors,
        "loadBalancerSourceRanges",
        !s.load_balancer_source_ranges.is_empty(),
    );
    lb_only(errors, "loadBalancerClass", s.load_balancer_class.is_some());
    for (i, range) in s.load_balancer_source_ranges.iter().enumerate() {
        if !is_cidr(range) {
            errors.push(
                format!("spec.service.loadBalancerSourceRanges[{i}]"),
                format!("{range:?} is not a CIDR (e.g. 203.0.113.0/24)"),
            );
        }
    }
    if let Some(ip) = &s.load_balancer_ip {
        if ip.parse::<IpAddr>().is_err() {
            errors.push(
                "spec.service.loadBalancerIP",
                format!("{ip:?} is not an IP address"),
            );
        } else if !load_balancer {
            warnings.push(
                "spec.service.loadBalancerIP: has no effect unless type is LoadBalancer".to_owned(),
            );
        }
    }
    if s.external_traffic_policy.is_some() && !external {
        errors.push(
            "spec.service.externalTrafficPolicy",
            "only for type NodePort or LoadBalancer",
        );
    }
    if s.ip_families.len() > 2 || (s.ip_families.len() == 2 && s.ip_families[0] == s.ip_families[1])
    {
        errors.push(
            "spec.service.ipFamilies",
            "at most one IPv4 and one IPv6 entry",
        );
    } else if s.ip_families.len() == 2 && s.ip_family_policy == Some(IpFamilyPolicy::SingleStack) {
        errors.push(
            "spec.service.ipFamilies",
            "two families need ipFamilyPolicy PreferDualStack or RequireDualStack",
        );
    }

    let mut metadata = child_metadata(gw, &service_name(gw));
    // Ours win over spec.service.labels: the controller finds its children by them.
    let mut labels = s.labels.clone();
    labels.extend(metadata.labels.take().unwrap_or_default());
    metadata.labels = Some(labels);
    if !s.annotations.is_empty() {
        metadata.annotations = Some(s.annotations.clone());
    }

    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(service_type.to_owned()),
            selector: Some(selector_labels(gw)),
            ports: Some(service_ports),
            load_balancer_ip: s.load_balancer_ip.clone().filter(|_| load_balancer),
            load_balancer_source_ranges: (!s.load_balancer_source_ranges.is_empty())
                .then(|| s.load_balancer_source_ranges.clone()),
            load_balancer_class: s.load_balancer_class.clone(),
            external_traffic_policy: s.external_traffic_policy.map(|p| {
                match p {
                    ExternalTrafficPolicy::Cluster => "Cluster",
                    ExternalTrafficPolicy::Local => "Local",
                }
                .to_owned()
            }),
            session_affinity: s.session_affinity.map(|a| {
                match a {
                    SessionAffinity::None => "None",
                    SessionAffinity::ClientIP => "ClientIP",
                }
                .to_owned()
            }),
            ip_family_policy: s.ip_family_policy.map(|p| {
                match p {
                    IpFamilyPolicy::SingleStack => "SingleStack",
                    IpFamilyPolicy::PreferDualStack => "PreferDualStack",
                    IpFamilyPolicy::RequireDualStack => "RequireDualStack",
                }
                .to_owned()
            }),
            ip_families: (!s.ip_families.is_empty()).then(|| {
                s.ip_families
                    .iter()
                    .map(|f| {
                        match f {
                            IpFamily::IPv4 => "IPv4",
                            IpFamily::IPv6 => "IPv6",
                        }
                        .to_owned()
                    })
                    .collect()
            }),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// `address/prefix` with the prefix within the address family's width.
fn is_cidr(text: &str) -> bool {
    let Some((addr, prefix)) = text.split_once('/') else {
        return false;
    };
    let (Ok(addr), Ok(prefix)) = (addr.parse::<IpAddr>(), prefix.parse::<u8>()) else {
        return false;
    };
    prefix <= if addr.is_ipv4() { 32 } else { 128 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        assert!(is_cidr("10.0.0.0/8"));
        assert!(is_cidr("2001:db8::/32"));
        for bad in ["10.0.0.0", "10.0.0.0/33", "x/8", "2001:db8::/129", ""] {
            assert!(!is_cidr(bad), "{bad}");
        }
    }
}

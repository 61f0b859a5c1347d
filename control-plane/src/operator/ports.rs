//! The ports a Gateway's pods listen on: exactly the listeners the translator gives the Gateway
//! (HTTP on `spec.service.httpPort`, HTTPS on `httpsPort` when it has certificates), so the
//! Deployment, the Service and the xDS Listeners the data plane binds always agree.

use sluice_proto::config as pb;

use crate::translate::TranslateError;
use crate::translate::goma::translate_gateway;

use super::{GatewayObject, GatewaySource};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenerPort {
    /// The container and Service port name (an IANA service name: at most 15 characters).
    pub name: String,
    pub port: u16,
    /// `TCP` or `UDP`.
    pub protocol: &'static str,
}

/// The listener ports of a Gateway, or the translator's error naming the invalid fields.
pub fn listener_ports(gw: &GatewayObject) -> Result<Vec<ListenerPort>, TranslateError> {
    if let GatewaySource::GatewayApi(w) = &gw.source {
        return Ok(w.ports.clone());
    }
    let (listeners, _warnings) = translate_gateway(&gw.to_model())?;
    Ok(listeners.iter().map(listener_port).collect())
}

/// The port entry of a Gateway API listener's port and transport (`tcp-443`, `udp-53`).
pub fn transport_port(port: u16, udp: bool) -> ListenerPort {
    let protocol = if udp { "UDP" } else { "TCP" };
    ListenerPort {
        name: format!("{}-{port}", protocol.to_ascii_lowercase()),
        port,
        protocol,
    }
}

fn listener_port(listener: &pb::Listener) -> ListenerPort {
    let protocol = if listener.protocol == pb::Protocol::Udp as i32 {
        "UDP"
    } else {
        "TCP"
    };
    let port = u16::try_from(listener.port).unwrap_or(0);
    let name = if is_port_name(&listener.name) {
        listener.name.clone()
    } else {
        format!("{}-{port}", protocol.to_ascii_lowercase())
    };
    ListenerPort {
        name,
        port,
        protocol,
    }
}

/// An IANA_SVC_NAME as Kubernetes checks port names: 1-15 lowercase letters, digits and
/// non-adjacent '-', with at least one letter, not starting or ending with '-'.
fn is_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::goma::{GatewaySpec, SecretRef};
    use crate::operator::GatewaySource;

    fn gw(spec: GatewaySpec) -> GatewayObject {
        GatewayObject {
            name: "gw".into(),
            namespace: "edge".into(),
            uid: "u".into(),
            source: GatewaySource::Goma,
            generation: None,
            spec,
        }
    }

    #[test]
    fn http_only_without_certificates() {
        assert_eq!(
            listener_ports(&gw(GatewaySpec::default())).expect("valid"),
            vec![ListenerPort {
                name: "http".into(),
                port: 8080,
                protocol: "TCP"
            }]
        );
    }

    #[test]
    fn https_joins_when_the_gateway_has_certificates() {
        let mut spec = GatewaySpec::default();
        spec.server.tls = vec![SecretRef {
            secret_name: "cert".into(),
        }];
        spec.service.http_port = 80;
        spec.service.https_port = 443;
        let ports = listener_ports(&gw(spec)).expect("valid");
        assert_eq!(
            ports
                .iter()
                .map(|p| (p.name.as_str(), p.port))
                .collect::<Vec<_>>(),
            [("http", 80), ("https", 443)]
        );
    }

    #[test]
    fn invalid_ports_are_the_translator_errors() {
        let mut spec = GatewaySpec::default();
        spec.service.http_port = 70000;
        let err = listener_ports(&gw(spec)).expect_err("invalid");
        assert_eq!(
            err.to_string(),
            "Gateway edge/gw: spec.service.httpPort: 70000 is not a port (1-65535)"
        );
    }

    #[test]
    fn port_names_follow_kubernetes() {
        assert!(is_port_name("http"));
        assert!(is_port_name("h2-metrics"));
        for bad in ["", "HTTP", "-a", "a-", "a--b", "1234", "sixteen-chars-xx"] {
            assert!(!is_port_name(bad), "{bad}");
        }
    }
}

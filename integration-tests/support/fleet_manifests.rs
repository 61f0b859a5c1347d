//! The Gateway API fleet's manifests, one generator for every measurement of that fleet: the fleet
//! bench (`bench_fleet`, through the file provider) and, in process, the control plane's heap per
//! route (`gateway_api_memory`) and cost per change (`gateway_api_change_cost`); the propagation
//! bench (`bench_propagation`) writes the same HTTPRoutes and Services. Each generator returns
//! whole YAML documents, each ended by `---`, so they concatenate. Included with `#[path]` by each
//! of them, like `counting_heap.rs`; each uses a part of it, hence the `allow`.
#![allow(dead_code)]

use sluice_control_plane::provider::file::parse_manifests;
use sluice_control_plane::provider::{Diagnostic, ProviderEvent};
use std::path::Path;

/// The GatewayClass every Gateway of the fleet names.
pub const GATEWAY_CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sluice}\nspec: {controllerName: sluice.dev/gateway-controller}\n---\n";

/// Gateway `name`, the fleet's `g`th: HTTP on port 20000 + g, and HTTPS on 21000 + g with the
/// certificate [`tls_secret`] writes for `g`.
pub fn gateway(name: &str, g: usize) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  gatewayClassName: sluice\n  listeners:\n  - {{name: http, port: {}, protocol: HTTP}}\n  - name: https\n    port: {}\n    protocol: HTTPS\n    tls: {{certificateRefs: [{{name: {}}}]}}\n---\n",
        20000 + g,
        21000 + g,
        certificate_name(g)
    )
}

/// HTTPRoute `name` on Gateway `gateway`, sending `path` to port 80 of Service `service`.
pub fn http_route(name: &str, gateway: &str, path: &str, service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: {gateway}}}]\n  rules: [{{matches: [{{path: {{value: {path}}}}}], backendRefs: [{{name: {service}, port: 80}}]}}]\n---\n"
    )
}

/// Service `name` (port 80) and its EndpointSlice: `endpoints` loopback addresses (127.0.0.1,
/// 127.0.0.2, ...) on `target_port`.
pub fn service(name: &str, target_port: u16, endpoints: usize) -> String {
    let addresses: Vec<String> = (1..=endpoints).map(|i| format!("127.0.0.{i}")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: {target_port}}}]\nendpoints: [{{addresses: [{}]}}]\n---\n",
        addresses.join(", ")
    )
}

/// The certificate Secret of the fleet's `g`th Gateway, holding `cert` and `key` (PEM).
pub fn tls_secret(g: usize, (cert, key): &(String, String)) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {}, namespace: default}}\ntype: kubernetes.io/tls\nstringData: {{tls.crt: {cert:?}, tls.key: {key:?}}}\n---\n",
        certificate_name(g)
    )
}

fn certificate_name(g: usize) -> String {
    format!("cert-g{g}")
}

/// A self-signed certificate for `host` and its key, PEM.
pub fn self_signed(host: &str) -> Result<(String, String), rcgen::Error> {
    let c = rcgen::generate_simple_self_signed(vec![host.to_string()])?;
    Ok((c.cert.pem(), c.signing_key.serialize_pem()))
}

/// The objects of `yaml` as provider events, or the problems found in it.
pub fn events(yaml: &str) -> Result<Vec<ProviderEvent>, Vec<Diagnostic>> {
    let (objects, diagnostics) = parse_manifests(Path::new("fleet.yaml"), yaml);
    if !diagnostics.is_empty() {
        return Err(diagnostics);
    }
    Ok(objects.into_iter().map(ProviderEvent::Apply).collect())
}

/// The target port of the in-process fleet's endpoints (nothing is proxied there).
pub const FLEET_TARGET_PORT: u16 = 8080;

/// The name of the in-process fleet's `g`th Gateway.
pub fn fleet_gateway(g: usize) -> String {
    format!("gw{g}")
}

/// The in-process fleet as provider events (no `Synced`): the GatewayClass, Services `svc-a` and
/// `svc-b`, and per Gateway `gw{g}` its certificate Secret (`cert`), its Service `svc-g{g}`, its
/// routes `hot-g{g}` (/hot to svc-a), `churn-g{g}` (/churn to svc-a) when `churn_route`,
/// `endpoints-g{g}` (/endpoints to svc-g{g}), and `plain` routes `g{g}-r{r}` (/r{r} to svc-a).
pub fn fleet_events(
    gateways: usize,
    plain: usize,
    churn_route: bool,
    cert: &(String, String),
) -> Result<Vec<ProviderEvent>, Vec<Diagnostic>> {
    let mut yaml = GATEWAY_CLASS.to_string();
    yaml.push_str(&service("svc-a", FLEET_TARGET_PORT, 1));
    yaml.push_str(&service("svc-b", FLEET_TARGET_PORT, 1));
    // Parsed per gateway: one manifest stream is limited in documents.
    let mut out = events(&yaml)?;
    for g in 0..gateways {
        let gw = fleet_gateway(g);
        let mut yaml = gateway(&gw, g);
        yaml.push_str(&tls_secret(g, cert));
        yaml.push_str(&service(&format!("svc-g{g}"), FLEET_TARGET_PORT, 1));
        yaml.push_str(&http_route(&format!("hot-g{g}"), &gw, "/hot", "svc-a"));
        if churn_route {
            yaml.push_str(&http_route(&format!("churn-g{g}"), &gw, "/churn", "svc-a"));
        }
        yaml.push_str(&http_route(
            &format!("endpoints-g{g}"),
            &gw,
            "/endpoints",
            &format!("svc-g{g}"),
        ));
        for r in 0..plain {
            yaml.push_str(&http_route(
                &format!("g{g}-r{r}"),
                &gw,
                &format!("/r{r}"),
                "svc-a",
            ));
        }
        out.extend(events(&yaml)?);
    }
    Ok(out)
}

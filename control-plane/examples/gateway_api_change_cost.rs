//! What one Gateway API change costs the controller at fleet scale, without I/O: the fleet
//! bench's shape (G Gateways with HTTP + HTTPS listeners, R HTTPRoutes in total to two shared
//! Services, per gateway a Service whose EndpointSlice churns and a rotated certificate) held in
//! one `Controller`, then each kind of change applied N times; prints the median and p99 time
//! per change. Run under `perf record -g` (or callgrind) to see where the time goes.
//!
//! `cargo run --release -p sluice-control-plane --example gateway_api_change_cost -- [G] [R] [N]`

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use sluice_control_plane::controller::Controller;
use sluice_control_plane::provider::ProviderEvent;
use sluice_control_plane::provider::file::parse_manifests;
use sluice_control_plane::views::Views;

/// A self-signed certificate and key, PEM.
fn self_signed(host: &str) -> (String, String) {
    match rcgen::generate_simple_self_signed(vec![host.to_string()]) {
        Ok(c) => (c.cert.pem(), c.signing_key.serialize_pem()),
        Err(e) => {
            eprintln!("cannot make a certificate: {e}");
            std::process::exit(2);
        }
    }
}

fn events(yaml: &str) -> Vec<ProviderEvent> {
    let (objects, diagnostics) = parse_manifests(Path::new("fleet.yaml"), yaml);
    if let Some(d) = diagnostics.first() {
        eprintln!("manifest problem: {d:?}");
        std::process::exit(2);
    }
    objects.into_iter().map(ProviderEvent::Apply).collect()
}

fn gateway(g: usize) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw{g}, namespace: default}}\nspec:\n  gatewayClassName: sluice\n  listeners:\n  - {{name: http, port: {}, protocol: HTTP}}\n  - name: https\n    port: {}\n    protocol: HTTPS\n    tls: {{certificateRefs: [{{name: cert-g{g}}}]}}\n---\n",
        20000 + g,
        21000 + g
    )
}

fn route(g: usize, name: &str, path: &str, service: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw{g}}}]\n  rules: [{{matches: [{{path: {{value: {path}}}}}], backendRefs: [{{name: {service}, port: 80}}]}}]\n---\n"
    )
}

fn service(name: &str, endpoints: usize) -> String {
    let addresses: Vec<String> = (1..=endpoints).map(|i| format!("127.0.0.{i}")).collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [{}]}}]\n---\n",
        addresses.join(", ")
    )
}

fn secret(g: usize, (cert, key): &(String, String)) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: cert-g{g}, namespace: default}}\ntype: kubernetes.io/tls\nstringData: {{tls.crt: {cert:?}, tls.key: {key:?}}}\n---\n"
    )
}

/// This process's resident set, in KiB (0 when /proc is not there).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let (gateways, routes, reps) = (arg(1, 100).max(1), arg(2, 10_000), arg(3, 200).max(1));
    let per_gateway = routes / gateways;
    let certs = [self_signed("a.example.com"), self_signed("b.example.com")];
    let mut yaml = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: sluice}\nspec: {controllerName: sluice.dev/gateway-controller}\n---\n".to_string();
    yaml.push_str(&service("svc-a", 1));
    yaml.push_str(&service("svc-b", 1));
    // Parsed per gateway: one manifest stream is limited in documents.
    let mut initial = events(&yaml);
    for g in 0..gateways {
        let mut yaml = gateway(g);
        yaml.push_str(&secret(g, &certs[0]));
        yaml.push_str(&service(&format!("svc-g{g}"), 1));
        yaml.push_str(&route(g, &format!("hot-g{g}"), "/hot", "svc-a"));
        yaml.push_str(&route(
            g,
            &format!("endpoints-g{g}"),
            "/endpoints",
            &format!("svc-g{g}"),
        ));
        for r in 0..per_gateway {
            yaml.push_str(&route(g, &format!("g{g}-r{r}"), &format!("/r{r}"), "svc-a"));
        }
        initial.extend(events(&yaml));
    }
    let views = Arc::new(Views::default());
    let mut controller = Controller::new(views);
    let started = Instant::now();
    initial.push(ProviderEvent::Synced);
    controller.apply(initial);
    println!(
        "{gateways} gateways, {} routes: initial translation {:.1} ms, RSS {} KiB",
        gateways * (per_gateway + 2),
        started.elapsed().as_secs_f64() * 1e3,
        rss_kib()
    );
    // Change `n` of gateway `g` (n = 1, 2, ...: each differs from the one before).
    type Change<'a> = &'a dyn Fn(usize, usize) -> String;
    let changes: [(&str, Change); 3] = [
        ("route edit (hot route flips Service)", &|g, n| {
            route(g, &format!("hot-g{g}"), "/hot", ["svc-a", "svc-b"][n % 2])
        }),
        ("EndpointSlice (1..=3 endpoints)", &|g, n| {
            service(&format!("svc-g{g}"), n % 3 + 1)
        }),
        ("listener certificate rotation", &|g, n| {
            secret(g, &certs[n % 2])
        }),
    ];
    for (name, change) in changes {
        // Parsed beforehand: only the controller's work is timed.
        let batches: Vec<Vec<ProviderEvent>> = (0..reps)
            .map(|i| events(&change(i % gateways, i / gateways + 1)))
            .collect();
        let mut times: Vec<f64> = batches
            .into_iter()
            .map(|batch| {
                let t = Instant::now();
                controller.apply(batch);
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let at = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
        println!(
            "{name}: p50 {:.0} us, p99 {:.0} us ({reps} changes)",
            at(0.5),
            at(0.99)
        );
    }
}

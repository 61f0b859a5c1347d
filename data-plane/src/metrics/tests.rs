use super::*;
use http::Method;
use std::collections::BTreeMap;
use std::time::Duration;

/// Samples of an exposition: (name, labels) -> value.
fn samples(text: &str) -> BTreeMap<(String, BTreeMap<String, String>), f64> {
    let mut out = BTreeMap::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once('=').expect("label");
                (k.to_string(), v.trim_matches('"').to_string())
            })
            .collect();
        out.insert((name.to_string(), labels), value.parse().expect("value"));
    }
    out
}

fn get(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let labels = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples(text).get(&(name.to_string(), labels)).copied()
}

fn series_named(text: &str, label_name: &str) -> usize {
    samples(text)
        .keys()
        .filter(|(_, l)| l.get("name").is_some_and(|n| n == label_name))
        .count()
}

#[test]
fn goma_names_and_labels() {
    let m = Metrics::new();
    let api = m.route("api");
    let get_slot = method_slot(&Method::GET);
    api.record_response(get_slot, 200);
    api.record_response(get_slot, 200);
    api.record_response(get_slot, 418); // not a precomputed status
    api.record_completion(get_slot, Duration::from_millis(3), 0, 120);
    api.record_upstream(Duration::from_millis(2));
    let post = method_slot(&Method::POST);
    api.record_response(post, 201);
    api.record_completion(post, Duration::from_millis(30), 11, 0);
    m.unmatched()
        .record_response(method_slot(&Method::GET), 404);
    let text = m.render(3);

    let route = [("name", "api"), ("method", "GET")];
    assert_eq!(get(&text, "gateway_requests_total", &route), Some(3.0));
    assert_eq!(
        get(
            &text,
            "gateway_response_status_total",
            &[("status", "200"), ("name", "api"), ("method", "GET")]
        ),
        Some(2.0)
    );
    assert_eq!(
        get(
            &text,
            "gateway_response_status_total",
            &[("status", "418"), ("name", "api"), ("method", "GET")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get(&text, "gateway_request_duration_seconds_count", &route),
        Some(1.0)
    );
    assert_eq!(
        get(
            &text,
            "gateway_request_duration_seconds_bucket",
            &[("name", "api"), ("method", "GET"), ("le", "0.005")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get(&text, "gateway_response_bytes_total", &route),
        Some(120.0)
    );
    assert_eq!(
        get(
            &text,
            "gateway_request_bytes_total",
            &[("name", "api"), ("method", "POST")]
        ),
        Some(11.0)
    );
    assert_eq!(
        get(
            &text,
            "gateway_upstream_duration_seconds_count",
            &[("name", "api")]
        ),
        Some(1.0)
    );
    assert_eq!(
        get(
            &text,
            "gateway_response_status_total",
            &[("status", "404"), ("name", UNMATCHED), ("method", "GET")]
        ),
        Some(1.0)
    );
    assert_eq!(get(&text, "gateway_routes_count", &[]), Some(3.0));
    assert!(get(&text, "gateway_uptime_seconds", &[]).is_some());
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn other_methods_share_one_label() {
    let m = Metrics::new();
    let api = m.route("api");
    for method in ["PROPFIND", "BREW", "X-ANYTHING"] {
        api.record_response(
            method_slot(&Method::from_bytes(method.as_bytes()).unwrap()),
            200,
        );
    }
    let text = m.render(1);
    assert_eq!(
        get(
            &text,
            "gateway_requests_total",
            &[("name", "api"), ("method", "OTHER")]
        ),
        Some(3.0)
    );
}

#[test]
fn series_survive_recompiles_and_go_with_the_last_route() {
    let m = Metrics::new();
    let slot = method_slot(&Method::GET);
    let v1 = m.route("api");
    v1.record_response(slot, 200);
    v1.record_response(slot, 599);
    // A recompiled route takes its stats while the old version is still held: counters continue.
    let v2 = m.route("api");
    drop(v1);
    v2.record_response(slot, 200);
    let text = m.render(1);
    assert_eq!(
        get(
            &text,
            "gateway_requests_total",
            &[("name", "api"), ("method", "GET")]
        ),
        Some(3.0)
    );

    // The last holder gone (route removed, old snapshots dropped): its series go too.
    drop(v2);
    let text = m.render(0);
    assert_eq!(series_named(&text, "api"), 0, "{text}");
    assert_eq!(m.index.live(), 1, "only the unmatched stats remain");

    // The same name later starts from zero.
    let v3 = m.route("api");
    v3.record_response(slot, 200);
    let text = m.render(1);
    assert_eq!(
        get(
            &text,
            "gateway_requests_total",
            &[("name", "api"), ("method", "GET")]
        ),
        Some(1.0)
    );
}

#[test]
fn gateway_level_series() {
    let m = Metrics::new();
    let cluster: Arc<str> = Arc::from("route/default/api/backend-0");
    m.upstream_connect_error(&cluster);
    m.upstream_connect_error(&cluster);
    m.upstream_timeout(&cluster);
    m.tls_handshake(8443, true);
    m.tls_handshake(8443, false);
    m.xds_connected(true);
    m.config_applied("route", 2, 2, 1);
    let text = m.render(2);
    let c = [("cluster", &*cluster)];
    assert_eq!(
        get(&text, "sluice_upstream_connect_errors_total", &c),
        Some(2.0)
    );
    assert_eq!(get(&text, "sluice_upstream_timeouts_total", &c), Some(1.0));
    assert_eq!(
        get(
            &text,
            "sluice_tls_handshakes_total",
            &[("port", "8443"), ("result", "failed")]
        ),
        Some(1.0)
    );
    assert_eq!(get(&text, "sluice_xds_connected", &[]), Some(1.0));
    assert_eq!(
        get(&text, "sluice_config_resources", &[("type", "route")]),
        Some(2.0)
    );
    assert_eq!(
        get(
            &text,
            "sluice_config_rejected_resources_total",
            &[("type", "route")]
        ),
        Some(1.0)
    );
    assert!(
        get(&text, "sluice_config_last_applied_timestamp_seconds", &[]).is_some_and(|t| t > 0.0)
    );
}

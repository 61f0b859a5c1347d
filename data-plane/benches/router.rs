//! Route lookup cost at 10, 1,000 and 10,000 routes, and the cost of the next snapshot after a
//! one-route change (the data plane's path for every xDS update). Criterion's reported time per iteration is the time per lookup.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use sluice_data_plane::resources::Resources;
use sluice_data_plane::router::{Lookup, NormalizedHost, RequestView};
use sluice_data_plane::snapshot::{Changed, Compiler};
use sluice_proto::config as pb;
use std::hint::black_box;
use std::net::IpAddr;
use std::sync::Arc;

const PORT: u16 = 8080;

fn path(kind: pb::path_match::Kind, value: String) -> Option<pb::PathMatch> {
    Some(pb::PathMatch {
        kind: kind as i32,
        value,
    })
}

/// A realistic mix: most routes have their own host, a tenth share one host ("shared"), a few
/// are wildcard or any-host; paths are mostly prefixes, some exact, some regex, some with a
/// header match.
fn route(i: usize) -> pb::Route {
    use pb::path_match::Kind;
    let hostnames = match i % 10 {
        0 => vec!["shared.example.com".to_string()],
        1 if i % 100 == 1 => vec![format!("*.wild{}.example.com", i % 7)],
        2 if i % 500 == 2 => vec![],
        _ => vec![format!("svc{i}.example.com")],
    };
    let m = match i % 8 {
        0..=4 => pb::RouteMatch {
            path: path(Kind::Prefix, format!("/api/v{}/svc{i}", i % 3)),
            ..Default::default()
        },
        5 => pb::RouteMatch {
            path: path(Kind::Exact, format!("/svc{i}/health")),
            ..Default::default()
        },
        6 => pb::RouteMatch {
            path: path(Kind::Regex, format!("/items{i}/[0-9]+")),
            ..Default::default()
        },
        _ => pb::RouteMatch {
            path: path(Kind::Prefix, format!("/svc{i}")),
            headers: vec![pb::HeaderMatch {
                name: "x-tenant".into(),
                value: Some(pb::StringMatch {
                    value: "acme".into(),
                    ..Default::default()
                }),
            }],
            ..Default::default()
        },
    };
    pb::Route {
        name: format!("route-{i:05}"),
        listeners: vec!["http".into()],
        hostnames,
        matches: vec![m],
        action: Some(pb::route::Action::Forward(pb::ForwardAction {
            backends: vec![pb::WeightedBackend {
                cluster: "backend".into(),
                weight: 1,
                ..Default::default()
            }],
            ..Default::default()
        })),
        ..Default::default()
    }
}

fn resources(n: usize) -> Resources {
    let mut res = Resources::default();
    res.add_http_listener("http", PORT)
        .add_cluster("backend", &[("127.0.0.1", 9000)]);
    for i in 0..n {
        let r = route(i);
        res.routes.insert(r.name.clone(), Arc::new(r));
    }
    res
}

/// Requests that hit a spread of routes, plus some misses.
fn requests(n: usize) -> Vec<http::Request<()>> {
    (0..64)
        .map(|k| {
            let i = (k * 7919) % n;
            let r = route(i);
            let host = match r.hostnames.first() {
                Some(h) if h.starts_with("*.") => format!("x{}", &h[1..]),
                Some(h) => h.clone(),
                None => "anything.example.org".into(),
            };
            let uri = match i % 8 {
                0..=4 => format!("/api/v{}/svc{i}/users/42?page=2", i % 3),
                5 => format!("/svc{i}/health"),
                6 => format!("/items{i}/12345"),
                _ => format!("/svc{i}/x"),
            };
            let uri = if k % 16 == 15 {
                "/no/such/path".to_string()
            } else {
                uri
            };
            http::Request::get(uri)
                .header("host", host)
                .header("x-tenant", "acme")
                .header("user-agent", "bench")
                .body(())
                .expect("valid request")
        })
        .collect()
}

fn lookup(c: &mut Criterion) {
    let client = IpAddr::from([10, 0, 0, 1]);
    let mut group = c.benchmark_group("route_lookup");
    for n in [10usize, 1_000, 10_000] {
        let snapshot = Compiler::new().compile(&resources(n));
        assert_eq!(snapshot.route_count(), n);
        let index = snapshot.port(PORT).expect("port indexed");
        let reqs = requests(n);
        let hits = reqs
            .iter()
            .filter(|req| {
                let host = NormalizedHost::new(req.headers()["host"].to_str().unwrap_or(""));
                matches!(
                    index.lookup(&RequestView::new(req, &host, client)),
                    Lookup::Matched(_)
                )
            })
            .count();
        println!(
            "{n} routes: {hits}/{} sample requests match a route",
            reqs.len()
        );
        let mut k = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                k = (k + 1) % reqs.len();
                let req = &reqs[k];
                let raw = req
                    .headers()
                    .get("host")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                let host = NormalizedHost::new(raw);
                let view = RequestView::new(req, &host, client);
                black_box(matches!(index.lookup(&view), Lookup::Matched(_)))
            })
        });
    }
    group.finish();
}

fn recompile(c: &mut Criterion) {
    let mut group = c.benchmark_group("compile_one_route_change");
    group.sample_size(10);
    for n in [1_000usize, 10_000] {
        let mut compiler = Compiler::new();
        let mut res = resources(n);
        compiler.compile(&res);
        let mut gen_ = 0u32;
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                gen_ += 1;
                let mut r = route(0);
                r.priority = (gen_ % 100) as i32;
                let changed = Changed {
                    routes: [r.name.clone()].into(),
                    ..Changed::default()
                };
                res.routes.insert(r.name.clone(), Arc::new(r));
                black_box(compiler.compile_changes(&res, &changed))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, recompile);
criterion_main!(benches);

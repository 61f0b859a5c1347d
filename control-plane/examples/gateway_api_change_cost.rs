//! What one Gateway API change costs the controller at fleet scale, without I/O: the fleet
//! bench's shape (G Gateways with HTTP + HTTPS listeners, R HTTPRoutes in total to two shared
//! Services, per gateway a Service whose EndpointSlice churns and a rotated certificate) held in
//! one `Controller`, then each kind of change applied N times; prints the median and p99 time
//! per change. Run under `perf record -g` (or callgrind) to see where the time goes.
//!
//! `cargo run --release -p sluice-control-plane --example gateway_api_change_cost -- [G] [R] [N]`

use std::sync::Arc;
use std::time::Instant;

use sluice_control_plane::controller::Controller;
use sluice_control_plane::provider::ProviderEvent;
use sluice_control_plane::views::Views;

#[path = "../../integration-tests/support/fleet_manifests.rs"]
mod fleet_manifests;
use fleet_manifests::{
    FLEET_TARGET_PORT, events, fleet_events, fleet_gateway, http_route, self_signed, service,
    tls_secret,
};

/// The value of `result`, or the process ends with `what` and the error (status 2).
fn or_exit<T, E: std::fmt::Debug>(what: &str, result: Result<T, E>) -> T {
    result.unwrap_or_else(|e| {
        eprintln!("{what}: {e:?}");
        std::process::exit(2);
    })
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
    let certs = ["a.example.com", "b.example.com"]
        .map(|host| or_exit("cannot make a certificate", self_signed(host)));
    // The churned route of the bench is left out: no change here edits it.
    let mut initial = or_exit(
        "manifest problems",
        fleet_events(gateways, per_gateway, false, &certs[0]),
    );
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
            http_route(
                &format!("hot-g{g}"),
                &fleet_gateway(g),
                "/hot",
                ["svc-a", "svc-b"][n % 2],
            )
        }),
        ("EndpointSlice (1..=3 endpoints)", &|g, n| {
            service(&format!("svc-g{g}"), FLEET_TARGET_PORT, n % 3 + 1)
        }),
        ("listener certificate rotation", &|g, n| {
            tls_secret(g, &certs[n % 2])
        }),
    ];
    for (name, change) in changes {
        // Parsed beforehand: only the controller's work is timed.
        let batches: Vec<Vec<ProviderEvent>> = (0..reps)
            .map(|i| {
                or_exit(
                    "manifest problems",
                    events(&change(i % gateways, i / gateways + 1)),
                )
            })
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

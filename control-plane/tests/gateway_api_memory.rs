//! Control-plane heap per Gateway API route, counted exactly (issue 7: RSS per route ≤ 10 KiB):
//! the fleet bench's shape (100 Gateways with HTTP + HTTPS listeners, 10,000 HTTPRoutes to a
//! shared Service, per gateway the churned routes, Service and certificate) goes through the
//! real `Controller`, with a counting global allocator. The controller is then dropped one part
//! at a time, which splits the heap into route memo, gateway state, status, parent index, views
//! and model store. Unlike RSS it is deterministic; the per-route cost is the difference between
//! the fleet with and without its 10,000 plain routes.
//!
//! `cargo test -p sluice-control-plane --test gateway_api_memory -- --nocapture` prints the
//! breakdown.

use sluice_control_plane::controller::Controller;
use sluice_control_plane::provider::ProviderEvent;
use sluice_control_plane::views::Views;
use std::sync::Arc;

#[path = "../../integration-tests/support/counting_heap.rs"]
mod counting_heap;
use counting_heap::{Heap, heap};

#[path = "../../integration-tests/support/fleet_manifests.rs"]
mod fleet_manifests;
use fleet_manifests::{fleet_events, self_signed};

const GATEWAYS: usize = 100;
const ROUTES: usize = 10_000;

/// The fleet's objects with `per_gateway` plain routes on each gateway, and all its churned
/// routes.
fn fleet(per_gateway: usize, cert: &(String, String)) -> Vec<ProviderEvent> {
    let mut out = fleet_events(GATEWAYS, per_gateway, true, cert)
        .unwrap_or_else(|problems| panic!("manifest problems: {problems:?}"));
    out.push(ProviderEvent::Synced);
    out
}

/// The controller's parts, in the order `release_in_parts` drops them.
const PARTS: [&str; 7] = [
    "route memo",
    "gateway state",
    "status",
    "parent index",
    "goma state",
    "views",
    "model store",
];

/// Heap held by each part of a controller that applied `batch` (the parsed objects included),
/// and the number of resources its views served.
fn held(batch: Vec<ProviderEvent>) -> (Vec<Heap>, usize) {
    let views = Arc::new(Views::default());
    let mut controller = Controller::new(views.clone());
    controller.apply(batch);
    let resources = views.ids().iter().fold(0, |n, id| {
        n + views
            .gateway(id)
            .read(|s| s.resources.iter().map(|r| r.len()).sum::<usize>())
    });
    let mut views = Some(views);
    let mut parts = Vec::new();
    let mut last = heap();
    controller.release_in_parts(|part| {
        // Our handle on the views goes just before the controller's, so they are freed there.
        if part == "goma state" {
            views = None;
        }
        let now = heap();
        parts.push(Heap {
            bytes: last.bytes - now.bytes,
            blocks: last.blocks - now.blocks,
        });
        last = now;
    });
    assert!(views.is_none());
    (parts, resources)
}

#[test]
fn gateway_api_heap_per_route_is_bounded() {
    let cert =
        self_signed("a.example.com").unwrap_or_else(|e| panic!("cannot make a certificate: {e}"));
    let (without, resources_without) = held(fleet(0, &cert));
    let (with, resources_with) = held(fleet(ROUTES / GATEWAYS, &cert));
    // Each plain route is one Route resource in its gateway's view (its Service's cluster is shared).
    assert_eq!(resources_with - resources_without, ROUTES);
    println!(
        "Gateway API, {GATEWAYS} gateways: heap per route ({ROUTES} routes), by controller part"
    );
    let mut total = Heap::default();
    let mut memo = 0.0;
    for ((part, w), wo) in PARTS.iter().zip(&with).zip(&without) {
        let bytes = (w.bytes - wo.bytes) as f64 / ROUTES as f64;
        let blocks = (w.blocks - wo.blocks) as f64 / ROUTES as f64;
        total.bytes += w.bytes - wo.bytes;
        total.blocks += w.blocks - wo.blocks;
        if *part == "route memo" {
            memo = bytes;
        }
        println!("  {part:<14} {bytes:>8.0} B  {blocks:>6.1} blocks");
    }
    let per_route = total.bytes as f64 / ROUTES as f64;
    println!(
        "  {:<14} {per_route:>8.0} B  {:>6.1} blocks",
        "total",
        total.blocks as f64 / ROUTES as f64
    );
    // Measured 3,417 B (memo 441 B) when written; 9,611 B (memo 5,200 B) before the memo shared
    // the views' Routes, its reports and its backends. Control-plane RSS per route (goal 10 KiB,
    // BENCHMARKS.md "Fleet scale") adds allocator overhead and the file provider to this heap.
    assert!(
        memo < 1024.0,
        "Gateway API route memo heap per route: {memo:.0} B"
    );
    assert!(
        per_route < 4096.0,
        "Gateway API control-plane heap per route: {per_route:.0} B"
    );
}

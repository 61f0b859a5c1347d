//! Control-plane memory per connected data-plane pod, measured deterministically: a counting
//! global allocator attributes every allocation made on the server runtime's threads, and N
//! simulated pods (each its own connection and delta-xDS stream, every response ACKed, on a
//! separate runtime whose allocations are not counted) connect to an in-process xDS server.
//!
//! `cargo test -p sluice-control-plane --test stream_memory -- --nocapture` prints the breakdown.

use sluice_control_plane::resource::Encoded;
use sluice_control_plane::views::{ViewChanges, Views};
use sluice_control_plane::xds::{Clients, serve};
use sluice_proto::config as pb;
use sluice_proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use sluice_proto::discovery::{DeltaDiscoveryRequest, Node};
use sluice_proto::type_url;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Bytes live on server threads (allocated there minus freed there).
static SERVER_LIVE: AtomicIsize = AtomicIsize::new(0);
/// The same by allocation size class: index `i` counts blocks of `2^(i-1)..2^i` bytes.
static BY_SIZE: [AtomicIsize; 64] = [const { AtomicIsize::new(0) }; 64];

thread_local! {
    static SERVER_THREAD: Cell<bool> = const { Cell::new(false) };
}

fn on_server_thread() -> bool {
    // `try_with`: the allocator runs during thread teardown too.
    SERVER_THREAD.try_with(Cell::get).unwrap_or(false)
}

fn count(size: usize, sign: isize) {
    if on_server_thread() {
        let delta = sign * size as isize;
        SERVER_LIVE.fetch_add(delta, Ordering::Relaxed);
        BY_SIZE[(usize::BITS - size.leading_zeros()) as usize].fetch_add(delta, Ordering::Relaxed);
    }
}

struct Counting;

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size(), 1);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(layout.size(), -1);
        count(new_size, 1);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const GATEWAYS: usize = 4;
const ROUTES_PER_GATEWAY: usize = 100;
const PODS_PER_GATEWAY: usize = 25;
const PODS: usize = GATEWAYS * PODS_PER_GATEWAY;
/// What one connected pod may cost the control plane's heap. About 38 KiB of it is the HTTP/2
/// stack's own and not configurable (h2 0.4 allocates a 16 KiB write buffer, an 8 KiB read
/// buffer and a 4 KiB HPACK buffer per connection, plus its frame slabs and the connection
/// task); the rest is the stream (its task, tonic's encode/decode buffers, the held-version
/// sets). Measured 61 KiB (was 175 KiB before the compact codec, small responses and shared
/// held versions).
const BUDGET_PER_POD: isize = 72 << 10;

fn gateway(g: usize) -> String {
    format!("fleet/gw-{g}")
}

/// A gateway shaped like the fleet benchmark's: a listener, and per route a route and a cluster.
fn resources(g: usize) -> Vec<Arc<Encoded>> {
    let mut out = vec![Encoded::new(
        type_url::LISTENER,
        format!("gw-{g}-http"),
        &pb::Listener {
            name: format!("gw-{g}-http"),
            port: 8080,
            ..Default::default()
        },
    )];
    for r in 0..ROUTES_PER_GATEWAY {
        let name = format!("fleet/gw-{g}-route-{r}");
        out.push(Encoded::new(
            type_url::ROUTE,
            name.clone(),
            &pb::Route {
                name: name.clone(),
                source: format!("route {r} of gateway {g} with a realistic amount of config"),
                ..Default::default()
            },
        ));
        out.push(Encoded::new(
            type_url::CLUSTER,
            format!("{name}/backend"),
            &pb::Cluster {
                name: format!("{name}/backend"),
                source: "service fleet/backend:8080 with endpoints".into(),
                ..Default::default()
            },
        ));
    }
    out
}

fn live() -> isize {
    SERVER_LIVE.load(Ordering::Relaxed)
}

fn by_size() -> Vec<isize> {
    BY_SIZE.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

/// Waits until server memory stops moving (tasks settle after the last ACK).
fn settled() -> isize {
    let mut last = live();
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let now = live();
        if now == last {
            return now;
        }
        last = now;
    }
}

/// One simulated pod: subscribes to every type by wildcard and ACKs every response; reports
/// when each type has been answered once, then keeps the stream open until `hold` closes.
async fn pod(
    port: u16,
    g: usize,
    i: usize,
    synced: mpsc::Sender<()>,
    hold: Arc<tokio::sync::Notify>,
) {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .expect("connect");
    let (tx, rx) = mpsc::channel(64);
    for url in type_url::ALL {
        tx.send(DeltaDiscoveryRequest {
            node: Some(Node {
                id: format!("pod-{g}-{i}"),
                gateway: gateway(g),
                ..Default::default()
            }),
            type_url: url.to_string(),
            ..Default::default()
        })
        .await
        .expect("queue");
    }
    let mut inbound = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await
        .expect("stream admitted")
        .into_inner();
    let mut answered = 0u8;
    let released = hold.notified();
    tokio::pin!(released);
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let r = msg.expect("stream").expect("open");
                let t = type_url::ALL.iter().position(|u| *u == r.type_url).expect("known type");
                tx.send(DeltaDiscoveryRequest {
                    type_url: r.type_url,
                    response_nonce: r.nonce,
                    ..Default::default()
                })
                .await
                .expect("ack");
                if answered & (1 << t) == 0 {
                    answered |= 1 << t;
                    if answered.count_ones() as usize == type_url::ALL.len() {
                        let _ = synced.send(()).await;
                    }
                }
            }
            _ = &mut released => return,
        }
    }
}

#[test]
fn a_connected_pod_costs_the_control_plane_under_72_kib() {
    let server = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .on_thread_start(|| SERVER_THREAD.with(|s| s.set(true)))
        .enable_all()
        .build()
        .expect("server runtime");
    let clients_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("client runtime");

    let views = Arc::new(Views::default());
    let clients = Arc::new(Clients::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let port = server.block_on(async {
        for g in 0..GATEWAYS {
            views.apply(
                &gateway(g),
                ViewChanges {
                    upserts: resources(g),
                    removals: vec![],
                },
            );
        }
        views.set_ready();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(serve(
            listener,
            views.clone(),
            clients.clone(),
            Arc::new(Default::default()),
            async move {
                let _ = stopped.await;
            },
        ));
        port
    });
    // One pod first, so lazily built server state (reflection, codecs) is not charged to the
    // fleet.
    let hold = Arc::new(tokio::sync::Notify::new());
    let (synced, mut synced_rx) = mpsc::channel(PODS + 1);
    clients_rt.spawn(pod(port, 0, 999, synced.clone(), hold.clone()));
    clients_rt.block_on(async { synced_rx.recv().await.expect("warm-up pod synced") });
    let before = settled();
    let before_by_size = by_size();

    let started = Instant::now();
    for g in 0..GATEWAYS {
        for i in 0..PODS_PER_GATEWAY {
            clients_rt.spawn(pod(port, g, i, synced.clone(), hold.clone()));
        }
    }
    clients_rt.block_on(async {
        for _ in 0..PODS {
            tokio::time::timeout(Duration::from_secs(60), synced_rx.recv())
                .await
                .expect("every pod synced in time")
                .expect("pods alive");
        }
    });
    let after = settled();
    let per_pod = (after - before) / PODS as isize;
    println!(
        "{PODS} pods ({GATEWAYS} gateways x {} resources) synced in {:?}: server heap {} KiB -> {} KiB, {} B per pod",
        resources(0).len(),
        started.elapsed(),
        before >> 10,
        after >> 10,
        per_pod
    );
    for (class, (after, before)) in by_size().iter().zip(&before_by_size).enumerate() {
        let per_pod = (after - before) / PODS as isize;
        if per_pod != 0 {
            println!(
                "  blocks of {:>6}..{:>6} B: {per_pod:>6} B per pod",
                (1usize << class) >> 1,
                1usize << class
            );
        }
    }
    hold.notify_waiters();
    let _ = stop.send(());
    assert!(
        per_pod <= BUDGET_PER_POD,
        "a connected pod costs {per_pod} B of control-plane heap (budget {BUDGET_PER_POD} B)"
    );
}

//! The xDS server under pressure, through real gRPC on loopback: new-stream shedding, slow
//! consumers (latest wins, nobody else waits), and no push before the views are ready.

use super::admission::Limits;
use super::{Clients, serve};
use crate::resource::Encoded;
use crate::views::{ViewChanges, Views};
use sluice_proto::config as pb;
use sluice_proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use sluice_proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Node};
use sluice_proto::type_url;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

const GATEWAY: &str = "ns/gw";
const WAIT: Duration = Duration::from_secs(10);

struct Server {
    port: u16,
    views: Arc<Views>,
    _stop: oneshot::Sender<()>,
}

async fn start(limits: Limits) -> Server {
    let views = Arc::new(Views::default());
    let clients = Arc::new(Clients::with_limits(limits));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("local addr").port();
    let (stop, stopped) = oneshot::channel::<()>();
    // Default security: plaintext on loopback, as standalone mode serves.
    tokio::spawn(serve(
        listener,
        views.clone(),
        clients,
        Arc::new(crate::security::Security::default()),
        async move {
            let _ = stopped.await;
        },
    ));
    Server {
        port,
        views,
        _stop: stop,
    }
}

/// A cluster resource whose payload is `size` bytes of `fill`, so versions differ per fill.
fn cluster(name: &str, fill: u8, size: usize) -> Arc<Encoded> {
    Encoded::new(
        type_url::CLUSTER,
        name.into(),
        &pb::Cluster {
            name: name.into(),
            source: String::from_utf8(vec![b'a' + fill % 26; size]).unwrap_or_default(),
            ..Default::default()
        },
    )
}

fn set(views: &Views, r: Arc<Encoded>) {
    views.apply(
        GATEWAY,
        ViewChanges {
            upserts: vec![r],
            removals: vec![],
        },
    );
}

type Requests = mpsc::Sender<DeltaDiscoveryRequest>;

/// Opens a stream subscribed to clusters by wildcard.
async fn open(
    port: u16,
    node: &str,
) -> Result<(Requests, Streaming<DeltaDiscoveryResponse>), tonic::Status> {
    let mut client = AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (tx, rx) = mpsc::channel(64);
    tx.send(DeltaDiscoveryRequest {
        node: Some(Node {
            id: node.into(),
            gateway: GATEWAY.into(),
            ..Default::default()
        }),
        type_url: type_url::CLUSTER.into(),
        ..Default::default()
    })
    .await
    .map_err(|_| tonic::Status::internal("request channel closed"))?;
    let inbound = client
        .delta_aggregated_resources(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

async fn next(inbound: &mut Streaming<DeltaDiscoveryResponse>) -> DeltaDiscoveryResponse {
    tokio::time::timeout(WAIT, inbound.message())
        .await
        .expect("a response in time")
        .expect("stream healthy")
        .expect("stream open")
}

async fn ack(tx: &Requests, r: &DeltaDiscoveryResponse) {
    tx.send(DeltaDiscoveryRequest {
        type_url: r.type_url.clone(),
        response_nonce: r.nonce.clone(),
        ..Default::default()
    })
    .await
    .expect("request channel open");
}

fn cluster_version(r: &DeltaDiscoveryResponse, name: &str) -> Option<String> {
    r.resources
        .iter()
        .find(|x| x.name == name)
        .map(|x| x.version.clone())
}

#[tokio::test]
async fn streams_beyond_the_burst_are_shed_with_a_retry_hint() {
    let server = start(Limits {
        new_stream_burst: 2,
        new_streams_per_second: 0.01,
        ..Limits::default()
    })
    .await;
    server.views.set_ready();
    let (_t1, mut s1) = open(server.port, "pod-1").await.expect("first admitted");
    let (_t2, mut s2) = open(server.port, "pod-2").await.expect("second admitted");
    next(&mut s1).await;
    next(&mut s2).await;
    let shed = match open(server.port, "pod-3").await {
        Ok((_t, mut s)) => match tokio::time::timeout(WAIT, s.message()).await {
            Ok(Err(status)) => status,
            other => panic!("third stream should be refused, got {other:?}"),
        },
        Err(status) => status,
    };
    assert_eq!(shed.code(), tonic::Code::Unavailable, "{shed:?}");
    assert!(shed.message().contains("retry in"), "{}", shed.message());
    let hint: u64 = shed
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("grpc-retry-pushback-ms hint");
    assert!(hint > 1000, "at 0.01 streams/s the wait is long: {hint} ms");
}

#[tokio::test]
async fn a_slow_consumer_blocks_nobody_and_catches_up_to_the_latest_only() {
    let server = start(Limits::default()).await;
    set(&server.views, cluster("c", 0, 16 << 10));
    server.views.set_ready();
    let (slow_tx, mut slow) = open(server.port, "slow").await.expect("admitted");
    let (fast_tx, mut fast) = open(server.port, "fast").await.expect("admitted");
    let first = next(&mut slow).await;
    ack(&slow_tx, &first).await;
    let first = next(&mut fast).await;
    ack(&fast_tx, &first).await;

    // 200 changes of a 16 KiB resource while "slow" reads nothing: "fast" sees the last one.
    const CHANGES: u8 = 200;
    for i in 1..=CHANGES {
        set(&server.views, cluster("c", i, 16 << 10));
    }
    let last = cluster("c", CHANGES, 16 << 10).version.clone();
    loop {
        let r = next(&mut fast).await;
        ack(&fast_tx, &r).await;
        if cluster_version(&r, "c").as_deref() == Some(last.as_str()) {
            break;
        }
    }

    // "slow" now reads what piled up for it: bounded (its stream buffer and the transport's
    // window, not one response per change), ending with the latest version.
    let mut received = 0;
    loop {
        let r = next(&mut slow).await;
        received += 1;
        ack(&slow_tx, &r).await;
        if cluster_version(&r, "c").as_deref() == Some(last.as_str()) {
            break;
        }
    }
    assert!(
        received < usize::from(CHANGES) / 2,
        "a slow consumer got {received} responses for {CHANGES} changes: not coalesced"
    );
}

#[tokio::test]
async fn nothing_is_pushed_before_the_views_are_ready() {
    let server = start(Limits::default()).await;
    set(&server.views, cluster("c", 1, 16));
    let (_tx, mut inbound) = open(server.port, "early").await.expect("admitted");
    let early = tokio::time::timeout(Duration::from_millis(200), inbound.message()).await;
    assert!(early.is_err(), "pushed before ready: {early:?}");
    server.views.set_ready();
    let r = next(&mut inbound).await;
    assert!(cluster_version(&r, "c").is_some(), "{r:?}");
}

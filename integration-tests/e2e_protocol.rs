//! The delta xDS protocol through the real binaries: a raw test client against
//! `sluice control-plane`, and a scripted test server against `sluice data-plane`.

mod support;

use prost::Message;
use sluice_proto::config as pb;
use sluice_proto::discovery::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use sluice_proto::discovery::inspection_client::InspectionClient;
use sluice_proto::discovery::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, GetResourcesRequest, ListGatewaysRequest, Node,
};
use sluice_proto::type_url;
use std::collections::BTreeMap;
use std::time::Duration;
use support::xds::*;
use support::*;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

struct RawStream {
    tx: mpsc::Sender<DeltaDiscoveryRequest>,
    rx: Streaming<DeltaDiscoveryResponse>,
}

impl RawStream {
    async fn open(xds: u16, first: DeltaDiscoveryRequest) -> Result<Self, Status> {
        let mut client =
            AggregatedDiscoveryServiceClient::connect(format!("http://127.0.0.1:{xds}"))
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = mpsc::channel(16);
        tx.send(first).await.unwrap();
        let rx = client
            .delta_aggregated_resources(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Self { tx, rx })
    }
    async fn recv(&mut self) -> Result<DeltaDiscoveryResponse, Status> {
        match tokio::time::timeout(Duration::from_secs(5), self.rx.message()).await {
            Ok(Ok(Some(r))) => Ok(r),
            Ok(Ok(None)) => Err(Status::aborted("stream ended")),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Status::deadline_exceeded("no response within 5 s")),
        }
    }
    /// Nothing arrives within `d`.
    async fn quiet(&mut self, d: Duration) -> bool {
        tokio::time::timeout(d, self.rx.message()).await.is_err()
    }
    async fn send(&self, r: DeltaDiscoveryRequest) {
        self.tx.send(r).await.unwrap();
    }
    async fn ack(&self, r: &DeltaDiscoveryResponse) {
        self.send(DeltaDiscoveryRequest {
            type_url: r.type_url.clone(),
            response_nonce: r.nonce.clone(),
            ..Default::default()
        })
        .await;
    }
}

fn subscribe(gateway: &str, t: &str, initial: BTreeMap<String, String>) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        node: Some(Node {
            id: "test-pod".into(),
            gateway: gateway.into(),
            ..Default::default()
        }),
        type_url: t.into(),
        resource_names_subscribe: vec!["*".into()],
        initial_resource_versions: initial.into_iter().collect(),
        ..Default::default()
    }
}

fn names(r: &DeltaDiscoveryResponse) -> Vec<String> {
    r.resources.iter().map(|x| x.name.clone()).collect()
}

/// type URL -> name -> version.
type Held = BTreeMap<String, BTreeMap<String, String>>;

/// Opens a stream for `gateway`, subscribes to every type, ACKs and returns what it holds.
async fn sync_all(
    xds: u16,
    gateway: &str,
    held: &Held,
) -> (RawStream, Held, Vec<DeltaDiscoveryResponse>) {
    let initial = |t: &str| held.get(t).cloned().unwrap_or_default();
    let mut s = RawStream::open(
        xds,
        subscribe(gateway, type_url::ALL[0], initial(type_url::ALL[0])),
    )
    .await
    .unwrap();
    for t in &type_url::ALL[1..] {
        s.send(subscribe(gateway, t, initial(t))).await;
    }
    let mut got = Held::new();
    let mut responses = Vec::new();
    while responses.len() < 4 {
        let r = s.recv().await.unwrap();
        for res in &r.resources {
            got.entry(r.type_url.clone())
                .or_default()
                .insert(res.name.clone(), res.version.clone());
        }
        s.ack(&r).await;
        responses.push(r);
    }
    (s, got, responses)
}

fn two_gateway_dir(port_a: u16) -> TempDir {
    let dir = TempDir::new("proto");
    dir.write(
        "gw.yaml",
        &(gateway_yaml("public", free_port()) + "---\n" + &gateway_yaml("private", free_port())),
    );
    dir.write("pub.yaml", &route_yaml("pub", "public", "/pub", port_a, ""));
    dir.write(
        "priv.yaml",
        &route_yaml("priv", "private", "/priv", port_a, ""),
    );
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_keeps_the_server_rules() {
    let dir = two_gateway_dir(9);
    let xds = free_port();
    let cp = control_plane(dir.path(), xds, &[]);
    cp.wait_log("xDS server listening", Duration::from_secs(10));

    // A stream whose first message has no node is refused.
    let no_node = DeltaDiscoveryRequest {
        type_url: type_url::ROUTE.into(),
        ..Default::default()
    };
    let err = match RawStream::open(xds, no_node).await {
        Ok(mut s) => s.recv().await.unwrap_err(),
        Err(e) => e,
    };
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");

    // Each gateway sees only its own resources.
    let (mut s, held, _) = sync_all(xds, "default/public", &BTreeMap::new()).await;
    let routes: Vec<&String> = held[type_url::ROUTE].keys().collect();
    assert_eq!(routes, ["route/default/pub"]);
    let (_p, held_private, _) = sync_all(xds, "default/private", &BTreeMap::new()).await;
    assert_eq!(
        held_private[type_url::ROUTE].keys().collect::<Vec<_>>(),
        ["route/default/priv"]
    );

    // A change to one route sends only that route's changed resources, cluster before route.
    dir.write(
        "pub.yaml",
        &route_yaml("pub", "public", "/pub", 10, "  methods: [GET]\n"),
    );
    let mut pushed = Vec::new();
    while !pushed
        .iter()
        .any(|r: &DeltaDiscoveryResponse| r.type_url == type_url::ROUTE)
    {
        let r = s.recv().await.unwrap();
        s.ack(&r).await;
        pushed.push(r);
    }
    let order: Vec<(&str, Vec<String>)> = pushed
        .iter()
        .map(|r| (r.type_url.rsplit('.').next().unwrap(), names(r)))
        .collect();
    assert_eq!(
        order,
        [
            ("Cluster", vec!["route/default/pub/backend-0".to_string()]),
            ("Route", vec!["route/default/pub".to_string()])
        ]
    );
    let bytes: usize = pushed.iter().map(|r| r.encoded_len()).sum();
    assert!(bytes < 1024, "a one-route change costs {bytes} bytes");
    assert!(
        s.quiet(Duration::from_millis(200)).await,
        "nothing else is sent"
    );

    // A NACK is recorded and not answered with a re-push; inspection shows the reason.
    dir.write(
        "pub.yaml",
        &route_yaml("pub", "public", "/pub", 11, "  methods: [GET]\n"),
    );
    let r = s.recv().await.unwrap();
    s.send(DeltaDiscoveryRequest {
        type_url: r.type_url.clone(),
        response_nonce: r.nonce.clone(),
        error_detail: Some(sluice_proto::google::rpc::Status {
            code: 3,
            message: "test says no".into(),
            details: vec![],
        }),
        resource_errors: vec![sluice_proto::discovery::ResourceError {
            name: names(&r)[0].clone(),
            error_detail: Some(sluice_proto::google::rpc::Status {
                code: 3,
                message: "test says no".into(),
                details: vec![],
            }),
        }],
        ..Default::default()
    })
    .await;
    assert!(
        s.quiet(Duration::from_millis(300)).await,
        "no re-push after a NACK"
    );
    let mut inspect = InspectionClient::connect(format!("http://127.0.0.1:{xds}"))
        .await
        .unwrap();
    let list = inspect
        .list_gateways(ListGatewaysRequest {})
        .await
        .unwrap()
        .into_inner();
    let public = list
        .gateways
        .iter()
        .find(|g| g.gateway == "default/public")
        .expect("public listed");
    let nacked: Vec<String> = public
        .clients
        .iter()
        .flat_map(|c| {
            c.nacked
                .iter()
                .map(|e| e.error_detail.clone().unwrap().message)
        })
        .collect();
    assert_eq!(nacked, ["test says no"]);
    assert!(public.clients.iter().any(|c| !c.acked.is_empty()));
    let res = inspect
        .get_resources(GetResourcesRequest {
            gateway: "default/private".into(),
            type_url: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(res.resources.iter().all(|r| !r.name.contains("pub")));
    drop(s);

    // Reconnect holding everything current: nothing is resent (one empty answer per type).
    let (_s, current, _) = sync_all(xds, "default/public", &BTreeMap::new()).await;
    let (_s2, again, responses) = sync_all(xds, "default/public", &current).await;
    assert!(again.is_empty(), "resent on reconnect: {again:?}");
    assert!(
        responses
            .iter()
            .all(|r| r.resources.is_empty() && r.removed_resources.is_empty())
    );

    // Held versions that are stale or gone are corrected: differences resent, removals sent.
    let mut stale = current.clone();
    stale
        .get_mut(type_url::ROUTE)
        .unwrap()
        .insert("route/default/pub".into(), "old".into());
    stale
        .get_mut(type_url::ROUTE)
        .unwrap()
        .insert("route/default/deleted-meanwhile".into(), "v".into());
    let (_s3, again, responses) = sync_all(xds, "default/public", &stale).await;
    assert_eq!(
        again[type_url::ROUTE].keys().collect::<Vec<_>>(),
        ["route/default/pub"]
    );
    let removed: Vec<&String> = responses
        .iter()
        .flat_map(|r| &r.removed_resources)
        .collect();
    assert_eq!(removed, ["route/default/deleted-meanwhile"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_plane_keeps_the_client_rules() {
    let (_echo, echo_port) = echo("good");
    let (xds, mut srx) = Scripted::start().await;
    let gw_port = free_port();
    let admin = free_port();
    let _dp = data_plane("default/gw", xds, admin, &["--node-id", "pod-7"], &[]);
    let (mut rx, tx) = srx.recv().await.unwrap();

    // The first request of every type carries the node; nothing is held yet.
    let mut types = Vec::new();
    for _ in 0..4 {
        let r = next_request(&mut rx).await;
        assert_eq!(
            r.node.as_ref().map(|n| (n.id.as_str(), n.gateway.as_str())),
            Some(("pod-7", "default/gw"))
        );
        assert!(r.initial_resource_versions.is_empty());
        types.push(r.type_url);
    }
    assert_eq!(types, type_url::ALL);

    // Cluster, listener, then two routes: one valid, one with a bad regex and one naming a missing
    // cluster. The valid one applies and serves; the others are NACKed by name.
    let cluster = pb::Cluster {
        name: "c".into(),
        endpoints: vec![pb::Endpoint {
            address: "127.0.0.1".into(),
            port: echo_port as u32,
            weight: 1,
        }],
        ..Default::default()
    };
    tx.send(Ok(response(type_url::SECRET, "n0", vec![])))
        .await
        .unwrap();
    tx.send(Ok(response(
        type_url::CLUSTER,
        "n1",
        vec![resource("c", &cluster)],
    )))
    .await
    .unwrap();
    let listener = pb::Listener {
        name: "http".into(),
        port: gw_port as u32,
        protocol: pb::Protocol::Http as i32,
        ..Default::default()
    };
    tx.send(Ok(response(
        type_url::LISTENER,
        "n2",
        vec![resource("http", &listener)],
    )))
    .await
    .unwrap();
    let mut bad_regex = route("bad-regex", "/", "c");
    bad_regex.matches[0].path = Some(pb::PathMatch {
        kind: pb::path_match::Kind::Regex as i32,
        value: "([".into(),
    });
    let routes = vec![
        resource("good", &route("good", "/good", "c")),
        resource("bad-regex", &bad_regex),
        resource("orphan", &route("orphan", "/orphan", "missing")),
    ];
    tx.send(Ok(response(type_url::ROUTE, "n3", routes)))
        .await
        .unwrap();
    let mut acks = BTreeMap::new();
    while acks.len() < 4 {
        let r = next_request(&mut rx).await;
        acks.insert(r.response_nonce.clone(), r);
    }
    for n in ["n0", "n1", "n2"] {
        assert!(acks[n].error_detail.is_none(), "{n} ACKed");
    }
    let nack = &acks["n3"];
    assert!(nack.error_detail.is_some(), "routes NACKed");
    let mut rejected: Vec<&str> = nack
        .resource_errors
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    rejected.sort();
    assert_eq!(rejected, ["bad-regex", "orphan"]);
    let reason = |n: &str| {
        nack.resource_errors
            .iter()
            .find(|e| e.name == n)
            .unwrap()
            .error_detail
            .clone()
            .unwrap()
            .message
    };
    assert!(reason("orphan").contains("missing"), "{}", reason("orphan"));
    wait_ready(admin).await;
    let r = get(&client(), gw_port, "x", "/good").await;
    assert_eq!((r.status, r.backend().as_str()), (200, "good"));

    // Duplicate names NACK the whole response and change nothing.
    tx.send(Ok(response(
        type_url::ROUTE,
        "n4",
        vec![
            resource("dup", &route("dup", "/dup", "c")),
            resource("dup", &route("dup", "/dup", "c")),
        ],
    )))
    .await
    .unwrap();
    let r = next_request(&mut rx).await;
    assert_eq!(r.response_nonce, "n4");
    assert!(r.error_detail.is_some());
    assert_eq!(get(&client(), gw_port, "x", "/dup").await.status, 404);

    // Only removed_resources deletes: a response without "good" leaves it serving.
    tx.send(Ok(response(type_url::ROUTE, "n5", vec![])))
        .await
        .unwrap();
    assert_eq!(next_request(&mut rx).await.response_nonce, "n5");
    assert_eq!(get(&client(), gw_port, "x", "/good").await.status, 200);

    // The stream drops: the data plane keeps serving, reconnects, and reports what it holds,
    // without the rejected names.
    drop(tx);
    drop(rx);
    assert_eq!(get(&client(), gw_port, "x", "/good").await.status, 200);
    let (mut rx, _tx) = tokio::time::timeout(Duration::from_secs(10), srx.recv())
        .await
        .expect("reconnect")
        .unwrap();
    let mut initial = BTreeMap::new();
    for _ in 0..4 {
        let r = next_request(&mut rx).await;
        assert!(r.node.is_some());
        initial.insert(r.type_url.clone(), r.initial_resource_versions);
    }
    let held_routes: Vec<&String> = initial[type_url::ROUTE].keys().collect();
    assert_eq!(held_routes, ["good"]);
    assert_eq!(initial[type_url::CLUSTER].keys().collect::<Vec<_>>(), ["c"]);
    assert_eq!(get(&client(), gw_port, "x", "/good").await.status, 200);
}

//! A scripted delta-xDS server for driving the real `sluice data-plane` binary: each new stream
//! is handed to the test, which sends responses and reads the requests (ACKs and NACKs).

use prost::Message;
use sluice_proto::config as pb;
use sluice_proto::discovery::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use sluice_proto::discovery::{DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// One accepted stream: what the data plane sends, and where the test's responses go.
pub type ScriptedStream = (
    Streaming<DeltaDiscoveryRequest>,
    mpsc::Sender<Result<DeltaDiscoveryResponse, Status>>,
);

/// A scripted xDS server: hands each new stream to the test, which sends responses and reads requests.
#[derive(Clone, Default)]
pub struct Scripted {
    pub streams: Arc<Mutex<Option<mpsc::UnboundedSender<ScriptedStream>>>>,
}

#[tonic::async_trait]
impl AggregatedDiscoveryService for Scripted {
    type DeltaAggregatedResourcesStream =
        Pin<Box<dyn tokio_stream::Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;
    async fn delta_aggregated_resources(
        &self,
        req: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaAggregatedResourcesStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        if let Some(s) = self.streams.lock().unwrap().as_ref() {
            let _ = s.send((req.into_inner(), tx));
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

pub fn resource<M: Message + prost::Name>(name: &str, m: &M) -> Resource {
    Resource {
        name: name.into(),
        version: format!("v-{name}-{}", m.encoded_len()),
        resource: Some(prost_types::Any {
            type_url: M::type_url(),
            value: m.encode_to_vec(),
        }),
        ttl: None,
    }
}

/// A route of the listener `http` forwarding paths under `path` to `cluster`.
pub fn route(name: &str, path: &str, cluster: &str) -> pb::Route {
    pb::Route {
        name: name.into(),
        listeners: vec!["http".into()],
        matches: vec![pb::RouteMatch {
            path: Some(pb::PathMatch {
                kind: pb::path_match::Kind::Prefix as i32,
                value: path.into(),
            }),
            ..Default::default()
        }],
        action: Some(pb::route::Action::Forward(pb::ForwardAction {
            backends: vec![pb::WeightedBackend {
                cluster: cluster.into(),
                weight: 1,
                ..Default::default()
            }],
            preserve_host: true,
            ..Default::default()
        })),
        ..Default::default()
    }
}

pub fn response(t: &str, nonce: &str, resources: Vec<Resource>) -> DeltaDiscoveryResponse {
    DeltaDiscoveryResponse {
        type_url: t.into(),
        nonce: nonce.into(),
        resources,
        ..Default::default()
    }
}

pub async fn next_request(rx: &mut Streaming<DeltaDiscoveryRequest>) -> DeltaDiscoveryRequest {
    tokio::time::timeout(Duration::from_secs(5), rx.next())
        .await
        .expect("request within 5 s")
        .expect("stream open")
        .expect("valid request")
}

impl Scripted {
    /// Serves on a free loopback port; returns the port and the receiver of new streams.
    pub async fn start() -> (u16, mpsc::UnboundedReceiver<ScriptedStream>) {
        let server = Scripted::default();
        let (stx, srx) = mpsc::unbounded_channel();
        *server.streams.lock().unwrap() = Some(stx);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(AggregatedDiscoveryServiceServer::new(server))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        (port, srx)
    }
}

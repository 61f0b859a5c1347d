//! Wiring of a control plane: provider -> controller -> views -> xDS server.

use crate::controller::Controller;
use crate::leader::{self, LeaseConfig};
use crate::operator::{GatewayReports, OperatorSettings};
use crate::provider::ObjectErrors;
use crate::provider::file::FileProvider;
use crate::provider::kubernetes::KubernetesProvider;
use crate::security::{PodLiveness, Security};
use crate::status::StatusBoard;
use crate::status::gateway_api::GatewayApiBoard;
use crate::status::writer::{Sources, StatusWriter};
use crate::views::Views;
use crate::xds::{self, Clients};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("config directory {0}: {1}")]
    ConfigDir(PathBuf, std::io::Error),
    #[error("xDS server: {0}")]
    Server(#[from] xds::server::ServeError),
    #[error("no Kubernetes client configuration (in-cluster service account or KUBECONFIG)")]
    KubeConfig(#[source] kube::Error),
}

/// A running control plane's shared state (views and connected clients), for in-process users
/// such as standalone mode and tests.
#[derive(Clone, Default)]
pub struct Handles {
    pub views: Arc<Views>,
    pub clients: Arc<Clients>,
    /// Objects the provider rejected (the Kubernetes provider records them; the status writer
    /// reports them).
    pub errors: ObjectErrors,
    /// Translation's verdict on every object (the controller records them; the status writer
    /// reports them).
    pub board: StatusBoard,
    /// Gateway API status as translation decided it (the controller fills it; the status
    /// writer applies it).
    pub api_board: GatewayApiBoard,
    /// How the xDS server authenticates peers. The default, plaintext with open inspection, is
    /// for loopback only (the binary refuses it elsewhere unless asked).
    pub security: Arc<Security>,
}

impl Handles {
    /// The controller that fills these views and status boards.
    fn controller(&self) -> Controller {
        Controller::with_boards(
            self.views.clone(),
            self.board.clone(),
            self.api_board.clone(),
        )
    }
}

/// Serves the manifests under `dir` on `listener` until `shutdown` resolves.
pub async fn run_file_control_plane(
    dir: PathBuf,
    listener: TcpListener,
    handles: Handles,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let meta = std::fs::metadata(&dir).map_err(|e| RunError::ConfigDir(dir.clone(), e))?;
    if !meta.is_dir() {
        return Err(RunError::ConfigDir(
            dir,
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
        ));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let provider = FileProvider::new(dir.clone());
    let provider_task = tokio::spawn(async move {
        if let Err(e) = provider.run(tx).await {
            tracing::error!(error = %e, "file provider stopped");
        }
    });
    let controller_task = tokio::spawn(handles.controller().run(rx));
    tracing::info!(dir = %dir.display(), "watching manifests");
    let result = xds::serve(
        listener,
        handles.views,
        handles.clients,
        handles.security,
        shutdown,
    )
    .await;
    provider_task.abort();
    controller_task.abort();
    Ok(result?)
}

/// A client from the environment: the in-cluster service account, else `KUBECONFIG` (or
/// `~/.kube/config`) and its current context.
pub async fn kubernetes_client() -> Result<kube::Client, RunError> {
    kube::Client::try_default()
        .await
        .map_err(RunError::KubeConfig)
}

/// How the control plane runs against a cluster.
#[derive(Clone, Debug)]
pub struct KubernetesOptions {
    /// Watch namespaced kinds in this namespace only (cluster-scoped ones are always watched).
    pub namespace: Option<String>,
    /// The leader Lease: its namespace and this replica's identity.
    pub lease: LeaseConfig,
    /// How the leader's operator turns Gateways into workloads.
    pub operator: OperatorSettings,
}

/// How long a stopping leader waits to release its Lease.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves the cluster's configuration on `listener` until `shutdown` resolves. Every replica
/// watches and serves xDS (readiness turns SERVING once every watch has listed); the replica
/// holding the Lease also runs [`leader_duties`].
pub async fn run_kubernetes_control_plane(
    client: kube::Client,
    options: KubernetesOptions,
    listener: TcpListener,
    handles: Handles,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    // One shutdown for the xDS server and the elector (which releases the Lease on it).
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    tokio::spawn(async move {
        shutdown.await;
        stop_tx.send_replace(true);
    });

    let (tx, rx) = mpsc::unbounded_channel();
    let provider = KubernetesProvider::new(
        client.clone(),
        options.namespace.clone(),
        handles.errors.clone(),
    );
    let provider_task = tokio::spawn(provider.run(tx));
    let controller_task = tokio::spawn(handles.controller().run(rx));
    // Every replica follows the data-plane pods: a deleted pod's credentials are revoked.
    let pods_task = match &handles.security.pods {
        PodLiveness::Kubernetes(pods) => Some(tokio::spawn(crate::security::pods::watch_pods(
            client.clone(),
            options.namespace.clone(),
            pods.clone(),
        ))),
        PodLiveness::Unchecked => None,
    };
    tracing::info!(
        identity = %options.lease.identity,
        lease = %format!("{}/{}", options.lease.namespace, options.lease.name),
        "campaigning for leadership"
    );
    let (leading, elector) = leader::spawn(client.clone(), options.lease, stopped(stop_rx.clone()));
    let duties = tokio::spawn(leader_duties(
        client,
        handles.clone(),
        options.namespace.clone(),
        options.operator,
        leading,
    ));

    let result = xds::serve(
        listener,
        handles.views,
        handles.clients,
        handles.security,
        stopped(stop_rx),
    )
    .await;
    // Let the elector release the Lease so another replica takes over at once.
    if tokio::time::timeout(RELEASE_TIMEOUT, elector)
        .await
        .is_err()
    {
        tracing::warn!("the leader Lease was not released in time; it expires on its own");
    }
    duties.abort();
    if let Some(task) = pods_task {
        task.abort();
    }
    provider_task.abort();
    controller_task.abort();
    Ok(result?)
}

/// Work only the leader does. Tasks spawned into `duties` run while this replica leads and are
/// stopped the moment it does not: THIS is where the operator and the status writer start (with
/// `client`, `handles.views`, `handles.clients` and `handles.errors`).
async fn leader_duties(
    client: kube::Client,
    handles: Handles,
    namespace: Option<String>,
    operator: OperatorSettings,
    mut leading: watch::Receiver<bool>,
) {
    let reconciles = GatewayReports::default();
    loop {
        if leading.wait_for(|l| *l).await.is_err() {
            return;
        }
        tracing::info!("leading: starting the leader-only duties");
        let mut duties: JoinSet<()> = JoinSet::new();
        duties.spawn(crate::operator::run(
            client.clone(),
            operator.clone(),
            reconciles.clone(),
            std::future::pending(),
        ));
        duties.spawn(crate::operator::gateway_api_controller::run(
            client.clone(),
            operator.clone(),
            reconciles.clone(),
            std::future::pending(),
        ));
        let (workloads_tx, workloads) = watch::channel(Default::default());
        duties.spawn(crate::status::workloads::run(
            client.clone(),
            namespace.clone(),
            workloads_tx,
        ));
        // A fresh writer per term: it rewrites every status once, whatever the last leader wrote.
        let writer = StatusWriter::new(
            client.clone(),
            Sources {
                board: handles.board.clone(),
                api_board: handles.api_board.clone(),
                errors: handles.errors.clone(),
                clients: handles.clients.clone(),
                workloads,
                reconciles: reconciles.clone(),
                namespace: namespace.clone(),
            },
        );
        // Partial translation would write partial status (and withdraw entries about to be
        // reported again): the writer starts once the initial translation is complete.
        let views = handles.views.clone();
        duties.spawn(async move {
            views.wait_ready().await;
            writer.run().await;
        });
        if leading.wait_for(|l| !*l).await.is_err() {
            return;
        }
        tracing::info!("no longer leading: stopping the leader-only duties");
        duties.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: Value) {
        let response = Response::builder()
            .status(StatusCode::from_u16(status).expect("a status"))
            .body(Body::from(serde_json::to_vec(&body).expect("JSON")))
            .expect("a response");
        send.send_response(response);
    }

    /// Against a mock API server: not ready while a watch has not listed, ready once it has (a
    /// missing CRD counts as listed), leader via the Lease, and the Lease released on shutdown.
    #[tokio::test]
    async fn kubernetes_mode_serves_after_every_watch_listed_and_releases_the_lease() {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let handles = Handles::default();
        let (stop, stop_rx) = watch::channel(false);
        let options = KubernetesOptions {
            namespace: None,
            lease: LeaseConfig::new("sluice", "pod-a"),
            operator: OperatorSettings::default(),
        };
        let run = tokio::spawn(run_kubernetes_control_plane(
            client,
            options,
            listener,
            handles.clone(),
            async move {
                let mut rx = stop_rx;
                let _ = rx.wait_for(|s| *s).await;
            },
        ));

        let mut held_routes_list = None;
        let mut open_watches = Vec::new();
        let mut leader_created = false;
        let mut lists = 0;
        let specs = crate::provider::kubernetes::watches::watch_specs().len();
        while !(leader_created && lists == specs - 1 && held_routes_list.is_some()) {
            let (request, send) = handle.next_request().await.expect("a request");
            let (method, uri) = (request.method().to_string(), request.uri().to_string());
            if uri == "/version" {
                respond(
                    send,
                    200,
                    json!({"major": "1", "minor": "30", "gitVersion": "v1.30.0",
                    "gitCommit": "", "gitTreeState": "", "buildDate": "", "goVersion": "",
                    "compiler": "", "platform": ""}),
                );
            } else if uri.contains("/leases") {
                match method.as_str() {
                    "GET" => respond(
                        send,
                        404,
                        json!({"kind": "Status", "apiVersion": "v1",
                        "metadata": {}, "status": "Failure", "reason": "NotFound", "code": 404}),
                    ),
                    "POST" => {
                        let body = request.into_body().collect_bytes().await.expect("a body");
                        let mut lease: Value = serde_json::from_slice(&body).expect("a Lease");
                        lease["metadata"]["resourceVersion"] = json!("1");
                        respond(send, 201, lease);
                        leader_created = true;
                    }
                    other => panic!("unexpected {other} {uri}"),
                }
            } else if uri.contains("watch=true") {
                open_watches.push(send);
            } else if uri.starts_with("/apis/gateway.jkaninda.dev/v1alpha1/routes?") {
                held_routes_list = Some(send);
            } else {
                respond(
                    send,
                    200,
                    json!({"metadata": {"resourceVersion": "1"}, "items": []}),
                );
                lists += 1;
            }
        }
        assert!(!handles.views.is_ready(), "Route has not listed yet");
        // The Route CRD is not installed: the watch counts as listed (empty), and serving starts.
        respond(
            held_routes_list.take().expect("held"),
            404,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "reason": "NotFound", "code": 404}),
        );
        tokio::time::timeout(Duration::from_secs(10), handles.views.wait_ready())
            .await
            .expect("ready once every watch listed");

        // Shutdown: the leader clears the Lease holder, then the control plane stops.
        stop.send_replace(true);
        loop {
            let (request, send) = handle.next_request().await.expect("the release");
            if request.method() != "PUT" {
                // A retried Route list (its CRD is still missing), or a watch.
                open_watches.push(send);
                continue;
            }
            assert!(request.uri().to_string().starts_with(
                "/apis/coordination.k8s.io/v1/namespaces/sluice/leases/sluice-control-plane-leader"
            ));
            let body = request.into_body().collect_bytes().await.expect("a body");
            let lease: Value = serde_json::from_slice(&body).expect("a Lease");
            assert_eq!(lease["spec"].get("holderIdentity"), None);
            assert_eq!(lease["metadata"]["resourceVersion"], "1");
            respond(send, 200, lease);
            break;
        }
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .expect("stops")
            .expect("no panic")
            .expect("no error");
        drop(open_watches);
    }
}

//! Leader election with a `coordination.k8s.io/v1` Lease. Every replica serves xDS; only the
//! leader writes status and runs the operator. The decisions live in [`election`]; this is the
//! thin edge that reads and writes the Lease (optimistic concurrency: every replace carries the
//! resourceVersion read, so two replicas can never both win a round).

pub mod election;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use self::election::{Decision, Election, LeaseView};

pub const DEFAULT_LEASE_NAME: &str = "sluice-control-plane-leader";

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    /// `holderIdentity`: the pod name.
    pub identity: String,
    pub lease_duration: Duration,
    /// A leader that cannot renew for this long stops leading (shorter than `lease_duration`).
    pub renew_deadline: Duration,
    /// How often the leader renews and the others look.
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// The Lease `sluice-control-plane-leader` in `namespace`: 15 s, renewed every 5 s, given up
    /// after 10 s without a successful renewal.
    pub fn new(namespace: impl Into<String>, identity: impl Into<String>) -> Self {
        Self {
            name: DEFAULT_LEASE_NAME.to_owned(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(5),
        }
    }
}

type WallClock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// Campaigns for the Lease and reports leadership on a watch channel.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    election: Election,
    /// The Lease as last read or written: the base of the next replace.
    last: Option<Lease>,
    /// Wall-clock time written into `acquireTime` / `renewTime` (fixed in tests).
    clock: WallClock,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            election: Election::new(config.identity.clone(), config.renew_deadline),
            config,
            last: None,
            clock: Arc::new(Timestamp::now),
        }
    }

    #[cfg(test)]
    fn with_clock(mut self, clock: WallClock) -> Self {
        self.clock = clock;
        self
    }

    /// Campaigns every `retry_period` until `shutdown` resolves, sending `true` on `leading`
    /// while this replica leads. On shutdown a leader releases the Lease (clears its holder) so
    /// another replica takes over at its next look instead of waiting for expiry.
    pub async fn run(mut self, leading: watch::Sender<bool>, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut tick = tokio::time::interval(self.config.retry_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            tokio::select! {
                _ = &mut shutdown => break,
                _ = self.round(now) => {}
            }
            self.report(&leading, Instant::now());
        }
        if self.election.is_leading(Instant::now()) {
            self.release().await;
        }
        self.election.step_down();
        leading.send_replace(false);
    }

    fn report(&self, leading: &watch::Sender<bool>, now: Instant) {
        let is_leader = self.election.is_leading(now);
        let was = leading.send_replace(is_leader);
        match (was, is_leader) {
            (false, true) => {
                tracing::info!(identity = %self.config.identity, lease = %self.config.name, "became the leader")
            }
            (true, false) => {
                tracing::warn!(identity = %self.config.identity, lease = %self.config.name, "lost leadership")
            }
            _ => {}
        }
    }

    /// One look at the Lease and, when due, one write.
    async fn round(&mut self, now: Instant) {
        match self.api.get_opt(&self.config.name).await {
            Ok(lease) => {
                self.election
                    .observe(lease.as_ref().map(|l| self.view(l)), now);
                self.last = lease;
            }
            Err(e) => {
                tracing::warn!(lease = %self.config.name, namespace = %self.config.namespace, error = %e, "cannot read the leader Lease");
                return;
            }
        }
        let decision = self.election.decide(now);
        let result = match &decision {
            Decision::Wait { holder } => {
                // Someone else holds it now (we were too slow, or an operator edited it).
                self.election.step_down();
                tracing::debug!(%holder, "another replica leads");
                return;
            }
            Decision::Create => self.create().await,
            Decision::Acquire | Decision::Renew => self.replace(&decision).await,
        };
        match result {
            Ok(written) => {
                let view = self.view(&written);
                self.last = Some(written);
                self.election.held(view, now);
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Another replica wrote first: read again next round.
                tracing::debug!(?decision, "lost a Lease write race");
            }
            Err(e) => {
                tracing::warn!(?decision, lease = %self.config.name, error = %e, "cannot write the leader Lease");
            }
        }
    }

    fn view(&self, lease: &Lease) -> LeaseView {
        let spec = lease.spec.as_ref();
        LeaseView {
            holder: spec
                .and_then(|s| s.holder_identity.clone())
                .unwrap_or_default(),
            lease_duration: spec
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(self.config.lease_duration),
            resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }

    async fn create(&self) -> Result<Lease, kube::Error> {
        let now = MicroTime((self.clock)());
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(self.duration_seconds()),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            }),
        };
        self.api.create(&PostParams::default(), &lease).await
    }

    /// Takes over or renews the Lease last read; its resourceVersion makes the write fail with
    /// 409 if anyone wrote in between.
    async fn replace(&self, decision: &Decision) -> Result<Lease, kube::Error> {
        let mut lease = self.last.clone().unwrap_or_default();
        let now = MicroTime((self.clock)());
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if *decision == Decision::Acquire {
            let previous = spec.holder_identity.as_deref().unwrap_or_default();
            if previous != self.config.identity {
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(self.duration_seconds());
        spec.renew_time = Some(now);
        self.api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
    }

    /// Clears the holder so the next replica to look takes over at once. A conflict (the Lease
    /// changed since it was last read: a renewal cut short by the shutdown) is retried once on a
    /// fresh read, if the Lease is still ours.
    async fn release(&mut self) {
        for _ in 0..2 {
            let Some(mut lease) = self.last.clone() else {
                return;
            };
            let now = MicroTime((self.clock)());
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now);
            match self
                .api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => {
                    tracing::info!(lease = %self.config.name, "released the leader Lease");
                    return;
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    self.last = match self.api.get_opt(&self.config.name).await {
                        Ok(Some(lease)) if self.view(&lease).holder == self.config.identity => {
                            Some(lease)
                        }
                        // Gone, or someone else's now: nothing to release.
                        Ok(_) => return,
                        Err(e) => {
                            tracing::warn!(lease = %self.config.name, error = %e, "cannot release the leader Lease; it expires on its own");
                            return;
                        }
                    };
                }
                Err(e) => {
                    tracing::warn!(lease = %self.config.name, error = %e, "cannot release the leader Lease; it expires on its own");
                    return;
                }
            }
        }
    }
}

/// Starts campaigning in the background; the receiver says whether this replica leads.
pub fn spawn(
    client: Client,
    config: LeaseConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(LeaderElector::new(client, config).run(tx, shutdown));
    (rx, task)
}

#[cfg(test)]
mod tests {
    //! The Lease API calls against kube-rs's mock service: exact requests, on paused time.
    use super::*;
    use http::{Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    const LEASE_URL: &str =
        "/apis/coordination.k8s.io/v1/namespaces/sluice/leases/sluice-control-plane-leader";
    const LEASES_URL: &str = "/apis/coordination.k8s.io/v1/namespaces/sluice/leases";
    const T0: &str = "2026-01-02T03:04:05.123456Z";

    fn start(identity: &str) -> (Handle, watch::Receiver<bool>, watch::Sender<bool>) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, "default");
        let clock: WallClock = Arc::new(|| T0.parse().expect("a timestamp"));
        let elector =
            LeaderElector::new(client, LeaseConfig::new("sluice", identity)).with_clock(clock);
        let (leading_tx, leading) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let shutdown = async move {
            let mut stop_rx = stop_rx;
            let _ = stop_rx.wait_for(|s| *s).await;
        };
        tokio::spawn(elector.run(leading_tx, shutdown));
        (handle, leading, stop)
    }

    fn lease(holder: Option<&str>, rv: &str, transitions: i32) -> Value {
        let mut spec = json!({"leaseDurationSeconds": 15, "leaseTransitions": transitions,
            "acquireTime": "2026-01-01T00:00:00.000000Z", "renewTime": "2026-01-01T00:00:00.000000Z"});
        if let Some(holder) = holder {
            spec["holderIdentity"] = json!(holder);
        }
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "sluice-control-plane-leader", "namespace": "sluice", "resourceVersion": rv},
            "spec": spec})
    }

    fn not_found() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": "NotFound", "code": 404, "message": "leases.coordination.k8s.io not found"})
    }

    fn unavailable() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": "ServiceUnavailable", "code": 503, "message": "down"})
    }

    fn conflict() -> Value {
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": "Conflict", "code": 409, "message": "the object has been modified"})
    }

    /// The next request: method, URI and JSON body (Null when empty); answered with `status`
    /// and `reply`.
    async fn exchange(handle: &mut Handle, status: u16, reply: Value) -> (String, String, Value) {
        let (request, send) = handle.next_request().await.expect("a request");
        let method = request.method().to_string();
        let uri = request.uri().to_string();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("a request body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        let response = Response::builder()
            .status(StatusCode::from_u16(status).expect("a status"))
            .body(Body::from(serde_json::to_vec(&reply).expect("JSON")))
            .expect("a response");
        send.send_response(response);
        (method, uri, body)
    }

    async fn until(leading: &mut watch::Receiver<bool>, value: bool) {
        tokio::time::timeout(Duration::from_secs(60), leading.wait_for(|l| *l == value))
            .await
            .expect("in time")
            .expect("the elector is running");
    }

    #[tokio::test(start_paused = true)]
    async fn creates_renews_and_releases_the_lease() {
        let (mut handle, mut leading, stop) = start("pod-a");
        let (method, uri, _) = exchange(&mut handle, 404, not_found()).await;
        assert_eq!((method.as_str(), uri.as_str()), ("GET", LEASE_URL));

        let created = lease(Some("pod-a"), "1", 0);
        let (method, uri, body) = exchange(&mut handle, 201, created.clone()).await;
        assert_eq!(
            (method.as_str(), uri.as_str()),
            ("POST", format!("{LEASES_URL}?").as_str())
        );
        assert_eq!(
            body,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                "metadata": {"name": "sluice-control-plane-leader", "namespace": "sluice"},
                "spec": {"holderIdentity": "pod-a", "leaseDurationSeconds": 15, "leaseTransitions": 0,
                         "acquireTime": T0, "renewTime": T0}})
        );
        until(&mut leading, true).await;

        // Five seconds later: read, then renew with the resourceVersion read.
        let started = Instant::now();
        let (method, uri, _) = exchange(&mut handle, 200, created).await;
        assert_eq!((method.as_str(), uri.as_str()), ("GET", LEASE_URL));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        let renewed = lease(Some("pod-a"), "2", 0);
        let (method, uri, body) = exchange(&mut handle, 200, renewed).await;
        assert_eq!(
            (method.as_str(), uri.as_str()),
            ("PUT", format!("{LEASE_URL}?").as_str())
        );
        assert_eq!(body["metadata"]["resourceVersion"], "1");
        assert_eq!(body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(body["spec"]["renewTime"], T0);
        // A renewal keeps the acquisition time and the transition count.
        assert_eq!(body["spec"]["acquireTime"], "2026-01-01T00:00:00.000000Z");
        assert_eq!(body["spec"]["leaseTransitions"], 0);
        assert!(*leading.borrow());
        // The next read fails: no write this round, so the renewal above is the last known state.
        let (method, _, _) = exchange(&mut handle, 503, unavailable()).await;
        assert_eq!(method, "GET");

        // Shutdown: the holder is cleared so another replica takes over at once.
        stop.send_replace(true);
        let (method, uri, body) = exchange(&mut handle, 200, lease(None, "3", 0)).await;
        assert_eq!(
            (method.as_str(), uri.as_str()),
            ("PUT", format!("{LEASE_URL}?").as_str())
        );
        assert_eq!(body["metadata"]["resourceVersion"], "2");
        assert_eq!(body["spec"].get("holderIdentity"), None);
        assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
        until(&mut leading, false).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_follower_takes_over_an_expired_or_released_lease() {
        let (mut handle, mut leading, _stop) = start("pod-a");
        let started = Instant::now();
        // pod-b holds it and stops renewing: no write until 15 s after the version was first seen.
        let held = lease(Some("pod-b"), "5", 2);
        for _ in 0..3 {
            let (method, _, _) = exchange(&mut handle, 200, held.clone()).await;
            assert_eq!(method, "GET");
        }
        assert_eq!(started.elapsed(), Duration::from_secs(10));
        let (method, _, _) = exchange(&mut handle, 200, held.clone()).await;
        assert_eq!(method, "GET");
        let (method, uri, body) = exchange(&mut handle, 409, conflict()).await;
        assert_eq!(started.elapsed(), Duration::from_secs(15));
        assert_eq!(
            (method.as_str(), uri.as_str()),
            ("PUT", format!("{LEASE_URL}?").as_str())
        );
        assert_eq!(body["metadata"]["resourceVersion"], "5");
        assert_eq!(body["spec"]["holderIdentity"], "pod-a");
        assert_eq!(body["spec"]["leaseTransitions"], 3);
        assert_eq!(body["spec"]["acquireTime"], T0);
        // Someone else wrote first (the 409): not leading.
        assert!(!*leading.borrow());

        // Next look: pod-b released it: taken at once.
        let (method, _, _) = exchange(&mut handle, 200, lease(None, "6", 2)).await;
        assert_eq!(method, "GET");
        let (method, _, body) = exchange(&mut handle, 200, lease(Some("pod-a"), "7", 3)).await;
        assert_eq!(method, "PUT");
        assert_eq!(body["metadata"]["resourceVersion"], "6");
        until(&mut leading, true).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_steps_down() {
        let (mut handle, mut leading, _stop) = start("pod-a");
        exchange(&mut handle, 200, lease(Some("pod-a"), "1", 0)).await;
        exchange(&mut handle, 200, lease(Some("pod-a"), "2", 0)).await;
        until(&mut leading, true).await;
        let started = Instant::now();
        // The API server is unreachable (every read fails).
        exchange(&mut handle, 503, unavailable()).await;
        assert!(*leading.borrow(), "still within the renew deadline");
        exchange(&mut handle, 503, unavailable()).await;
        until(&mut leading, false).await;
        assert!(started.elapsed() <= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_that_conflicts_is_retried_on_a_fresh_read() {
        let (mut handle, mut leading, stop) = start("pod-a");
        exchange(&mut handle, 200, lease(Some("pod-a"), "1", 0)).await;
        exchange(&mut handle, 200, lease(Some("pod-a"), "2", 0)).await;
        until(&mut leading, true).await;
        exchange(&mut handle, 503, unavailable()).await;
        stop.send_replace(true);
        // Our last known version is stale (say, a renewal landed but its answer was lost).
        let (method, _, body) = exchange(&mut handle, 409, conflict()).await;
        assert_eq!(method, "PUT");
        assert_eq!(body["metadata"]["resourceVersion"], "2");
        let (method, uri, _) = exchange(&mut handle, 200, lease(Some("pod-a"), "4", 0)).await;
        assert_eq!((method.as_str(), uri.as_str()), ("GET", LEASE_URL));
        let (method, _, body) = exchange(&mut handle, 200, lease(None, "5", 0)).await;
        assert_eq!(method, "PUT");
        assert_eq!(body["metadata"]["resourceVersion"], "4");
        assert_eq!(body["spec"].get("holderIdentity"), None);
        until(&mut leading, false).await;
    }
}

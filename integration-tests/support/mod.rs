//! Shared helpers for the end-to-end tests: run the real `sluice` binary, echo backends, HTTP
//! requests, and polling with deadlines (never fixed sleeps to wait for a condition).
#![allow(dead_code)]

pub mod apiserver;
pub mod l4;
pub mod redis;
pub mod slapd;
pub mod xds;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_sluice");

/// A port that was free a moment ago, and never handed out before in this test binary: the
/// kernel may give a closed listener's port out again at once, and two of a test's services on
/// one port fail to start (an admin endpoint that lost its port to the xDS server never answers).
pub fn free_port() -> u16 {
    static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        if GIVEN.lock().expect("ports given").insert(port) {
            return port;
        }
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sluice-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    /// Writes atomically (temp file + rename), as editors and ConfigMap updates do.
    pub fn write(&self, name: &str, text: &str) {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        let tmp = self.0.join(format!(".{}.tmp", name.replace('/', "_")));
        std::fs::write(&tmp, text).expect("write temp file");
        std::fs::rename(&tmp, &path).expect("rename into place");
    }
    pub fn remove(&self, name: &str) {
        std::fs::remove_file(self.0.join(name)).expect("remove file");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `sluice` process, killed when dropped; its output goes to a log file.
pub struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "sluice-proc-{}-{}.log",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log handle");
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("NO_COLOR", "1");
        if !env.iter().any(|(k, _)| *k == "RUST_LOG") {
            cmd.env("RUST_LOG", "info");
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn sluice");
        Self { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`; panics with the log after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("log never contained {needle:?}:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and returns the exit status; panics (with the log) if the process is
    /// still running after `timeout`.
    pub fn terminate(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("still running {timeout:?} after SIGTERM:\n{}", self.log());
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of sluice {:?} ---\n{}", self.log, self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Installs Debian `packages` (as root, non-interactively) unless `present()` already holds; a
/// fresh machine has no package lists yet, so a failed install refreshes them once and retries.
pub fn ensure_debian_packages(packages: &[&str], present: impl Fn() -> bool) {
    if present() {
        return;
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(packages);
    let names = packages.join(" ");
    if !apt(&install) {
        assert!(apt(&["update"]), "apt-get update failed");
        assert!(apt(&install), "apt-get install {names} failed");
    }
    assert!(present(), "{names} still missing after apt-get install");
}

/// An echo backend (the binary's `echo` subcommand) reporting `name`.
pub fn echo(name: &str) -> (Proc, u16) {
    echo_with(name, &[])
}

/// An echo backend with extra `sluice echo` flags (e.g. `--status 500`).
pub fn echo_with(name: &str, extra: &[&str]) -> (Proc, u16) {
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut args = vec!["echo", "--listen", &listen, "--name", name];
    args.extend_from_slice(extra);
    let p = Proc::start(&args, &[]);
    p.wait_log("echo backend listening", Duration::from_secs(10));
    (p, port)
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
    /// The echo backend that served the request.
    pub fn backend(&self) -> String {
        self.json()["backend"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

pub async fn request(
    client: &HttpClient,
    method: &str,
    port: u16,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    request_at(client, method, "127.0.0.1", port, host, path, headers).await
}

/// [`request`] to another loopback address (`ip`), e.g. a second data plane on 127.0.0.2.
pub async fn request_at(
    client: &HttpClient,
    method: &str,
    ip: &str,
    port: u16,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let mut req = http::Request::builder()
        .method(method)
        .uri(format!("http://{ip}:{port}{path}"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Empty::new()).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

pub async fn get(client: &HttpClient, port: u16, host: &str, path: &str) -> Reply {
    request(client, "GET", port, host, path, &[])
        .await
        .unwrap_or_else(|e| panic!("GET {host}{path} on :{port}: {e}"))
}

/// Polls `f` until it returns true; panics after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `GET path` with Host `host` on `port` until it answers 200; panics after `timeout`.
pub async fn wait_ok(port: u16, host: &str, path: &str, timeout: Duration) {
    let c = client();
    let what = format!("GET {host}{path} on :{port} answers 200");
    eventually(&what, timeout, || {
        let c = c.clone();
        async move {
            matches!(request(&c, "GET", port, host, path, &[]).await, Ok(r) if r.status == 200)
        }
    })
    .await;
}

/// Waits until a data plane's admin endpoint reports ready.
pub async fn wait_ready(admin_port: u16) {
    wait_ok(admin_port, "localhost", "/readyz", Duration::from_secs(20)).await;
}

/// A Goma Gateway manifest listening on `port`.
pub fn gateway_yaml(name: &str, port: u16) -> String {
    format!(
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  service:\n    httpPort: {port}\n"
    )
}

/// A `kubernetes.io/tls` Secret manifest `default/<name>` holding a PEM chain and key.
pub fn tls_secret_yaml(name: &str, cert_pem: &str, key_pem: &str) -> String {
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n{}  tls.key: |\n{}",
        indent(cert_pem),
        indent(key_pem)
    )
}

/// A Goma Route manifest with one target.
pub fn route_yaml(name: &str, gateway: &str, path: &str, target_port: u16, extra: &str) -> String {
    format!(
        "apiVersion: gateway.jkaninda.dev/v1alpha1\nkind: Route\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  gateways: [{gateway}]\n  path: {path}\n  target: http://127.0.0.1:{target_port}\n{extra}"
    )
}

/// Routes `r0`..`r{count-1}` on paths `/r<i>` of `gateway`, all to `target_port`, written in
/// files of 500 (as large configs are split in practice).
pub fn write_numbered_routes(dir: &TempDir, gateway: &str, count: usize, target_port: u16) {
    let mut chunk = String::new();
    for i in 0..count {
        chunk.push_str(&route_yaml(
            &format!("r{i}"),
            gateway,
            &format!("/r{i}"),
            target_port,
            "",
        ));
        chunk.push_str("---\n");
        if (i + 1) % 500 == 0 {
            dir.write(&format!("chunk-{i}.yaml"), &chunk);
            chunk.clear();
        }
    }
    if !chunk.is_empty() {
        dir.write("chunk-last.yaml", &chunk);
    }
}

/// `sluice standalone` on `dir`, one data plane for `default/<gateway>`; returns the process and
/// the xDS port once the data plane is ready.
pub async fn standalone(dir: &Path, gateway: &str, admin_port: u16) -> (Proc, u16) {
    let xds = free_port();
    let p = Proc::start(
        &[
            "standalone",
            "--config",
            dir.to_str().expect("utf-8 path"),
            "--xds-listen",
            &format!("127.0.0.1:{xds}"),
            "--admin-port",
            &admin_port.to_string(),
            "--gateway",
            &format!("default/{gateway}"),
        ],
        &[],
    );
    wait_ready(admin_port).await;
    (p, xds)
}

/// `sluice control-plane` on the manifests of `dir`, serving xDS on 127.0.0.1:`xds`.
pub fn control_plane(dir: &Path, xds: u16, env: &[(&str, &str)]) -> Proc {
    Proc::start(
        &[
            "control-plane",
            "--config",
            dir.to_str().expect("utf-8 path"),
            "--listen",
            &format!("127.0.0.1:{xds}"),
        ],
        env,
    )
}

/// `sluice data-plane` for `gateway` ("ns/name") against 127.0.0.1:`xds`, listeners on loopback,
/// admin on 127.0.0.1:`admin`; `extra` arguments are appended.
pub fn data_plane(
    gateway: &str,
    xds: u16,
    admin: u16,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Proc {
    let xds = format!("http://127.0.0.1:{xds}");
    let admin = format!("127.0.0.1:{admin}");
    let mut args = vec![
        "data-plane",
        "--gateway",
        gateway,
        "--xds",
        &xds,
        "--bind",
        "127.0.0.1",
        "--admin",
        &admin,
    ];
    args.extend_from_slice(extra);
    Proc::start(&args, env)
}

/// Reads until the server closes the connection (EOF or reset); panics after `timeout`.
pub async fn closed_by_server(stream: &mut tokio::net::TcpStream, timeout: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let result = tokio::time::timeout(timeout, async {
        loop {
            match tokio::io::AsyncReadExt::read(stream, &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(result.is_ok(), "connection still open after {timeout:?}");
    got
}

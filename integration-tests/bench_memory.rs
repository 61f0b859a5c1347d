//! Memory benchmark through the real release binary: resident memory (RSS) of the data plane and
//! the control plane at idle (one route), with 10,000 routes, and with 10,000 open keep-alive
//! client connections; nginx serving the same connections is the anchor, from the same run.
//!
//! Run: `cargo bench --bench memory` (MEMORY_ROUTES and MEMORY_CONNECTIONS choose the sizes).
//! Needs `ulimit -n` above twice the connection count and nginx on PATH (/usr/sbin too) for the
//! anchor; without nginx its column is left out.

#[path = "support/mod.rs"]
mod support;

use std::path::Path;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Resident set of `pid` and its descendants (nginx: master and workers), in KiB.
fn tree_rss_kib(pid: u32) -> u64 {
    let mut total = 0;
    let mut pending = vec![pid];
    while let Some(p) = pending.pop() {
        if let Ok(status) = std::fs::read_to_string(format!("/proc/{p}/status")) {
            total += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            pending.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}

/// A Goma config with `routes` proxied routes plus one maintenance route answering directly.
fn write_config(dir: &TempDir, gw_port: u16, backend_port: u16, routes: usize) {
    dir.write("gw.yaml", &gateway_yaml("gw", gw_port));
    write_numbered_routes(dir, "gw", routes, backend_port);
    dir.write(
        "direct.yaml",
        &route_yaml(
            "direct",
            "gw",
            "/direct",
            backend_port,
            "  maintenance: {enabled: true, status: 200, body: ok}\n",
        ),
    );
}

/// Opens `n` connections to `port`, each completing one keep-alive request for `path`, and
/// returns them open.
async fn open_connections(port: u16, n: usize, path: &str) -> Vec<TcpStream> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: bench.example.com\r\n\r\n");
    let mut open = Vec::with_capacity(n);
    for batch in 0..n.div_ceil(250) {
        let size = 250.min(n - batch * 250);
        let tasks: Vec<_> = (0..size)
            .map(|_| {
                let request = request.clone();
                tokio::spawn(async move {
                    let mut s = TcpStream::connect(("127.0.0.1", port))
                        .await
                        .expect("connect");
                    s.write_all(request.as_bytes()).await.expect("write");
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.expect("read");
                    assert!(
                        buf[..n].starts_with(b"HTTP/1.1 200"),
                        "{}",
                        String::from_utf8_lossy(&buf[..n])
                    );
                    s
                })
            })
            .collect();
        for t in tasks {
            open.push(t.await.expect("task"));
        }
    }
    open
}

/// Settles allocator state before a reading: RSS moves for a moment after a burst.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(500)).await;
}

struct Sluice {
    _cp: Proc,
    dp: Proc,
    cp_pid: u32,
    port: u16,
}

async fn start_sluice(routes: usize, backend_port: u16, dir: &TempDir) -> Sluice {
    let port = free_port();
    let admin = free_port();
    let xds = free_port();
    write_config(dir, port, backend_port, routes);
    let cp = control_plane(dir.path(), xds, &[("RUST_LOG", "warn")]);
    let dp = data_plane("default/gw", xds, admin, &[], &[("RUST_LOG", "warn")]);
    wait_ready(admin).await;
    wait_ok(port, "x", "/direct", Duration::from_secs(60)).await;
    if routes > 0 {
        // Large pushes arrive in several responses: wait for the last route too.
        let last = format!("/r{}", routes - 1);
        wait_ok(port, "x", &last, Duration::from_secs(60)).await;
    }
    settle().await;
    Sluice {
        cp_pid: cp.pid(),
        _cp: cp,
        dp,
        port,
    }
}

/// nginx in the foreground, killed on drop.
struct Nginx(std::process::Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nginx(port: u16, dir: &TempDir) -> Option<Nginx> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let conf = format!(
        "daemon off;\nworker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log warn;\nworker_rlimit_nofile 20000;\nevents {{ worker_connections 16384; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {dir};\n  proxy_temp_path {dir};\n  fastcgi_temp_path {dir};\n  uwsgi_temp_path {dir};\n  scgi_temp_path {dir};\n  keepalive_timeout 300s;\n  keepalive_requests 100000;\n  server {{\n    listen 127.0.0.1:{port};\n    location / {{ return 200 \"ok\"; }}\n  }}\n}}\n",
        dir = dir.path().display()
    );
    dir.write("nginx.conf", &conf);
    let conf_path = dir.path().join("nginx.conf");
    let child = std::process::Command::new(nginx)
        .args(["-c", conf_path.to_str()?, "-p", dir.path().to_str()?])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()?;
    Some(Nginx(child))
}

fn kib(v: u64) -> String {
    if v >= 10 * 1024 {
        format!("{:.1} MiB", v as f64 / 1024.0)
    } else {
        format!("{v} KiB")
    }
}

async fn run(routes: usize, connections: usize) {
    let (_echo, backend_port) = echo("memory");

    let idle_dir = TempDir::new("memory-idle");
    let idle = start_sluice(0, backend_port, &idle_dir).await;
    let dp_idle = tree_rss_kib(idle.dp.pid());
    let cp_idle = tree_rss_kib(idle.cp_pid);
    drop(idle);

    let full_dir = TempDir::new("memory-routes");
    let full = start_sluice(routes, backend_port, &full_dir).await;
    let dp_routes = tree_rss_kib(full.dp.pid());
    let cp_routes = tree_rss_kib(full.cp_pid);

    let conns = open_connections(full.port, connections, "/direct").await;
    settle().await;
    let dp_conns = tree_rss_kib(full.dp.pid());
    drop(conns);
    drop(full);

    let nginx_dir = TempDir::new("memory-nginx");
    let nginx_port = free_port();
    let nginx = match start_nginx(nginx_port, &nginx_dir) {
        Some(p) => {
            wait_ok(nginx_port, "x", "/", Duration::from_secs(10)).await;
            settle().await;
            let before = tree_rss_kib(p.0.id());
            let conns = open_connections(nginx_port, connections, "/").await;
            settle().await;
            let after = tree_rss_kib(p.0.id());
            drop(conns);
            Some((before, after))
        }
        None => None,
    };

    let per = |delta: u64, n: usize| delta as f64 * 1024.0 / n.max(1) as f64;
    println!(
        "| process | idle (1 route) | {routes} routes | per route | + {connections} connections | per connection |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    println!(
        "| sluice data plane | {} | {} | {:.2} KiB | {} | {:.0} B |",
        kib(dp_idle),
        kib(dp_routes),
        per(dp_routes.saturating_sub(dp_idle), routes) / 1024.0,
        kib(dp_conns),
        per(dp_conns.saturating_sub(dp_routes), connections),
    );
    println!(
        "| sluice control plane | {} | {} | {:.2} KiB | – | – |",
        kib(cp_idle),
        kib(cp_routes),
        per(cp_routes.saturating_sub(cp_idle), routes) / 1024.0,
    );
    if let Some((before, after)) = nginx {
        println!(
            "| nginx (1 worker, `return 200`) | {} | – | – | {} | {:.0} B |",
            kib(before),
            kib(after),
            per(after.saturating_sub(before), connections),
        );
        println!(
            "\nper-connection ratio sluice / nginx: {:.2}",
            per(dp_conns.saturating_sub(dp_routes), connections)
                / per(after.saturating_sub(before), connections).max(1.0)
        );
    }
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    let routes = env("MEMORY_ROUTES", 10_000);
    let connections = env("MEMORY_CONNECTIONS", 10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(routes, connections));
}

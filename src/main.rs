//! The `sluice` binary: CLI wiring only. The work lives in the control-plane and data-plane crates.

mod block_cache;
mod echo;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use sluice_control_plane::leader::LeaseConfig;
use sluice_control_plane::model::gateway_api::ApiObject;
use sluice_control_plane::model::{Object, ObjectKey};
use sluice_control_plane::operator::OperatorSettings;
use sluice_control_plane::run::{
    Handles, KubernetesOptions, kubernetes_client, run_file_control_plane,
    run_kubernetes_control_plane,
};
use sluice_control_plane::security::admin_cert;
use sluice_control_plane::security::ca_store::{load_or_create_in_dir, load_or_create_in_secret};
use sluice_control_plane::security::{
    AdminAccess, AdminIdentity, AdminScope, AdminTokens, Authenticator, BootstrapTokens,
    PodLiveness, Revocations, Security, TlsMaterial, TokenReviewer, revocation,
};
use sluice_control_plane::translate::gateway_api::index::Index;
use sluice_control_plane::translate::gateway_api::is_our_class;
use sluice_data_plane::pod::{self, PodOptions};
use sluice_data_plane::xds::{ClientOptions, XdsTls};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

#[derive(Parser)]
#[command(
    name = "sluice",
    version,
    about = "Kubernetes gateway: delta-xDS control plane and data plane"
)]
struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "SLUICE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Async worker threads (default: one per core). 1 runs everything on the main thread.
    #[arg(long, global = true, env = "SLUICE_WORKER_THREADS")]
    worker_threads: Option<usize>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Control plane and data planes in one process, on the manifests of a directory.
    Standalone(StandaloneArgs),
    /// The control plane: watches manifests and serves delta xDS.
    ControlPlane(ControlPlaneArgs),
    /// A data plane for one gateway, configured by a control plane.
    DataPlane(DataPlaneArgs),
    /// Checks the manifests of a directory and reports every problem; exits 1 if any.
    Validate {
        /// Directory of manifests (searched recursively).
        dir: PathBuf,
    },
    /// Prints the Goma CRDs (Gateway, Route, Middleware) as one multi-document YAML stream.
    Crds {
        /// Write one file per CRD and a kustomization.yaml into this directory instead.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Signs an admin client certificate for the inspection service with the control plane's
    /// CA, offline (docs/security.md, "Inspection").
    AdminCert(AdminCertArgs),
    /// A JSON echo backend (for demos and tests).
    Echo {
        #[arg(long, default_value = "127.0.0.1:9101")]
        listen: SocketAddr,
        /// Name reported in every response.
        #[arg(long, default_value = "echo")]
        name: String,
        /// Status of every answer (a request's x-echo-status still wins), e.g. 500 for a
        /// failing backend.
        #[arg(long, value_parser = parse_status)]
        status: Option<hyper::StatusCode>,
        /// While this file exists, GET /healthz answers 503: fails the backend's active health
        /// check without failing its traffic.
        #[arg(long)]
        health_fail_file: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct ControlPlaneArgs {
    /// Directory of manifests (Goma and Gateway API kinds, Services, ...), watched recursively.
    #[arg(long, default_value = "examples")]
    config: PathBuf,
    /// Watch the Kubernetes API instead of a directory (in-cluster service account, else
    /// KUBECONFIG). Every replica serves xDS; the Lease holder also writes status.
    #[arg(long, conflicts_with = "config")]
    kubernetes: bool,
    /// With --kubernetes: watch namespaced kinds in this namespace only (default: all).
    #[arg(long, requires = "kubernetes")]
    namespace: Option<String>,
    /// With --kubernetes: namespace of the leader Lease (default: the client's namespace, i.e.
    /// the pod's in a cluster).
    #[arg(long, env = "POD_NAMESPACE", requires = "kubernetes")]
    lease_namespace: Option<String>,
    /// With --kubernetes: this replica's identity in the Lease (default: host name and pid).
    #[arg(long, env = "POD_NAME", requires = "kubernetes")]
    pod_name: Option<String>,
    /// With --kubernetes: image of the data-plane pods the operator runs for a Gateway that
    /// names none (default: this version's `sluice` image).
    #[arg(long, env = "SLUICE_DATA_PLANE_IMAGE", requires = "kubernetes")]
    data_plane_image: Option<String>,
    /// With --kubernetes: the xDS address data-plane pods connect to (default: the Service
    /// `deploy/` installs).
    #[arg(long, env = "SLUICE_DATA_PLANE_XDS", requires = "kubernetes")]
    data_plane_xds: Option<String>,
    /// xDS and inspection gRPC address.
    #[arg(long, default_value = "127.0.0.1:18000")]
    listen: SocketAddr,
    /// Serve plaintext xDS on a non-loopback address. Data planes are not authenticated then:
    /// only for trusted networks. Without it a non-loopback address is served over TLS.
    #[arg(long, conflicts_with_all = ["xds_tls", "xds_tls_dir"])]
    allow_remote_plaintext: bool,
    /// Serve xDS over TLS with the control plane's own CA, and require data planes to
    /// authenticate (client certificates obtained with a bootstrap token). With --kubernetes the
    /// CA is kept in a Secret of the control plane's namespace. Implied by --xds-tls-dir and by
    /// a non-loopback --listen.
    #[arg(long)]
    xds_tls: bool,
    /// Keep the CA in this directory (ca.crt, ca.key; created when absent). Implies --xds-tls.
    #[arg(long, conflicts_with = "kubernetes")]
    xds_tls_dir: Option<PathBuf>,
    /// With --kubernetes and TLS: the CA Secret in the control plane's namespace.
    #[arg(long, default_value = sluice_control_plane::security::ca_store::DEFAULT_CA_SECRET)]
    xds_ca_secret: String,
    /// Names (DNS or IP) the xDS server certificate carries, comma-separated (default:
    /// localhost, 127.0.0.1, and the `sluice-control-plane` Service's names in Kubernetes).
    #[arg(long, value_delimiter = ',')]
    xds_server_names: Vec<String>,
    /// Outside Kubernetes with TLS: bootstrap tokens, one `TOKEN NAMESPACE/GATEWAY POD_PATTERN`
    /// per line (POD_PATTERN a name or a prefix ending in `*`).
    #[arg(long, conflicts_with = "kubernetes")]
    xds_bootstrap_tokens: Option<PathBuf>,
    /// With --kubernetes and TLS: the audience of the data planes' projected tokens.
    #[arg(long, default_value = sluice_control_plane::security::tokens::DEFAULT_TOKEN_AUDIENCE)]
    xds_token_audience: String,
    /// Lifetime of the client certificates issued to data planes, in seconds (renewed at 2/3).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(10..))]
    xds_client_cert_seconds: u64,
    /// Revoked pods and client certificates, one `pod NAMESPACE/POD` or `serial HEX` per line,
    /// re-read every second: a revoked pod's streams are closed and its certificates refused.
    #[arg(long)]
    xds_revoked: Option<PathBuf>,
    /// Admin tokens for the inspection service, one `TOKEN *` or `TOKEN NS1,NS2` per line.
    /// Without it the inspection service is open on loopback plaintext and closed otherwise.
    #[arg(long, env = "SLUICE_ADMIN_TOKENS")]
    admin_tokens: Option<PathBuf>,
    /// Also serve the gRPC health service (only) in plaintext on this address, for kubelet
    /// gRPC probes, which cannot speak TLS.
    #[arg(long)]
    health_listen: Option<SocketAddr>,
    #[command(flatten)]
    limits: XdsLimitArgs,
}

#[derive(clap::Args)]
struct AdminCertArgs {
    /// The control plane's CA directory (its --xds-tls-dir: ca.crt, ca.key). In Kubernetes,
    /// export the CA Secret into a directory first (docs/security.md).
    #[arg(long)]
    xds_tls_dir: PathBuf,
    /// Who the certificate is for (letters, digits, '-', '.', '_'); names the files too.
    #[arg(long)]
    name: String,
    /// The namespaces whose gateways it may inspect, comma-separated, or '*' for every one.
    #[arg(long)]
    namespaces: String,
    /// How long it is valid: a number and s, m, h or d (at most 365d).
    #[arg(long, default_value = "24h", value_parser = admin_cert::parse_validity)]
    valid_for: Duration,
    /// Where to write NAME.crt and NAME.key (mode 0600); existing files are not overwritten.
    #[arg(long)]
    out: PathBuf,
}

/// Storm protection of the xDS server.
#[derive(clap::Args)]
struct XdsLimitArgs {
    /// Streams building their pushes at the same time.
    #[arg(long, default_value_t = sluice_control_plane::xds::Limits::default().max_concurrent_pushes)]
    max_concurrent_pushes: usize,
    /// Sustained rate of new xDS streams; faster ones get UNAVAILABLE with a retry hint.
    #[arg(long, default_value_t = sluice_control_plane::xds::Limits::default().new_streams_per_second)]
    new_streams_per_second: f64,
    /// New xDS streams admitted at once before the rate applies.
    #[arg(long, default_value_t = sluice_control_plane::xds::Limits::default().new_stream_burst)]
    new_stream_burst: u32,
}

impl XdsLimitArgs {
    /// The registry of data-plane streams, admitting them under these limits.
    fn clients(&self) -> Arc<sluice_control_plane::xds::Clients> {
        let limits = sluice_control_plane::xds::Limits {
            max_concurrent_pushes: self.max_concurrent_pushes,
            new_streams_per_second: self.new_streams_per_second,
            new_stream_burst: self.new_stream_burst,
        };
        Arc::new(sluice_control_plane::xds::Clients::with_limits(limits))
    }
}

#[derive(clap::Args)]
struct DataPlaneArgs {
    /// The gateway this pod serves, "namespace/name".
    #[arg(long, env = "SLUICE_GATEWAY")]
    gateway: String,
    /// Control-plane address; `https://` for TLS (needs --xds-ca or --xds-ca-file).
    #[arg(long, default_value = "http://127.0.0.1:18000", env = "SLUICE_XDS")]
    xds: String,
    /// The control plane's CA certificate (PEM text), as the bootstrap ConfigMap carries it.
    #[arg(long, env = "SLUICE_XDS_CA", hide_env_values = true)]
    xds_ca: Option<String>,
    /// The control plane's CA certificate file (PEM).
    #[arg(long, env = "SLUICE_XDS_CA_FILE", conflicts_with = "xds_ca")]
    xds_ca_file: Option<PathBuf>,
    /// The name the control plane's certificate must carry (default: the host of --xds).
    #[arg(long, env = "SLUICE_XDS_SERVER_NAME")]
    xds_server_name: Option<String>,
    /// The bootstrap token file, exchanged for a client certificate (a projected ServiceAccount
    /// token in Kubernetes; re-read at every use).
    #[arg(long, env = "SLUICE_XDS_TOKEN_FILE")]
    xds_token_file: Option<PathBuf>,
    /// Pod identity; defaults to the host name and process id.
    #[arg(long, env = "SLUICE_NODE_ID")]
    node_id: Option<String>,
    /// Address the traffic listeners bind to.
    #[arg(long, default_value = "0.0.0.0")]
    bind: IpAddr,
    /// Admin endpoint (/healthz, /readyz, /metrics, /config_dump).
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// Longest time in-flight requests get to finish at shutdown, in seconds.
    #[arg(long, default_value_t = 10)]
    drain_seconds: u64,
    /// Log one line per request (target "access", in the --log-format).
    #[arg(long, env = "SLUICE_ACCESS_LOG")]
    access_log: bool,
    /// MaxMind country database (.mmdb, e.g. GeoLite2-Country) for geoBlock middlewares;
    /// without one every client's country is unknown.
    #[arg(long, env = "SLUICE_GEOIP_DATABASE")]
    geoip_database: Option<PathBuf>,
}

#[derive(clap::Args)]
struct StandaloneArgs {
    /// Directory of manifests, watched recursively.
    #[arg(long, default_value = "examples")]
    config: PathBuf,
    /// xDS and inspection gRPC address (loopback only).
    #[arg(long, default_value = "127.0.0.1:18000")]
    xds_listen: SocketAddr,
    /// Gateways to run a data plane for ("namespace/name", repeatable). Default: every Goma
    /// Gateway in the directory at start.
    #[arg(long = "gateway")]
    gateways: Vec<String>,
    /// Address the traffic listeners bind to.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// First admin port; the data planes use consecutive ports from it.
    #[arg(long, default_value_t = 9901)]
    admin_port: u16,
    /// Also start a JSON echo backend on every loopback backend address the routes name, so the
    /// examples answer at once.
    #[arg(long)]
    demo_backends: bool,
    /// Log one line per request (target "access", in the --log-format).
    #[arg(long, env = "SLUICE_ACCESS_LOG")]
    access_log: bool,
    /// MaxMind country database (.mmdb, e.g. GeoLite2-Country) for geoBlock middlewares;
    /// without one every client's country is unknown.
    #[arg(long, env = "SLUICE_GEOIP_DATABASE")]
    geoip_database: Option<PathBuf>,
}

fn parse_status(text: &str) -> Result<hyper::StatusCode, String> {
    text.parse::<u16>()
        .ok()
        .filter(|s| (100..=599).contains(s))
        .and_then(|s| hyper::StatusCode::from_u16(s).ok())
        .ok_or_else(|| format!("{text:?} is not an HTTP status (100-599)"))
}

fn init_tracing(format: LogFormat) {
    let directives = std::env::var("RUST_LOG").unwrap_or_default();
    let builder = tracing_subscriber::fmt().with_env_filter(log_filter(&directives));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The log filter from `RUST_LOG` (`info` when unset or invalid). rustls's own warnings are left
/// out unless the directives name rustls: they are about clients (one that sends an IP address
/// as its SNI, as OpenSSL's clients do when told to, gets one per handshake), and our TLS
/// handshake metrics and logs already record what went wrong.
fn log_filter(directives: &str) -> tracing_subscriber::EnvFilter {
    use tracing_subscriber::EnvFilter;
    let filter = match directives {
        "" => EnvFilter::new("info"),
        d => EnvFilter::try_new(d).unwrap_or_else(|_| EnvFilter::new("info")),
    };
    if directives.contains("rustls") {
        return filter;
    }
    filter.add_directive("rustls=error".parse().expect("a valid directive"))
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[global_allocator]
static ALLOCATOR: block_cache::BlockCache = block_cache::BlockCache;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let mut builder = match cli.worker_threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(0) => bail!("--worker-threads must be at least 1"),
        Some(n) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    // The runtime's threads (and this one, which runs a current-thread runtime's tasks) keep
    // freed request-sized blocks for the next request.
    block_cache::enable();
    let runtime = builder
        .enable_all()
        .on_thread_start(block_cache::enable)
        .on_thread_stop(block_cache::flush)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Standalone(args) => standalone(args).await,
            Command::ControlPlane(args) => control_plane(args).await,
            Command::DataPlane(args) => data_plane(args).await,
            Command::Validate { dir } => validate(dir),
            Command::Crds { dir } => crds(dir),
            Command::AdminCert(args) => issue_admin_cert(args),
            Command::Echo {
                listen,
                name,
                status,
                health_fail_file,
            } => {
                let l = TcpListener::bind(listen)
                    .await
                    .with_context(|| format!("binding {listen}"))?;
                tracing::info!(%listen, %name, "echo backend listening");
                let options = echo::Options {
                    status,
                    health_fail_file,
                };
                tokio::select! {
                    _ = echo::serve(l, name, options) => {}
                    _ = shutdown_signal() => {}
                }
                Ok(())
            }
        }
    })
}

fn issue_admin_cert(args: AdminCertArgs) -> anyhow::Result<()> {
    let identity = AdminIdentity {
        name: args.name,
        scope: AdminScope::parse(&args.namespaces)
            .map_err(|e| anyhow::anyhow!("--namespaces: {e}"))?,
    };
    identity
        .validate()
        .map_err(|e| anyhow::anyhow!("--name/--namespaces: {e}"))?;
    let files = admin_cert::issue_to_dir(&args.xds_tls_dir, &identity, args.valid_for, &args.out)?;
    println!("issued an admin certificate for {identity}");
    println!("  certificate: {}", files.certificate.display());
    println!("  key:         {}", files.key.display());
    println!(
        "  serial:      {} (revoke with \"serial {}\" in --xds-revoked)",
        files.serial, files.serial
    );
    println!("  valid until: {}", files.valid_until());
    Ok(())
}

async fn control_plane(args: ControlPlaneArgs) -> anyhow::Result<()> {
    let tls = args.xds_tls
        || args.xds_tls_dir.is_some()
        || (!args.listen.ip().is_loopback() && !args.allow_remote_plaintext);
    if tls && !args.kubernetes && args.xds_tls_dir.is_none() {
        bail!(
            "TLS xDS outside Kubernetes keeps its CA in a directory: pass --xds-tls-dir DIR \
             (or --allow-remote-plaintext on a trusted network to serve {} without TLS)",
            args.listen
        );
    }
    if !tls && args.xds_bootstrap_tokens.is_some() {
        bail!("--xds-bootstrap-tokens needs TLS xDS (--xds-tls-dir)");
    }
    if !tls && args.xds_revoked.is_some() {
        bail!("--xds-revoked needs TLS xDS: a plaintext control plane authenticates nobody");
    }
    let revocations = match &args.xds_revoked {
        Some(path) => {
            let list = revocation::load(path).map_err(anyhow::Error::msg)?;
            tracing::info!(file = %path.display(), entries = list.len(), "revocation list loaded");
            let revocations = Arc::new(Revocations::new(list));
            tokio::spawn(revocation::follow(path.clone(), revocations.clone()));
            revocations
        }
        None => Arc::default(),
    };
    let admin = match &args.admin_tokens {
        Some(path) => AdminAccess::Tokens(AdminTokens::load(path).map_err(anyhow::Error::msg)?),
        // Open only where nobody else can connect.
        None if !tls && args.listen.ip().is_loopback() => AdminAccess::Open,
        None => AdminAccess::Tokens(AdminTokens::default()),
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding the xDS address {}", args.listen))?;
    let client_cert_validity = Duration::from_secs(args.xds_client_cert_seconds);
    if args.kubernetes {
        let client = kubernetes_client().await?;
        let lease_namespace = args
            .lease_namespace
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let identity = args.pod_name.unwrap_or_else(default_node_id);
        let security = if tls {
            let ca =
                load_or_create_in_secret(client.clone(), &lease_namespace, &args.xds_ca_secret)
                    .await?;
            let names = server_names(&args.xds_server_names, Some(&lease_namespace));
            Security {
                tls: Some(
                    TlsMaterial::new(ca, &names).context("issuing the xDS server certificate")?,
                ),
                authenticator: Authenticator::Kubernetes(TokenReviewer::new(
                    client.clone(),
                    args.xds_token_audience.clone(),
                )),
                pods: PodLiveness::Kubernetes(Default::default()),
                revocations,
                client_cert_validity,
                admin,
                health_listen: args.health_listen,
            }
        } else {
            Security {
                admin,
                health_listen: args.health_listen,
                ..Security::default()
            }
        };
        let defaults = OperatorSettings::default();
        let default_xds = if tls {
            defaults.xds_address.replacen("http://", "https://", 1)
        } else {
            defaults.xds_address.clone()
        };
        let operator = OperatorSettings {
            data_plane_image: args.data_plane_image.unwrap_or(defaults.data_plane_image),
            xds_address: args.data_plane_xds.unwrap_or(default_xds),
            namespace: args.namespace.clone(),
            xds_ca_pem: security.tls.as_ref().map(|t| t.ca.cert_pem().to_owned()),
            xds_token_audience: args.xds_token_audience,
            ..defaults
        };
        let options = KubernetesOptions {
            namespace: args.namespace,
            lease: LeaseConfig::new(lease_namespace, identity),
            operator,
        };
        let handles = Handles {
            security: Arc::new(security),
            clients: args.limits.clients(),
            ..Handles::default()
        };
        run_kubernetes_control_plane(client, options, listener, handles, shutdown_signal()).await?;
    } else {
        let security = match &args.xds_tls_dir {
            Some(dir) => {
                let ca = load_or_create_in_dir(dir)?;
                let names = server_names(&args.xds_server_names, None);
                let authenticator = match &args.xds_bootstrap_tokens {
                    Some(path) => Authenticator::Tokens(
                        BootstrapTokens::load(path).map_err(anyhow::Error::msg)?,
                    ),
                    None => Authenticator::None,
                };
                Security {
                    tls: Some(
                        TlsMaterial::new(ca, &names)
                            .context("issuing the xDS server certificate")?,
                    ),
                    authenticator,
                    pods: PodLiveness::Unchecked,
                    revocations,
                    client_cert_validity,
                    admin,
                    health_listen: args.health_listen,
                }
            }
            None => Security {
                admin,
                health_listen: args.health_listen,
                ..Security::default()
            },
        };
        let handles = Handles {
            security: Arc::new(security),
            clients: args.limits.clients(),
            ..Handles::default()
        };
        run_file_control_plane(args.config, listener, handles, shutdown_signal()).await?;
    }
    Ok(())
}

/// The server certificate's names: the given ones, else loopback and (in Kubernetes) the
/// `sluice-control-plane` Service of `namespace`.
fn server_names(given: &[String], namespace: Option<&str>) -> Vec<String> {
    if !given.is_empty() {
        return given.to_vec();
    }
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
    if let Some(ns) = namespace {
        let service = "sluice-control-plane";
        names.push(service.to_owned());
        names.push(format!("{service}.{ns}"));
        names.push(format!("{service}.{ns}.svc"));
        names.push(format!("{service}.{ns}.svc.cluster.local"));
    }
    names
}

fn default_node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "sluice".into());
    format!("{host}-{}", std::process::id())
}

fn client_options(
    xds: String,
    gateway: String,
    node_id: Option<String>,
    geoip_database: Option<PathBuf>,
    tls: Option<XdsTls>,
) -> ClientOptions {
    ClientOptions {
        geoip_database,
        endpoint: xds,
        node_id: node_id.unwrap_or_else(default_node_id),
        gateway,
        backoff_initial: Duration::from_millis(50),
        backoff_max: Duration::from_secs(10),
        tls,
    }
}

/// Reads the GeoIP database once at start (it stays loaded for the process), so a bad file
/// stops the data plane before it serves rather than NACKing every geoBlock route.
async fn open_geoip(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    if let Some(path) = path {
        let path = path.to_owned();
        let db = tokio::task::spawn_blocking(move || sluice_data_plane::geoip::GeoIp::open(&path))
            .await?
            .map_err(anyhow::Error::msg)?;
        tracing::info!(path = %db.path().display(), "GeoIP database loaded");
    }
    Ok(())
}

/// TLS settings of a data plane: on for an `https://` control plane, which needs its CA.
fn data_plane_tls(args: &DataPlaneArgs) -> anyhow::Result<Option<XdsTls>> {
    if !args.xds.starts_with("https://") {
        if args.xds_ca.is_some() || args.xds_ca_file.is_some() || args.xds_token_file.is_some() {
            bail!(
                "--xds {} is plaintext: TLS settings (CA, token file) need an https:// address",
                args.xds
            );
        }
        return Ok(None);
    }
    let ca_pem = match (&args.xds_ca, &args.xds_ca_file) {
        (Some(pem), _) => pem.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading the xDS CA {}", path.display()))?,
        (None, None) => bail!(
            "--xds {} is TLS: pass the control plane's CA with --xds-ca-file or SLUICE_XDS_CA",
            args.xds
        ),
    };
    Ok(Some(XdsTls {
        ca_pem,
        server_name: args.xds_server_name.clone(),
        token_file: args.xds_token_file.clone(),
    }))
}

async fn data_plane(args: DataPlaneArgs) -> anyhow::Result<()> {
    if !args.gateway.contains('/') {
        bail!(
            "--gateway must be \"namespace/name\", got {:?}",
            args.gateway
        );
    }
    open_geoip(args.geoip_database.as_deref()).await?;
    let tls = data_plane_tls(&args)?;
    let opts = PodOptions {
        xds: client_options(
            args.xds,
            args.gateway,
            args.node_id,
            args.geoip_database,
            tls,
        ),
        bind_ip: args.bind,
        admin_addr: args.admin,
        drain: Duration::from_secs(args.drain_seconds),
        access_log: args.access_log,
    };
    pod::run(opts, shutdown_signal()).await?;
    Ok(())
}

async fn standalone(args: StandaloneArgs) -> anyhow::Result<()> {
    if !args.xds_listen.ip().is_loopback() {
        bail!(
            "standalone mode serves xDS on loopback only, not {}",
            args.xds_listen
        );
    }
    open_geoip(args.geoip_database.as_deref()).await?;
    let (objects, _) = sluice_control_plane::provider::file::load_dir(&args.config);
    let gateways: Vec<String> = if args.gateways.is_empty() {
        served_gateways(&objects)
    } else {
        args.gateways.clone()
    };
    if gateways.is_empty() {
        bail!(
            "no Gateway found in {}; add one or name it with --gateway",
            args.config.display()
        );
    }
    if args.demo_backends {
        for addr in demo_backend_addresses(&objects) {
            let l = TcpListener::bind(addr)
                .await
                .with_context(|| format!("starting the demo backend on {addr}"))?;
            tracing::info!(%addr, "demo echo backend listening");
            tokio::spawn(echo::serve(l, addr.to_string(), echo::Options::default()));
        }
    }
    let listener = TcpListener::bind(args.xds_listen)
        .await
        .with_context(|| format!("binding the xDS address {}", args.xds_listen))?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait_stop = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let cp = tokio::spawn(run_file_control_plane(
        args.config.clone(),
        listener,
        Handles::default(),
        wait_stop(stop_rx.clone()),
    ));
    let mut pods = Vec::new();
    for (i, gateway) in gateways.into_iter().enumerate() {
        let admin_port = args
            .admin_port
            .checked_add(i as u16)
            .context("admin port out of range")?;
        let opts = PodOptions {
            xds: client_options(
                format!("http://{}", args.xds_listen),
                gateway.clone(),
                Some(format!("standalone-{}", gateway.replace('/', "-"))),
                args.geoip_database.clone(),
                None,
            ),
            bind_ip: args.bind,
            admin_addr: SocketAddr::new(args.bind, admin_port),
            drain: Duration::from_secs(10),
            access_log: args.access_log,
        };
        tracing::info!(%gateway, admin = %opts.admin_addr, "starting data plane");
        pods.push(tokio::spawn(pod::run(opts, wait_stop(stop_rx.clone()))));
    }
    shutdown_signal().await;
    stop_tx.send_replace(true);
    for p in pods {
        p.await??;
    }
    cp.await??;
    Ok(())
}

/// Every gateway a data plane should run for, "namespace/name": Goma Gateways, and Gateway API
/// Gateways whose GatewayClass is ours (a Goma Gateway keeps a shared id).
fn served_gateways(objects: &[Object]) -> Vec<String> {
    let by_key: BTreeMap<ObjectKey, Object> =
        objects.iter().map(|o| (o.key(), o.clone())).collect();
    let index = Index::new(&by_key);
    let mut out: Vec<String> = Vec::new();
    for o in objects {
        let id = match o {
            Object::GomaGateway(g) => format!("{}/{}", g.metadata.namespace, g.metadata.name),
            Object::Api(api) => match api.as_ref() {
                ApiObject::Gateway(g) if is_our_class(&index, &g.spec.gateway_class_name) => {
                    format!("{}/{}", g.metadata.namespace, g.metadata.name)
                }
                _ => continue,
            },
            _ => continue,
        };
        if !out.contains(&id) {
            out.push(id);
        }
    }
    out
}

/// Loopback backend addresses the manifests name: Goma route `http://` targets and backends,
/// and the loopback endpoints of EndpointSlices (Gateway API backends).
fn demo_backend_addresses(objects: &[Object]) -> BTreeSet<SocketAddr> {
    let mut out = BTreeSet::new();
    for o in objects {
        if let Object::Api(api) = o
            && let ApiObject::EndpointSlice(slice) = api.as_ref()
        {
            let ports = slice.ports.iter().filter_map(|p| p.port);
            for port in ports {
                let Ok(port) = u16::try_from(port) else {
                    continue;
                };
                for ep in &slice.endpoints {
                    for addr in &ep.addresses {
                        if let Ok(ip) = addr.parse::<IpAddr>()
                            && ip.is_loopback()
                        {
                            out.insert(SocketAddr::new(ip, port));
                        }
                    }
                }
            }
            continue;
        }
        let Object::GomaRoute(r) = o else { continue };
        let urls = r
            .spec
            .target
            .iter()
            .chain(r.spec.backends.iter().map(|b| &b.endpoint));
        for url in urls {
            let Ok(uri) = url.parse::<hyper::Uri>() else {
                continue;
            };
            let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
                continue;
            };
            if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>()
                && ip.is_loopback()
            {
                out.insert(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

fn crds(dir: Option<PathBuf>) -> anyhow::Result<()> {
    use sluice_control_plane::model::goma::crd;
    let Some(dir) = dir else {
        print!("{}", crd::yaml_stream()?);
        return Ok(());
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, content) in crd::files()? {
        let path = dir.join(name);
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn validate(dir: PathBuf) -> anyhow::Result<()> {
    let report = sluice_control_plane::validate::validate_dir(&dir);
    for w in &report.warnings {
        println!("warning: {w}");
    }
    for e in &report.errors {
        println!("error: {e}");
    }
    println!(
        "{}: {} objects, {} errors, {} warnings",
        dir.display(),
        report.objects,
        report.errors.len(),
        report.warnings.len()
    );
    if !report.errors.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::log_filter;

    #[test]
    fn rustls_warnings_are_left_out_unless_asked_for() {
        for directives in [
            "",
            "info",
            "warn,sluice_data_plane=debug",
            "not a directive =",
        ] {
            let filter = log_filter(directives).to_string();
            assert!(filter.contains("rustls=error"), "{directives:?}: {filter}");
        }
        let filter = log_filter("info,rustls=debug").to_string();
        assert!(!filter.contains("rustls=error"), "{filter}");
    }
}

//! What the operator needs to know beyond the Gateway itself.

/// The data-plane image when a Gateway names none: the `sluice` image of this very version
/// (the control plane and the data planes it configures come from one build).
pub const DEFAULT_DATA_PLANE_IMAGE: &str = concat!("sluice:", env!("CARGO_PKG_VERSION"));

/// The control plane's xDS Service as `deploy/` installs it.
pub const DEFAULT_XDS_ADDRESS: &str = "http://sluice-control-plane.sluice-system.svc:18000";

/// The audience of the ServiceAccount token projected into data-plane pods (TLS mode).
pub const DEFAULT_XDS_TOKEN_AUDIENCE: &str = crate::security::tokens::DEFAULT_TOKEN_AUDIENCE;

/// The field manager of every server-side apply the operator sends.
pub const DEFAULT_FIELD_MANAGER: &str = "sluice-operator";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OperatorSettings {
    /// Image of the data-plane pods when the Gateway's `spec.image` is unset (or names Goma's
    /// own image, which cannot run `sluice data-plane`).
    pub data_plane_image: String,
    /// The control plane's xDS address as data-plane pods reach it (`http://host:port`).
    pub xds_address: String,
    /// Field manager of the server-side applies; one fixed name so re-applies are idempotent
    /// and fields the operator stops setting are removed.
    pub field_manager: String,
    /// How long a data-plane pod drains in-flight requests at shutdown (`--drain-seconds`);
    /// the pod's termination grace period is set above it.
    pub drain_seconds: u32,
    /// `SLUICE_LOG_FORMAT` of the data-plane pods (`json` or `text`).
    pub log_format: String,
    /// Reconcile the Gateways of this namespace only (the control plane's `--namespace`);
    /// `None`: every namespace.
    pub namespace: Option<String>,
    /// The control plane's CA (PEM) when xDS is TLS: the bootstrap carries it, and the pods get
    /// a projected ServiceAccount token to obtain their client certificates with. `None`:
    /// plaintext xDS (loopback development only).
    pub xds_ca_pem: Option<String>,
    /// The audience of the projected token (what the control plane's TokenReview asks for).
    pub xds_token_audience: String,
}

impl Default for OperatorSettings {
    fn default() -> Self {
        Self {
            data_plane_image: DEFAULT_DATA_PLANE_IMAGE.to_owned(),
            xds_address: DEFAULT_XDS_ADDRESS.to_owned(),
            field_manager: DEFAULT_FIELD_MANAGER.to_owned(),
            drain_seconds: 10,
            log_format: "json".to_owned(),
            namespace: None,
            xds_ca_pem: None,
            xds_token_audience: DEFAULT_XDS_TOKEN_AUDIENCE.to_owned(),
        }
    }
}

//! What the operator needs to know beyond the Gateway itself.

/// The data-plane image when a Gateway names none: the `sluice` image of this very version
/// (the control plane and the data planes it configures come from one build).
pub const DEFAULT_DATA_PLANE_IMAGE: &str = concat!("sluice:", env!("CARGO_PKG_VERSION"));

/// The control plane's xDS Service as `deploy/` installs it.
pub const DEFAULT_XDS_ADDRESS: &str = "http://sluice-control-plane.sluice-system.svc:18000";

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
        }
    }
}

//! The outcome of each Gateway's last reconcile, shared with whoever writes Gateway status.

use crate::signalled::SignalledMap;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `metadata.generation` of the Gateway the outcome is about.
    pub generation: Option<i64>,
    /// `Ok(warnings)` when every object was applied, else the error (naming object and field).
    pub outcome: Result<Vec<String>, String>,
}

/// The latest [`Report`] per Gateway; cheap to clone (shared).
pub type GatewayReports = SignalledMap<Report>;

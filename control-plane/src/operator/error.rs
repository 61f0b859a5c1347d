//! Why a reconcile failed.

use crate::provider::ParseError;
use crate::translate::TranslateError;

#[derive(Debug, thiserror::Error)]
pub enum OperatorError {
    /// The Gateway does not parse (`Gateway edge/gw: spec.replicas: invalid type ...`); nothing
    /// was applied. Waits for the next change of the Gateway.
    #[error(transparent)]
    UnparsableGateway(#[from] ParseError),
    /// The Gateway's spec cannot be turned into a workload; nothing was applied. Retrying cannot
    /// help: the next change of the Gateway triggers the next attempt.
    #[error(transparent)]
    InvalidGateway(#[from] TranslateError),
    /// An API call failed (`Deployment edge/gw: server-side apply: ...`); retried with backoff.
    #[error("{object}: {action}: {source}")]
    Api {
        object: String,
        action: &'static str,
        #[source]
        source: kube::Error,
    },
}

impl OperatorError {
    /// True when retrying the same Gateway may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, OperatorError::Api { .. })
    }
}

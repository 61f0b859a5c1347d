//! Providers turn a source of manifests (a directory, later the Kubernetes API) into batches of
//! object changes.

use std::fmt;
use std::path::PathBuf;

use crate::model::{Object, ObjectKey};

pub mod file;
pub mod kubernetes;
pub mod manifest;
pub mod object_errors;

pub use manifest::{ParseError, parse_object};
pub use object_errors::{ObjectError, ObjectErrors};

#[derive(Debug, Clone)]
pub enum ProviderEvent {
    /// The object was created or changed.
    Apply(Object),
    Delete(ObjectKey),
    /// The initial listing is complete: everything the source held has been sent.
    Synced,
}

/// A problem found in a manifest: the document is skipped (or its last good version kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// The object, e.g. `Route default/api`, when the document got far enough to name it.
    pub object: Option<String>,
    /// Names the field: `spec.backends[1].endpoint: ...`.
    pub message: String,
}

/// `examples/routes.yaml: Route default/api: spec.backends[1].endpoint: ...`
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(object) = &self.object {
            write!(f, "{object}: ")?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("watching {}: {source}", path.display())]
    Watch {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("file provider task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

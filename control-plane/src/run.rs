//! Wiring of a control plane: provider -> controller -> views -> xDS server.

use crate::controller::Controller;
use crate::provider::file::FileProvider;
use crate::views::Views;
use crate::xds::{self, Clients};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("config directory {0}: {1}")]
    ConfigDir(PathBuf, std::io::Error),
    #[error("xDS server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// A running control plane's shared state (views and connected clients), for in-process users
/// such as standalone mode and tests.
#[derive(Clone, Default)]
pub struct Handles {
    pub views: Arc<Views>,
    pub clients: Arc<Clients>,
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
    let controller_task = tokio::spawn(Controller::new(handles.views.clone()).run(rx));
    tracing::info!(dir = %dir.display(), "watching manifests");
    let result = xds::serve(listener, handles.views, handles.clients, shutdown).await;
    provider_task.abort();
    controller_task.abort();
    Ok(result?)
}

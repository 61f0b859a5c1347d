//! Upstream side: compiled clusters, endpoint selection, endpoint health (active checks and
//! outlier ejection), retry budgets, the HTTP clients (a pool of connections per endpoint for
//! HTTP/1.1, one multiplexed connection per endpoint for HTTP/2) and their (optionally TLS)
//! connector.

pub mod budget;
pub mod client;
pub mod cluster;
pub mod connector;
pub mod dns;
pub mod error;
pub mod health;
pub mod http1;
pub mod http2;
mod idle;
pub mod outlier;
pub mod pool;
mod registry;
pub mod response_body;
pub mod tls;

pub use client::{Clients, UpstreamBody, UpstreamClient};
pub use cluster::{ClusterState, CompiledCluster};
pub use error::{SendError, UpstreamError};
pub use health::HealthCheckers;
pub use outlier::Outcome;
pub use pool::PoolSettings;
pub use response_body::ResponseBody;

//! Upstream side: compiled clusters, endpoint selection, endpoint health (active checks and
//! outlier ejection), retry budgets, the pooled HTTP clients (our HTTP/1.1 pool, hyper-util's
//! for HTTP/2) and their (optionally TLS) connector.

pub mod budget;
pub mod client;
pub mod cluster;
pub mod connector;
pub mod dns;
pub mod error;
pub mod health;
pub mod http1;
pub mod outlier;
pub mod pool;
pub mod tls;

pub use client::{Clients, UpstreamBody, UpstreamClient};
pub use cluster::{ClusterState, CompiledCluster};
pub use error::{SendError, UpstreamError};
pub use health::HealthCheckers;
pub use http1::ResponseBody;
pub use outlier::Outcome;
pub use pool::PoolSettings;

//! Upstream side: compiled clusters, endpoint selection, endpoint health (active checks and
//! outlier ejection), retry budgets, the pooled HTTP clients and their (optionally TLS) connector.

pub mod budget;
pub mod client;
pub mod cluster;
pub mod connector;
pub mod dns;
pub mod health;
pub mod outlier;
pub mod pool;
pub mod tls;

pub use client::{Clients, HttpClient, UpstreamBody};
pub use cluster::{ClusterState, CompiledCluster};
pub use health::HealthCheckers;
pub use outlier::Outcome;
pub use pool::PoolSettings;

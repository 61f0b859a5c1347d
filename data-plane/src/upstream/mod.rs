//! Upstream side: compiled clusters, endpoint selection, the pooled HTTP clients and their
//! (optionally TLS) connector.

pub mod client;
pub mod cluster;
pub mod connector;
pub mod dns;
pub mod pool;
pub mod tls;

pub use client::{Clients, HttpClient, UpstreamBody};
pub use cluster::{ClusterState, CompiledCluster};
pub use pool::PoolSettings;

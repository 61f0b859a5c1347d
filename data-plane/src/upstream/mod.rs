//! Upstream side: compiled clusters, endpoint selection and the shared pooled HTTP clients.

pub mod client;
pub mod cluster;

pub use client::{Clients, HttpClient, UpstreamBody};
pub use cluster::{ClusterState, CompiledCluster};

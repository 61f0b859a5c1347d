//! Sluice data plane: compiled configuration snapshots, routing, upstream pools and the proxy.

pub mod access_log;
pub mod admin;
pub mod config_dump;
pub mod fast_map;
pub mod geoip;
pub mod in_place;
pub mod l4;
pub mod listeners;
pub mod metrics;
pub mod middleware;
pub mod observe;
pub mod pod;
pub mod proxy;
pub mod resources;
pub mod router;
pub mod server;
pub mod shared_store;
pub mod snapshot;
pub mod timeouts;
pub mod tls;
pub mod upstream;
pub mod xds;

//! The xDS server: delta ADS streams (one per data-plane pod), the identity service that issues
//! their client certificates, and the read-only inspection service.

pub mod admission;
pub mod bootstrap_limit;
pub mod clients;
pub mod credentials;
pub mod held;
pub mod identity;
pub mod inspection;
pub mod peer;
pub mod server;
pub mod stream;
pub mod tls;

pub use admission::Limits;
pub use clients::Clients;
pub use server::{AdsService, serve};

#[cfg(test)]
mod storm_tests;

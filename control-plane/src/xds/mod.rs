//! The xDS server: delta ADS streams (one per data-plane pod) and the read-only inspection service.

pub mod clients;
pub mod inspection;
pub mod server;
pub mod stream;

pub use clients::Clients;
pub use server::{AdsService, serve};

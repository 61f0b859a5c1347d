//! The delta xDS client: subscribes for this pod's gateway, validates and applies each response,
//! ACKs only once the new snapshot is serving, and keeps serving while the control plane is away.

pub mod batch;
pub mod client;
pub mod identity;
pub mod state;

pub use client::{ClientOptions, run};
pub use identity::XdsTls;

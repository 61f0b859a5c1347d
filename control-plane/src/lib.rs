//! Sluice control plane: object model, providers, translation and the discovery server.

pub mod controller;
pub mod leader;
pub mod model;
pub mod operator;
pub mod provider;
pub mod resource;
pub mod run;
pub mod security;
pub mod signalled;
pub mod status;
pub mod translate;
pub mod validate;
pub mod views;
pub mod xds;

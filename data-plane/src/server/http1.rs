//! Our own downstream HTTP/1.1 server (plain and TLS): the request head parser and response
//! head writer (`codec`), the shared client stream (`wire`), the request body that reads itself
//! from it (`body`), the connection loop (`connection`) and the hand-over on a protocol upgrade
//! (`upgrade`). HTTP/2 (ALPN h2, or h2c detected from the preface) stays with hyper.

pub mod body;
pub mod codec;
pub mod connection;
pub mod date;
pub mod upgrade;
pub mod wire;

pub use body::RequestBody;
pub use connection::{Ended, Lifecycle, serve};
pub use upgrade::{OnClientUpgrade, Upgraded};
pub use wire::{BodyError, BoxIo, Io};

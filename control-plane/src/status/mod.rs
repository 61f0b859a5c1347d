//! Status written back to the Goma objects. Translation's verdicts are kept on a board
//! (`board`), combined with what every data plane acknowledged by pure rules (`compute`), and
//! written by the leader replica only, with server-side apply (`writer`). Gateway API objects
//! follow the same path: translation's reports (`gateway_api`), pure rules in the CRDs' shapes
//! (`gateway_api_status`) and their writer (`gateway_api_writer`), run by the same `writer`.

pub mod board;
pub mod compute;
pub mod gateway_api;
pub mod gateway_api_status;
pub mod gateway_api_writer;
pub mod workloads;
pub mod writer;

pub use board::{Record, ResourceRef, StatusBoard, Verdict};
pub use writer::StatusWriter;

//! What translation decided about each object, kept for the status writer. The controller records
//! a verdict per object after every translation; the writer reads a snapshot and combines it with
//! what the data planes acknowledged.

use crate::resource::{Encoded, type_index};
use crate::signalled::SignalledMap;

/// A config resource an object produced, at the version its data planes must ACK.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ResourceRef {
    pub type_index: usize,
    pub name: String,
    pub version: String,
}

impl ResourceRef {
    pub fn of(encoded: &Encoded) -> Self {
        ResourceRef {
            type_index: type_index(encoded.type_url).unwrap_or(0),
            name: encoded.name.clone(),
            version: encoded.version.clone(),
        }
    }
}

/// Translation's verdict on the current generation of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Valid; these resources carry it to the data planes (none for a Middleware).
    Served(Vec<ResourceRef>),
    /// Valid, and switched off by its own spec (`enabled: false`).
    Disabled,
    /// Invalid: the message names the field. `last_good` still serves, if any.
    Invalid {
        message: String,
        last_good: Vec<ResourceRef>,
    },
    /// Asks for protection this gateway cannot enforce: nothing serves it (fail closed).
    Withdrawn(String),
}

/// One object's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// `metadata.generation` of the version the verdict is about.
    pub generation: Option<i64>,
    pub verdict: Verdict,
    /// Routes: the gateways ("namespace/name") the spec names.
    pub gateways: Vec<String>,
    /// Routes: the middleware names the spec lists (same namespace).
    pub middlewares: Vec<String>,
}

impl Record {
    pub fn new(generation: Option<i64>, verdict: Verdict) -> Self {
        Record {
            generation,
            verdict,
            gateways: Vec::new(),
            middlewares: Vec::new(),
        }
    }
}

/// Every object's record, shared between the controller (writer) and the status writer
/// (reader). Changes wake subscribers.
pub type StatusBoard = SignalledMap<Record>;

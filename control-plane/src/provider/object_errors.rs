//! The objects a provider could not accept, and why: shared with whoever reports them (the status
//! writer sets a condition from it; the object keeps serving its last good version meanwhile).

use crate::signalled::SignalledMap;

/// Why the current version of an object was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectError {
    /// Names the field: `spec.backends[1].weight: ...`.
    pub message: String,
    /// `metadata.generation` of the rejected version (for `observedGeneration`).
    pub generation: Option<i64>,
}

/// Rejected objects by key; cheap to clone (shared). An entry is removed when the object becomes
/// valid again or is deleted.
pub type ObjectErrors = SignalledMap<ObjectError>;

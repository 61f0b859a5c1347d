//! Translation of typed objects into config resources. Translators are pure: no I/O, no logging.

use std::fmt;

pub mod goma;
pub mod secret;

/// One invalid field: `spec.backends[1].endpoint: <reason>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub reason: String,
    /// The object asks for protection that cannot be enforced (middlewares, TLS...): it must be
    /// withdrawn, not kept at its last good version, which lacked that protection.
    pub fail_closed: bool,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

/// Why an object cannot be served: the object and every invalid field found.
/// Display: `Route default/api: spec.backends[1].endpoint: <reason>; spec.hosts[0]: <reason>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct TranslateError {
    /// e.g. `Route default/api`.
    pub object: String,
    pub errors: Vec<FieldError>,
}

impl TranslateError {
    /// True when serving any version of the object would bypass protection it asks for.
    pub fn fails_closed(&self) -> bool {
        self.errors.iter().any(|e| e.fail_closed)
    }
}

impl fmt::Display for TranslateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.object)?;
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects field errors while translating, so one pass reports every problem.
#[derive(Debug, Default)]
pub(crate) struct Errors(Vec<FieldError>);

impl Errors {
    pub(crate) fn push(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            reason: reason.into(),
            fail_closed: false,
        });
    }

    /// An error for protection this version cannot enforce; see [`FieldError::fail_closed`].
    pub(crate) fn push_fail_closed(&mut self, field: impl Into<String>, reason: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            reason: reason.into(),
            fail_closed: true,
        });
    }

    pub(crate) fn into_result(self, object: &str) -> Result<(), TranslateError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(TranslateError {
                object: object.to_owned(),
                errors: self.0,
            })
        }
    }
}

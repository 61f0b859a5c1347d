//! Translation of typed objects into config resources. Translators are pure: no I/O, no logging.

use std::fmt;

pub mod gateway_api;
pub mod goma;
pub mod middleware;
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

/// A Go duration string as Goma writes them ("30s", "1m30s", "500ms", "2h"); a bare number is
/// seconds. Negative durations are refused.
pub(crate) fn parse_go_duration(text: &str) -> Result<std::time::Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(secs));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{text:?}: a number needs a unit (ns, us, ms, s, m, h)"))?;
        let value: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{text:?} is not a duration such as \"30s\" or \"1m30s\""))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            unit => {
                return Err(format!(
                    "{text:?}: unknown unit {unit:?} (ns, us, ms, s, m, h)"
                ));
            }
        };
        total += value * scale;
        rest = &rest[unit_len..];
    }
    if !total.is_finite() || total > 1e9 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(std::time::Duration::from_secs_f64(total))
}

/// A protobuf Duration.
pub(crate) fn pb_duration(d: std::time::Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

#[cfg(test)]
mod duration_tests {
    use super::parse_go_duration;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1.5h"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("15"), Ok(Duration::from_secs(15)));
        assert!(parse_go_duration("10").is_ok());
        assert!(parse_go_duration("ten seconds").is_err());
        assert!(
            parse_go_duration("5d")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(parse_go_duration("-5s").is_err());
        assert!(parse_go_duration("").is_err());
    }
}

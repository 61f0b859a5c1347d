//! The claims part of a JWT check: registered claims (`exp`, `nbf`, `iss`, `aud`), Goma's
//! claims expression (parsed by the control plane, evaluated here) and claim values as header
//! values.

use serde_json::Value;
use sluice_proto::config as pb;

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: i64 = 30;
/// Deepest expression accepted (the evaluator recurses).
const MAX_DEPTH: usize = 32;

/// Why claims were refused (for logs; the client sees a generic 401).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Expired,
    NotYetValid,
    Issuer,
    Audience,
    Expression,
    Malformed(&'static str),
}

/// Checks the registered claims at `now` (Unix seconds). `exp` and `nbf` are checked when
/// present (as golang-jwt, which Goma uses, does).
pub fn check_registered(
    claims: &Value,
    now: i64,
    issuer: Option<&str>,
    audience: Option<&str>,
) -> Result<(), Refusal> {
    let time = |name: &'static str| -> Result<Option<i64>, Refusal> {
        match claims.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|f| Some(f as i64))
                .ok_or(Refusal::Malformed(name)),
        }
    };
    if let Some(exp) = time("exp")?
        && now > exp.saturating_add(LEEWAY_SECS)
    {
        return Err(Refusal::Expired);
    }
    if let Some(nbf) = time("nbf")?
        && now.saturating_add(LEEWAY_SECS) < nbf
    {
        return Err(Refusal::NotYetValid);
    }
    if let Some(iss) = issuer
        && claims.get("iss").and_then(Value::as_str) != Some(iss)
    {
        return Err(Refusal::Issuer);
    }
    if let Some(aud) = audience {
        let ok = match claims.get("aud") {
            Some(Value::String(s)) => s == aud,
            Some(Value::Array(list)) => list.iter().any(|v| v.as_str() == Some(aud)),
            _ => false,
        };
        if !ok {
            return Err(Refusal::Audience);
        }
    }
    Ok(())
}

/// The value at a dotted path (`realm_access.roles`, `groups.0`). A top-level claim whose name
/// contains dots (`https://example.com/roles`) is found by its full name first.
pub fn lookup<'v>(claims: &'v Value, path: &str) -> Option<&'v Value> {
    if let Some(v) = claims.get(path) {
        return Some(v);
    }
    let mut current = claims;
    for segment in path.split('.') {
        current = match current {
            Value::Object(map) => map.get(segment)?,
            Value::Array(list) => list.get(segment.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(current)
}

/// A scalar claim as text (`true`, `42`, the string itself); None for objects, arrays, null.
fn scalar_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(s.as_str().into()),
        Value::Bool(b) => Some(if *b { "true" } else { "false" }.into()),
        Value::Number(n) => Some(n.to_string().into()),
        _ => None,
    }
}

/// A claim as a header value: scalars as text, arrays joined by commas, objects as JSON.
pub fn header_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Array(list) => Some(
            list.iter()
                .map(|e| scalar_text(e).map_or_else(|| e.to_string(), |t| t.into_owned()))
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Object(_) => Some(v.to_string()),
        scalar => scalar_text(scalar).map(|t| t.into_owned()),
    }
}

/// A compiled claims expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    All(Vec<Expr>),
    Any(Vec<Expr>),
    Not(Box<Expr>),
    Test {
        function: Function,
        claim: String,
        values: Vec<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Equals,
    Prefix,
    Contains,
    OneOf,
}

impl Expr {
    /// Compiles the control plane's parsed expression; errors name the node
    /// (`claims.all.checks[1].test.values`).
    pub fn compile(check: &pb::ClaimsCheck) -> Result<Expr, String> {
        Self::compile_at(check, 0, "claims")
    }

    fn compile_at(check: &pb::ClaimsCheck, depth: usize, at: &str) -> Result<Expr, String> {
        use pb::claims_check::Check;
        if depth > MAX_DEPTH {
            return Err(format!("{at}: nested deeper than {MAX_DEPTH}"));
        }
        let list = |checks: &[pb::ClaimsCheck], name: &str| -> Result<Vec<Expr>, String> {
            if checks.is_empty() {
                return Err(format!("{at}.{name}.checks: empty"));
            }
            checks
                .iter()
                .enumerate()
                .map(|(i, c)| Self::compile_at(c, depth + 1, &format!("{at}.{name}.checks[{i}]")))
                .collect()
        };
        match &check.check {
            None => Err(format!("{at}: empty check")),
            Some(Check::All(c)) => Ok(Expr::All(list(&c.checks, "all")?)),
            Some(Check::Any(c)) => Ok(Expr::Any(list(&c.checks, "any")?)),
            Some(Check::Not(inner)) => Ok(Expr::Not(Box::new(Self::compile_at(
                inner,
                depth + 1,
                &format!("{at}.not"),
            )?))),
            Some(Check::Test(t)) => {
                use pb::ClaimFunction as F;
                let function = match F::try_from(t.function) {
                    Ok(F::Equals) => Function::Equals,
                    Ok(F::Prefix) => Function::Prefix,
                    Ok(F::Contains) => Function::Contains,
                    Ok(F::OneOf) => Function::OneOf,
                    _ => return Err(format!("{at}.test.function: unset or unknown")),
                };
                if t.claim.is_empty() {
                    return Err(format!("{at}.test.claim: empty"));
                }
                let one = matches!(function, Function::Equals | Function::Prefix);
                if t.values.is_empty() || (one && t.values.len() != 1) {
                    return Err(format!(
                        "{at}.test.values: {} values ({:?} takes {})",
                        t.values.len(),
                        function,
                        if one { "exactly one" } else { "at least one" }
                    ));
                }
                Ok(Expr::Test {
                    function,
                    claim: t.claim.clone(),
                    values: t.values.clone(),
                })
            }
        }
    }

    pub fn eval(&self, claims: &Value) -> bool {
        match self {
            Expr::All(list) => list.iter().all(|e| e.eval(claims)),
            Expr::Any(list) => list.iter().any(|e| e.eval(claims)),
            Expr::Not(e) => !e.eval(claims),
            Expr::Test {
                function,
                claim,
                values,
            } => lookup(claims, claim).is_some_and(|v| test(*function, v, values)),
        }
    }
}

/// One test on a claim's value. On an array claim, Equals/Prefix/OneOf hold when an element
/// does, and Contains when every value is an element; on a string, Contains means substrings.
fn test(function: Function, v: &Value, values: &[String]) -> bool {
    let elements: &[Value] = match v {
        Value::Array(list) => list,
        other => std::slice::from_ref(other),
    };
    let any_element = |pred: &dyn Fn(&str) -> bool| {
        elements
            .iter()
            .any(|e| scalar_text(e).is_some_and(|t| pred(&t)))
    };
    match function {
        Function::Equals => any_element(&|t| t == values[0]),
        Function::Prefix => any_element(&|t| t.starts_with(values[0].as_str())),
        Function::OneOf => any_element(&|t| values.iter().any(|w| t == w)),
        Function::Contains => match v {
            Value::String(s) => values.iter().all(|w| s.contains(w.as_str())),
            _ => values.iter().all(|w| any_element(&|t| t == w)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(function: Function, claim: &str, values: &[&str]) -> Expr {
        Expr::Test {
            function,
            claim: claim.into(),
            values: values.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn registered_claims() {
        let c = json!({"exp": 1000, "nbf": 900, "iss": "idp", "aud": ["a", "b"]});
        assert_eq!(check_registered(&c, 950, Some("idp"), Some("b")), Ok(()));
        assert_eq!(check_registered(&c, 1020, None, None), Ok(()), "leeway");
        assert_eq!(
            check_registered(&c, 1031, None, None),
            Err(Refusal::Expired)
        );
        assert_eq!(
            check_registered(&c, 860, None, None),
            Err(Refusal::NotYetValid)
        );
        assert_eq!(
            check_registered(&c, 950, Some("other"), None),
            Err(Refusal::Issuer)
        );
        assert_eq!(
            check_registered(&c, 950, None, Some("c")),
            Err(Refusal::Audience)
        );
        let s = json!({"aud": "a", "exp": "soon"});
        assert_eq!(
            check_registered(&s, 0, None, Some("a")),
            Err(Refusal::Malformed("exp"))
        );
        assert_eq!(
            check_registered(&json!({"aud": "a"}), 0, None, Some("a")),
            Ok(())
        );
        assert_eq!(
            check_registered(&json!({}), 0, None, Some("a")),
            Err(Refusal::Audience)
        );
    }

    #[test]
    fn lookup_paths() {
        let c = json!({"a": {"b": [1, {"c": "x"}]}, "https://x.io/roles": ["r"]});
        assert_eq!(lookup(&c, "a.b.1.c"), Some(&json!("x")));
        assert_eq!(lookup(&c, "a.b.0"), Some(&json!(1)));
        assert_eq!(lookup(&c, "https://x.io/roles"), Some(&json!(["r"])));
        assert_eq!(lookup(&c, "a.z"), None);
        assert_eq!(lookup(&c, "a.b.x"), None);
    }

    #[test]
    fn header_values() {
        assert_eq!(
            header_text(&json!(["a", 2, true])).as_deref(),
            Some("a,2,true")
        );
        assert_eq!(header_text(&json!("u1")).as_deref(), Some("u1"));
        assert_eq!(header_text(&json!({"k": 1})).as_deref(), Some(r#"{"k":1}"#));
        assert_eq!(header_text(&json!(null)), None);
    }

    #[test]
    fn functions_on_scalars_and_arrays() {
        let c = json!({"email_verified": true, "role": "admin", "groups": ["dev", "ops"],
                       "email": "a@corp.example", "n": 5});
        assert!(t(Function::Equals, "email_verified", &["true"]).eval(&c));
        assert!(t(Function::Equals, "n", &["5"]).eval(&c));
        assert!(t(Function::Equals, "groups", &["ops"]).eval(&c));
        assert!(!t(Function::Equals, "role", &["Admin"]).eval(&c));
        assert!(t(Function::Prefix, "email", &["a@"]).eval(&c));
        assert!(t(Function::Contains, "groups", &["dev", "ops"]).eval(&c));
        assert!(!t(Function::Contains, "groups", &["dev", "qa"]).eval(&c));
        assert!(t(Function::Contains, "email", &["corp"]).eval(&c));
        assert!(t(Function::OneOf, "role", &["owner", "admin"]).eval(&c));
        assert!(!t(Function::OneOf, "missing", &["x"]).eval(&c));
        let e = Expr::All(vec![
            t(Function::Equals, "role", &["admin"]),
            Expr::Not(Box::new(t(Function::Equals, "groups", &["qa"]))),
            Expr::Any(vec![
                t(Function::Equals, "missing", &["x"]),
                t(Function::Prefix, "email", &["a"]),
            ]),
        ]);
        assert!(e.eval(&c));
    }

    #[test]
    fn compile_checks_arity_and_depth() {
        use pb::claims_check::Check;
        let test = |f: pb::ClaimFunction, values: &[&str]| pb::ClaimsCheck {
            check: Some(Check::Test(pb::ClaimTest {
                function: f as i32,
                claim: "role".into(),
                values: values.iter().map(|s| s.to_string()).collect(),
            })),
        };
        assert!(Expr::compile(&test(pb::ClaimFunction::Equals, &["a"])).is_ok());
        let e = Expr::compile(&test(pb::ClaimFunction::Equals, &["a", "b"])).unwrap_err();
        assert!(e.starts_with("claims.test.values"), "{e}");
        assert!(Expr::compile(&test(pb::ClaimFunction::Unspecified, &["a"])).is_err());
        assert!(Expr::compile(&pb::ClaimsCheck { check: None }).is_err());
        let mut deep = test(pb::ClaimFunction::OneOf, &["a"]);
        for _ in 0..40 {
            deep = pb::ClaimsCheck {
                check: Some(Check::Not(Box::new(deep))),
            };
        }
        assert!(Expr::compile(&deep).unwrap_err().contains("deeper"));
    }
}

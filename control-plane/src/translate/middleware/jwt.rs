//! jwtAuth (alias jwt) to `JwtAuth`: one key source, the JWKS URL as a Cluster of the route,
//! the claims expression parsed here so a bad one is reported on the Middleware.

use super::super::FieldError;
use super::{
    RouteContext, TranslatedMiddleware, claims_expression, rule_error, service_from_url,
    unenforceable,
};
use crate::model::goma::{self, middleware_rule::JwtRule};
use sluice_proto::config as pb;

/// Cluster purpose of the JWKS URL (`.../middleware/<name>/jwks`).
const JWKS_PURPOSE: &str = "jwks";

pub fn translate(
    rule: &JwtRule,
    mw: &goma::Middleware,
    route: &RouteContext<'_>,
    out: &mut TranslatedMiddleware,
) -> Result<pb::middleware::Kind, Vec<FieldError>> {
    let sources = [
        ("secret", given(&rule.secret)),
        ("publicKey", given(&rule.public_key)),
        ("jwksUrl", given(&rule.jwks_url)),
        ("jwksFile", given(&rule.jwks_file)),
    ];
    let set: Vec<&str> = sources
        .iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| *k)
        .collect();
    if set.len() > 1 {
        return Err(rule_error(
            set[1],
            format!(
                "give only one of secret, publicKey, jwksUrl, jwksFile (found {})",
                set.join(", ")
            ),
        ));
    }
    let mut jwt = pb::JwtAuth::default();
    if let Some(secret) = given(&rule.secret) {
        jwt.hmac_secret = secret.as_bytes().to_vec();
    } else if let Some(pem) = given(&rule.public_key) {
        if !pem.contains("-----BEGIN ") {
            return Err(rule_error(
                "publicKey",
                "not a PEM public key (-----BEGIN PUBLIC KEY-----)",
            ));
        }
        jwt.public_key_pem = pem.to_owned();
    } else if let Some(url) = given(&rule.jwks_url) {
        let service = service_from_url(url, mw, route, JWKS_PURPOSE, false, out)
            .map_err(|e| rule_error("jwksUrl", e))?;
        jwt.remote_jwks = Some(pb::RemoteJwks {
            service: Some(service),
            cache_duration: None,
        });
    } else if let Some(path) = given(&rule.jwks_file) {
        // Read by the data plane (a file of the gateway's pod, as in Goma).
        jwt.jwks_file = path.to_owned();
    }
    for (i, alg) in rule.algorithms.iter().enumerate() {
        push_algorithm(&mut jwt.algorithms, alg, &format!("algorithms[{i}]"))?;
    }
    if let Some(alg) = &rule.alg {
        push_algorithm(&mut jwt.algorithms, alg, "alg")?;
    }
    jwt.issuer = rule.issuer.clone().unwrap_or_default();
    jwt.audience = rule.audience.clone().unwrap_or_default();
    if let Some(text) = rule
        .claims_expression
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    {
        let parsed =
            claims_expression::parse(text).map_err(|e| rule_error("claimsExpression", e))?;
        jwt.claims_expression = text.to_owned();
        jwt.claims = Some(parsed);
    }
    jwt.forward_headers = rule
        .forward_headers
        .iter()
        .map(|(header, claim)| pb::HeaderFromClaim {
            header: header.clone(),
            claim: claim.clone(),
        })
        .collect();
    jwt.forward_authorization = rule.forward_authorization;
    Ok(pb::middleware::Kind::Jwt(jwt))
}

/// A key source the user gave (blank counts as not given).
fn given(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Adds an algorithm once; ES512 cannot be enforced (ring has no P-521).
fn push_algorithm(list: &mut Vec<String>, alg: &str, field: &str) -> Result<(), Vec<FieldError>> {
    if alg == "ES512" {
        return Err(unenforceable(
            field,
            "ES512 (P-521) is not supported by the Sluice data plane; use ES256, ES384, EdDSA or RS/PS",
        ));
    }
    if !list.iter().any(|a| a == alg) {
        list.push(alg.to_owned());
    }
    Ok(())
}

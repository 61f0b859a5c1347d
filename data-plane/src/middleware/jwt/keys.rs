//! JWT signing algorithms and verification keys (HMAC secrets, PEM public keys, JWKS), verified
//! with ring. A key only ever verifies the algorithms of its own type, whatever a token's `alg`
//! says (no algorithm confusion), and only the algorithms the middleware accepts.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::{hmac, signature};
use serde_json::Value;

/// The algorithms this data plane verifies (ES512 is not in ring).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
}

impl Alg {
    pub const ALL: [Alg; 12] = [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::ES384,
        Alg::EdDSA,
    ];

    pub fn parse(name: &str) -> Result<Alg, String> {
        Ok(match name {
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            "ES512" => return Err("ES512 (P-521) is not supported by this data plane".into()),
            "none" => return Err("\"none\" (unsigned tokens) is never accepted".into()),
            other => return Err(format!("{other:?} is not a supported algorithm")),
        })
    }

    /// Bit of this algorithm in an [`AlgSet`].
    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

/// A set of algorithms.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AlgSet(u16);

impl AlgSet {
    pub fn insert(&mut self, alg: Alg) {
        self.0 |= alg.bit();
    }

    pub fn contains(self, alg: Alg) -> bool {
        self.0 & alg.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Every algorithm some key of `keys` can verify.
    pub fn of_keys(keys: &[Key]) -> AlgSet {
        let mut set = AlgSet::default();
        for k in keys {
            for alg in Alg::ALL {
                if k.verifies(alg) {
                    set.insert(alg);
                }
            }
        }
        set
    }

    /// The asymmetric algorithms: what a JWKS URL may serve keys for.
    pub fn asymmetric() -> AlgSet {
        let mut set = AlgSet::default();
        for alg in Alg::ALL {
            if !matches!(alg, Alg::HS256 | Alg::HS384 | Alg::HS512) {
                set.insert(alg);
            }
        }
        set
    }
}

/// Key material, by type.
pub enum Material {
    /// Keys for HS256, HS384 and HS512.
    Hmac(Box<[hmac::Key; 3]>),
    /// Big-endian modulus and exponent, without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// Uncompressed point.
    EcP256(Vec<u8>),
    EcP384(Vec<u8>),
    Ed25519(Vec<u8>),
}

/// A verification key.
pub struct Key {
    /// `kid` of a JWKS key; a key without one matches any token `kid`.
    pub kid: Option<String>,
    /// `alg` of a JWKS key: the only algorithm it verifies.
    pub alg: Option<Alg>,
    pub material: Material,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.material {
            Material::Hmac(_) => "hmac",
            Material::Rsa { .. } => "rsa",
            Material::EcP256(_) => "p-256",
            Material::EcP384(_) => "p-384",
            Material::Ed25519(_) => "ed25519",
        };
        write!(f, "Key({kind}, kid {:?})", self.kid)
    }
}

impl Key {
    fn new(material: Material) -> Key {
        Key {
            kid: None,
            alg: None,
            material,
        }
    }

    pub fn hmac(secret: &[u8]) -> Key {
        Key::new(Material::Hmac(Box::new([
            hmac::Key::new(hmac::HMAC_SHA256, secret),
            hmac::Key::new(hmac::HMAC_SHA384, secret),
            hmac::Key::new(hmac::HMAC_SHA512, secret),
        ])))
    }

    /// Whether this key may verify `alg` (its type, and its own `alg` when it has one).
    pub fn verifies(&self, alg: Alg) -> bool {
        let by_type = matches!(
            (alg, &self.material),
            (Alg::HS256 | Alg::HS384 | Alg::HS512, Material::Hmac(_))
                | (
                    Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512,
                    Material::Rsa { .. },
                )
                | (Alg::ES256, Material::EcP256(_))
                | (Alg::ES384, Material::EcP384(_))
                | (Alg::EdDSA, Material::Ed25519(_))
        );
        by_type && self.alg.is_none_or(|a| a == alg)
    }

    /// Checks `sig` over `message`; false for an algorithm of another key type.
    pub fn verify(&self, alg: Alg, message: &[u8], sig: &[u8]) -> bool {
        use signature as s;
        if !self.verifies(alg) {
            return false;
        }
        let rsa = |params: &'static s::RsaParameters| match &self.material {
            Material::Rsa { n, e } => s::RsaPublicKeyComponents { n, e }
                .verify(params, message, sig)
                .is_ok(),
            _ => false,
        };
        let point = |algorithm: &'static dyn s::VerificationAlgorithm, key: &[u8]| {
            s::UnparsedPublicKey::new(algorithm, key)
                .verify(message, sig)
                .is_ok()
        };
        match (alg, &self.material) {
            (Alg::HS256, Material::Hmac(k)) => hmac::verify(&k[0], message, sig).is_ok(),
            (Alg::HS384, Material::Hmac(k)) => hmac::verify(&k[1], message, sig).is_ok(),
            (Alg::HS512, Material::Hmac(k)) => hmac::verify(&k[2], message, sig).is_ok(),
            (Alg::RS256, _) => rsa(&s::RSA_PKCS1_2048_8192_SHA256),
            (Alg::RS384, _) => rsa(&s::RSA_PKCS1_2048_8192_SHA384),
            (Alg::RS512, _) => rsa(&s::RSA_PKCS1_2048_8192_SHA512),
            (Alg::PS256, _) => rsa(&s::RSA_PSS_2048_8192_SHA256),
            (Alg::PS384, _) => rsa(&s::RSA_PSS_2048_8192_SHA384),
            (Alg::PS512, _) => rsa(&s::RSA_PSS_2048_8192_SHA512),
            (Alg::ES256, Material::EcP256(p)) => point(&s::ECDSA_P256_SHA256_FIXED, p),
            (Alg::ES384, Material::EcP384(p)) => point(&s::ECDSA_P384_SHA384_FIXED, p),
            (Alg::EdDSA, Material::Ed25519(p)) => point(&s::ED25519, p),
            _ => false,
        }
    }
}

/// A PEM public key: `PUBLIC KEY` (SubjectPublicKeyInfo: RSA, EC P-256/P-384, Ed25519) or
/// `RSA PUBLIC KEY` (PKCS#1).
pub fn parse_pem_public_key(pem: &str) -> Result<Key, String> {
    let (label, der) = pem_block(pem)?;
    match label.as_str() {
        "PUBLIC KEY" => parse_spki(&der),
        "RSA PUBLIC KEY" => rsa_key(&der),
        other => Err(format!(
            "a PEM {other:?} block is not a public key (expected PUBLIC KEY or RSA PUBLIC KEY)"
        )),
    }
}

/// The label and bytes of the first PEM block.
fn pem_block(pem: &str) -> Result<(String, Vec<u8>), String> {
    let start = pem
        .find("-----BEGIN ")
        .ok_or("no PEM block (-----BEGIN ...-----)")?;
    let rest = &pem[start + 11..];
    let label_end = rest.find("-----").ok_or("unterminated PEM header")?;
    let label = &rest[..label_end];
    let body = &rest[label_end + 5..];
    let end_marker = format!("-----END {label}-----");
    let end = body
        .find(&end_marker)
        .ok_or_else(|| format!("no {end_marker:?}"))?;
    let b64: String = body[..end].split_whitespace().collect();
    let der = STANDARD
        .decode(b64)
        .map_err(|e| format!("PEM body is not base64: {e}"))?;
    Ok((label.to_owned(), der))
}

/// One DER element: (tag, content, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 3 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OID: u8 = 0x06;
const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

fn parse_spki(input: &[u8]) -> Result<Key, String> {
    let bad = || "not a DER SubjectPublicKeyInfo".to_owned();
    let (SEQUENCE, spki, _) = der(input).ok_or_else(bad)? else {
        return Err(bad());
    };
    let (SEQUENCE, algorithm, rest) = der(spki).ok_or_else(bad)? else {
        return Err(bad());
    };
    let (BIT_STRING, bits, _) = der(rest).ok_or_else(bad)? else {
        return Err(bad());
    };
    let Some((0, key)) = bits.split_first() else {
        return Err(bad());
    };
    let (OID, oid, params) = der(algorithm).ok_or_else(bad)? else {
        return Err(bad());
    };
    match oid {
        o if o == OID_RSA => rsa_key(key),
        o if o == OID_ED25519 => ed25519_key(key.to_vec()),
        o if o == OID_EC => {
            let (OID, curve, _) = der(params).ok_or_else(bad)? else {
                return Err(bad());
            };
            match curve {
                c if c == OID_P256 => ec_key(key.to_vec(), 65, "P-256"),
                c if c == OID_P384 => ec_key(key.to_vec(), 97, "P-384"),
                c if c == OID_P521 => Err("P-521 (ES512) keys are not supported".into()),
                _ => Err("unsupported elliptic curve (P-256 and P-384 are)".into()),
            }
        }
        _ => Err("unsupported key type (RSA, EC P-256/P-384 and Ed25519 are)".into()),
    }
}

/// A PKCS#1 RSAPublicKey.
fn rsa_key(input: &[u8]) -> Result<Key, String> {
    let bad = || "not a DER RSA public key".to_owned();
    let (SEQUENCE, seq, _) = der(input).ok_or_else(bad)? else {
        return Err(bad());
    };
    let (INTEGER, n, rest) = der(seq).ok_or_else(bad)? else {
        return Err(bad());
    };
    let (INTEGER, e, _) = der(rest).ok_or_else(bad)? else {
        return Err(bad());
    };
    rsa_components(n, e)
}

fn rsa_components(n: &[u8], e: &[u8]) -> Result<Key, String> {
    let trim = |b: &[u8]| b[b.iter().take_while(|&&x| x == 0).count()..].to_vec();
    let (n, e) = (trim(n), trim(e));
    if n.len() < 256 {
        return Err(format!(
            "RSA key of {} bits: at least 2048 are required",
            n.len() * 8
        ));
    }
    if n.len() > 1024 || e.is_empty() || e.len() > 4 {
        return Err("RSA key: modulus over 8192 bits or invalid exponent".into());
    }
    Ok(Key::new(Material::Rsa { n, e }))
}

fn ec_key(point: Vec<u8>, len: usize, curve: &str) -> Result<Key, String> {
    if point.len() != len || point[0] != 4 {
        return Err(format!("{curve} key: expected an uncompressed point"));
    }
    Ok(Key::new(if len == 65 {
        Material::EcP256(point)
    } else {
        Material::EcP384(point)
    }))
}

fn ed25519_key(key: Vec<u8>) -> Result<Key, String> {
    if key.len() != 32 {
        return Err("Ed25519 key: expected 32 bytes".into());
    }
    Ok(Key::new(Material::Ed25519(key)))
}

/// The usable signing keys of a JWKS document. Keys for encryption, or of types or curves this
/// data plane does not verify, are left out (named in the second list, for logs); a document
/// with no usable key at all is an error.
pub fn parse_jwks(json: &[u8]) -> Result<(Vec<Key>, Vec<String>), String> {
    let doc: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let keys = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("no \"keys\" array")?;
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for (i, jwk) in keys.iter().enumerate() {
        match parse_jwk(jwk) {
            Ok(Some(key)) => usable.push(key),
            Ok(None) => {}
            Err(e) => skipped.push(format!("keys[{i}]: {e}")),
        }
    }
    if usable.is_empty() {
        let why = if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({})", skipped.join("; "))
        };
        return Err(format!("no usable signing key{why}"));
    }
    Ok((usable, skipped))
}

/// One JWK: `Ok(None)` for a key that is not for signatures.
fn parse_jwk(jwk: &Value) -> Result<Option<Key>, String> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    if field("use").is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let alg = field("alg").map(Alg::parse).transpose()?;
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let text = field(name).ok_or_else(|| format!("missing {name:?}"))?;
        URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .map_err(|_| format!("{name:?} is not base64url"))
    };
    let mut key = match field("kty") {
        Some("RSA") => rsa_components(&bytes("n")?, &bytes("e")?)?,
        Some("EC") => {
            let (len, name) = match field("crv") {
                Some("P-256") => (32, "P-256"),
                Some("P-384") => (48, "P-384"),
                other => return Err(format!("unsupported curve {other:?}")),
            };
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != len || y.len() != len {
                return Err(format!("{name} coordinates must be {len} bytes"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            ec_key(point, 1 + 2 * len, name)?
        }
        Some("OKP") => match field("crv") {
            Some("Ed25519") => ed25519_key(bytes("x")?)?,
            other => return Err(format!("unsupported curve {other:?}")),
        },
        Some("oct") => Key::hmac(&bytes("k")?),
        other => return Err(format!("unsupported key type {other:?}")),
    };
    key.kid = field("kid").map(str::to_owned);
    key.alg = alg;
    Ok(Some(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::KeyPair;

    fn pem(label: &str, der: &[u8]) -> String {
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            STANDARD.encode(der)
        )
    }

    /// One DER element (short or one-byte long form lengths).
    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        if content.len() < 0x80 {
            v.push(content.len() as u8);
        } else {
            v.extend([0x81, content.len() as u8]);
        }
        v.extend_from_slice(content);
        v
    }

    /// SubjectPublicKeyInfo with these algorithm parameters and key.
    fn spki(oid_params: &[u8], key: &[u8]) -> Vec<u8> {
        let alg = tlv(SEQUENCE, oid_params);
        let bits = tlv(BIT_STRING, &[&[0u8][..], key].concat());
        tlv(SEQUENCE, &[alg, bits].concat())
    }

    fn oid(bytes: &[u8]) -> Vec<u8> {
        tlv(OID, bytes)
    }

    #[test]
    fn ec_p256_pem_verifies_its_signatures_only_for_es256() {
        let rng = SystemRandom::new();
        let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &rng,
        )
        .unwrap();
        let pair = signature::EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .unwrap();
        let params = [oid(OID_EC), oid(OID_P256)].concat();
        let key = parse_pem_public_key(&pem(
            "PUBLIC KEY",
            &spki(&params, pair.public_key().as_ref()),
        ))
        .unwrap();
        let sig = pair.sign(&rng, b"msg").unwrap();
        assert!(key.verify(Alg::ES256, b"msg", sig.as_ref()));
        assert!(!key.verify(Alg::ES256, b"msh", sig.as_ref()));
        assert!(!key.verify(Alg::ES384, b"msg", sig.as_ref()));
        assert!(!key.verify(Alg::HS256, b"msg", sig.as_ref()));
        assert_eq!(AlgSet::of_keys(&[key]), {
            let mut s = AlgSet::default();
            s.insert(Alg::ES256);
            s
        });
    }

    #[test]
    fn ed25519_pem() {
        let rng = SystemRandom::new();
        let pkcs8 = signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let key = parse_pem_public_key(&pem(
            "PUBLIC KEY",
            &spki(&oid(OID_ED25519), pair.public_key().as_ref()),
        ))
        .unwrap();
        let sig = pair.sign(b"data");
        assert!(key.verify(Alg::EdDSA, b"data", sig.as_ref()));
        assert!(!key.verify(Alg::EdDSA, b"dat", sig.as_ref()));
    }

    #[test]
    fn hmac_key_is_never_used_for_asymmetric_algorithms() {
        let key = Key::hmac(b"secret");
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, b"secret"), b"m");
        assert!(key.verify(Alg::HS256, b"m", tag.as_ref()));
        assert!(!key.verify(Alg::HS384, b"m", tag.as_ref()));
        assert!(!key.verify(Alg::RS256, b"m", tag.as_ref()));
    }

    #[test]
    fn bad_pem_and_unsupported_keys_are_errors() {
        assert!(parse_pem_public_key("nothing").is_err());
        assert!(parse_pem_public_key(&pem("CERTIFICATE", b"x")).is_err());
        assert!(parse_pem_public_key(&pem("PUBLIC KEY", b"\x30\x05junk")).is_err());
        let p521 = [oid(OID_EC), oid(OID_P521)].concat();
        let e = parse_pem_public_key(&pem("PUBLIC KEY", &spki(&p521, &[4; 133])));
        assert!(e.unwrap_err().contains("P-521"));
        // A 1024-bit RSA key is refused.
        let mut rsa = vec![SEQUENCE, 0x81, 0x89, INTEGER, 0x81, 0x81, 0];
        rsa.extend([0xc5; 128]);
        rsa.extend([INTEGER, 3, 1, 0, 1]);
        assert!(rsa_key(&rsa).unwrap_err().contains("2048"));
    }

    #[test]
    fn algorithms_parse_and_refuse_none_and_es512() {
        assert_eq!(Alg::parse("PS384"), Ok(Alg::PS384));
        assert!(Alg::parse("none").unwrap_err().contains("never"));
        assert!(Alg::parse("ES512").unwrap_err().contains("not supported"));
        assert!(Alg::parse("hs256").is_err());
        assert!(!AlgSet::asymmetric().contains(Alg::HS256));
        assert!(AlgSet::asymmetric().contains(Alg::EdDSA));
    }

    #[test]
    fn jwks_keeps_signing_keys_and_skips_the_rest() {
        let x = URL_SAFE_NO_PAD.encode([9u8; 32]);
        let doc = serde_json::json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "a"},
            {"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"},
            {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
            {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "h"},
        ]});
        let (keys, skipped) = parse_jwks(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0].kid.as_deref(), Some("a"));
        assert!(keys[1].verifies(Alg::HS256) && !keys[1].verifies(Alg::HS512));
        assert_eq!(skipped.len(), 1, "{skipped:?}");
        assert!(parse_jwks(br#"{"keys": []}"#).is_err());
        assert!(parse_jwks(b"not json").is_err());
    }
}

//! Stored passwords of basicAuth users (htpasswd formats) and their verification.
//!
//! Every comparison is constant-time over the digest: plain text is kept as its SHA-256, so
//! neither content nor length leaks through timing. bcrypt is slow on purpose (tens of
//! milliseconds): callers run it off the async threads and cache successes.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use md5::{Digest, Md5};
use ring::digest;

/// A stored password, parsed once at compile time.
#[derive(Clone)]
pub enum StoredPassword {
    /// `$2a$`, `$2b$`, `$2y$` (the whole hash; the bcrypt crate parses it).
    Bcrypt(Box<str>),
    /// `$1$` (md5-crypt) or `$apr1$` (Apache's variant): the salt and the whole hash.
    Md5Crypt {
        magic: &'static str,
        salt: Box<str>,
        hash: Box<str>,
    },
    /// `{SHA}`: base64 of SHA-1, decoded.
    Sha1([u8; 20]),
    /// Plain text, kept as its SHA-256.
    Plain([u8; 32]),
}

impl std::fmt::Debug for StoredPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print password material.
        f.write_str(match self {
            StoredPassword::Bcrypt(_) => "Bcrypt(..)",
            StoredPassword::Md5Crypt { .. } => "Md5Crypt(..)",
            StoredPassword::Sha1(_) => "Sha1(..)",
            StoredPassword::Plain(_) => "Plain(..)",
        })
    }
}

const CRYPT_ALPHABET: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

impl StoredPassword {
    /// Recognises the format by its prefix; a malformed hash is an error (it would otherwise be
    /// taken for a plain-text password nobody can type).
    pub fn parse(stored: &str) -> Result<StoredPassword, String> {
        if let Some(rest) = ["$2a$", "$2b$", "$2y$"]
            .iter()
            .find_map(|p| stored.strip_prefix(p))
        {
            return parse_bcrypt(stored, rest);
        }
        for magic in ["$apr1$", "$1$"] {
            if let Some(rest) = stored.strip_prefix(magic) {
                let (salt, hash) = rest
                    .split_once('$')
                    .ok_or_else(|| format!("{magic} hash: missing \"$\" after the salt"))?;
                if salt.len() > 8 || !salt.bytes().all(|b| b != b'$' && b != b':') {
                    return Err(format!(
                        "{magic} hash: the salt must be at most 8 characters"
                    ));
                }
                if hash.len() != 22 || !hash.bytes().all(|b| CRYPT_ALPHABET.contains(&b)) {
                    return Err(format!(
                        "{magic} hash: expected 22 characters of ./0-9A-Za-z after the salt"
                    ));
                }
                return Ok(StoredPassword::Md5Crypt {
                    magic,
                    salt: salt.into(),
                    hash: stored.into(),
                });
            }
        }
        if let Some(b64) = stored.strip_prefix("{SHA}") {
            let bytes = STANDARD
                .decode(b64)
                .map_err(|e| format!("{{SHA}} hash: not base64: {e}"))?;
            let digest: [u8; 20] = bytes
                .try_into()
                .map_err(|_| "{SHA} hash: not a 20-byte SHA-1 digest".to_owned())?;
            return Ok(StoredPassword::Sha1(digest));
        }
        Ok(StoredPassword::Plain(sha256(stored.as_bytes())))
    }

    /// Whether checking this format is slow enough to need a blocking thread.
    pub fn is_slow(&self) -> bool {
        matches!(self, StoredPassword::Bcrypt(_))
    }

    /// Checks `password` against the stored one. bcrypt blocks for tens of milliseconds.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            StoredPassword::Bcrypt(hash) => bcrypt::verify(password, hash).unwrap_or(false),
            StoredPassword::Md5Crypt { magic, salt, hash } => {
                let computed = md5_crypt(password, salt.as_bytes(), magic);
                constant_time_eq(computed.as_bytes(), hash.as_bytes())
            }
            StoredPassword::Sha1(stored) => {
                let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, password);
                constant_time_eq(d.as_ref(), stored)
            }
            StoredPassword::Plain(stored) => constant_time_eq(&sha256(password), stored),
        }
    }

    /// The stored form, for cache keys (a changed password invalidates cached successes).
    pub fn fingerprint(&self) -> [u8; 32] {
        match self {
            StoredPassword::Bcrypt(h) => sha256(h.as_bytes()),
            StoredPassword::Md5Crypt { hash, .. } => sha256(hash.as_bytes()),
            StoredPassword::Sha1(d) => sha256(d),
            StoredPassword::Plain(d) => *d,
        }
    }
}

fn parse_bcrypt(stored: &str, rest: &str) -> Result<StoredPassword, String> {
    // "$2b$" cost "$" 22 characters of salt and 31 of hash.
    let valid = rest.len() == 2 + 1 + 53
        && rest.as_bytes()[2] == b'$'
        && rest[..2]
            .parse::<u32>()
            .is_ok_and(|c| (4..=31).contains(&c))
        && rest[3..].bytes().all(|b| CRYPT_ALPHABET.contains(&b));
    if valid {
        Ok(StoredPassword::Bcrypt(stored.into()))
    } else {
        Err("bcrypt hash: expected $2a$/$2b$/$2y$, a cost of 04-31, \"$\" and 53 characters".into())
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, data).as_ref());
    out
}

/// Equality whose time depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The md5-crypt scheme of FreeBSD (`$1$`) and Apache (`$apr1$`): 1000 rounds of MD5.
pub fn md5_crypt(password: &[u8], salt: &[u8], magic: &str) -> String {
    let salt = &salt[..salt.len().min(8)];
    let alternate = Md5::new()
        .chain_update(password)
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic.as_bytes());
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alternate[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut last = ctx.finalize();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(last);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(last);
        } else {
            c.update(password);
        }
        last = c.finalize();
    }
    let f = last;
    let mut out = String::with_capacity(magic.len() + salt.len() + 23);
    out.push_str(magic);
    out.push_str(&String::from_utf8_lossy(salt));
    out.push('$');
    let mut put = |v: u32, n: usize| {
        let mut v = v;
        for _ in 0..n {
            out.push(CRYPT_ALPHABET[(v & 0x3f) as usize] as char);
            v >>= 6;
        }
    };
    let triple = |a: usize, b: usize, c: usize| {
        (u32::from(f[a]) << 16) | (u32::from(f[b]) << 8) | u32::from(f[c])
    };
    put(triple(0, 6, 12), 4);
    put(triple(1, 7, 13), 4);
    put(triple(2, 8, 14), 4);
    put(triple(3, 9, 15), 4);
    put(triple(4, 10, 5), 4);
    put(u32::from(f[11]), 2);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(stored: &str, good: &str, bad: &str) {
        let p = StoredPassword::parse(stored).unwrap();
        assert!(p.verify(good.as_bytes()), "{stored} should accept {good:?}");
        assert!(!p.verify(bad.as_bytes()), "{stored} should refuse {bad:?}");
    }

    #[test]
    fn md5_crypt_matches_openssl() {
        // `openssl passwd -1 -salt saltsalt password`, `-apr1 -salt abcdefgh 'p@ss w0rd'`.
        check("$1$saltsalt$qjXMvbEw8oaL.CzflDtaK/", "password", "Password");
        check(
            "$apr1$abcdefgh$UkZoB0qp2g9KE9.krwnMP0",
            "p@ss w0rd",
            "p@ss w0r",
        );
        check("$1$x$fwjfZtMwarkdetsjiQreU1", "", "x");
    }

    #[test]
    fn sha_and_plain() {
        check("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "password", "passwor");
        check("s3cret", "s3cret", "s3cret ");
        assert!(!StoredPassword::parse("s3cret").unwrap().is_slow());
    }

    #[test]
    fn bcrypt_all_prefixes() {
        let hash = bcrypt::hash_with_salt("hunter2", 4, [7u8; 16])
            .unwrap()
            .format_for_version(bcrypt::Version::TwoB);
        let rest = &hash[4..];
        for prefix in ["$2a$", "$2b$", "$2y$"] {
            let stored = format!("{prefix}{rest}");
            check(&stored, "hunter2", "hunter3");
            assert!(StoredPassword::parse(&stored).unwrap().is_slow());
        }
    }

    #[test]
    fn malformed_hashes_are_errors_not_plain_text() {
        for bad in [
            "$2y$10$short",
            "$2y$99$aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "$apr1$nosalt",
            "$1$salt$tooshort",
            "$1$waytoolongsalt$qjXMvbEw8oaL.CzflDtaK/",
            "{SHA}not base64!",
            "{SHA}c2hvcnQ=",
        ] {
            assert!(StoredPassword::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn debug_hides_material() {
        let p = StoredPassword::parse("s3cret").unwrap();
        assert_eq!(format!("{p:?}"), "Plain(..)");
    }
}

//! HTTP Basic authentication and CSRF tokens.
//!
//! The password is stored either plain (host mode's `--password-file`) or, in
//! the image, as a salted SHA-256 line `sha256$<salt hex>$<hex of SHA-256(salt || password)>`
//! (the form krazy-build's `secrets::hash_password` writes)
//! (the password is a random 20+ character string, so a slow hash would buy
//! nothing). Comparisons are constant time.

use sha2::{Digest, Sha256};

/// The user name of HTTP Basic auth.
pub const USER: &str = "krazy";

/// Errors of reading a stored password.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The stored `sha256$` line is malformed.
    #[error("the stored password hash is malformed (want sha256$<salt hex>$<64 hex digits>)")]
    BadHash,
    /// The password is empty.
    #[error("the password is empty")]
    Empty,
}

/// How the instance password is known.
#[derive(Clone)]
pub enum Password {
    /// The plain password (host mode).
    Plain(Vec<u8>),
    /// A salt and SHA-256(salt || password).
    Salted {
        /// The salt.
        salt: Vec<u8>,
        /// The digest.
        digest: [u8; 32],
    },
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Password {
    /// A plain password; surrounding whitespace (a trailing newline) is removed.
    pub fn plain(text: &str) -> Result<Self, AuthError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(AuthError::Empty);
        }
        Ok(Password::Plain(t.as_bytes().to_vec()))
    }

    /// Parses the stored form `sha256$<salt hex>$<digest hex>`.
    pub fn parse_stored(text: &str) -> Result<Self, AuthError> {
        let mut parts = text.trim().split('$');
        let (Some("sha256"), Some(salt), Some(d), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::BadHash);
        };
        let salt = unhex(salt).ok_or(AuthError::BadHash)?;
        let digest: [u8; 32] = unhex(d)
            .and_then(|v| v.try_into().ok())
            .ok_or(AuthError::BadHash)?;
        Ok(Password::Salted { salt, digest })
    }

    /// The stored form of `password` with `salt` (what an image build writes).
    pub fn stored_form(password: &str, salt: &[u8]) -> String {
        let digest = Sha256::new()
            .chain_update(salt)
            .chain_update(password.as_bytes())
            .finalize();
        format!("sha256${}${}", hex(salt), hex(&digest))
    }

    /// Checks a candidate password in constant time (for a given stored length).
    pub fn verify(&self, candidate: &[u8]) -> bool {
        match self {
            Password::Plain(p) => {
                // Compare digests so neither length nor content leaks through timing.
                let a = Sha256::digest(p);
                let b = Sha256::digest(candidate);
                ct_eq(&a, &b)
            }
            Password::Salted { salt, digest } => {
                let d = Sha256::new()
                    .chain_update(salt)
                    .chain_update(candidate)
                    .finalize();
                ct_eq(&d, digest)
            }
        }
    }

    /// Checks an `Authorization` header value (`Basic base64(krazy:password)`).
    pub fn check_header(&self, header: Option<&[u8]>) -> bool {
        let Some(h) = header else { return false };
        let Some(b64) = h
            .strip_prefix(b"Basic ")
            .or_else(|| h.strip_prefix(b"basic "))
        else {
            return false;
        };
        let Some(raw) = base64_decode(b64.trim_ascii()) else {
            return false;
        };
        let Some(colon) = raw.iter().position(|&b| b == b':') else {
            return false;
        };
        let (user, pass) = (&raw[..colon], &raw[colon + 1..]);
        // Evaluate both, then combine, so a wrong user costs the same time.
        let pass_ok = self.verify(pass);
        let user_ok = ct_eq(user, USER.as_bytes());
        pass_ok & user_ok
    }
}

/// Constant-time equality of two byte strings (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Decodes standard base64 (padding optional); `None` on bad input. Output is bounded by input.
pub fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let trimmed = input
        .strip_suffix(b"==")
        .or_else(|| input.strip_suffix(b"="))
        .unwrap_or(input);
    if trimmed.len() % 4 == 1 || input.len() > 4096 {
        return None;
    }
    let mut out = Vec::with_capacity(trimmed.len() * 3 / 4);
    for chunk in trimmed.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= val(c)? << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// Encodes standard base64 with padding.
pub fn base64_encode(input: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Per-boot CSRF tokens: an HMAC-SHA256 of the form's purpose under a random secret.
pub struct Csrf {
    key: ring::hmac::Key,
}

impl Csrf {
    /// A fresh random secret (from the kernel's generator).
    pub fn random() -> Result<Self, ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)?;
        Ok(Csrf { key })
    }

    /// A fixed secret (tests).
    pub fn from_secret(secret: &[u8]) -> Self {
        Csrf {
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret),
        }
    }

    /// The token for forms posting to `action` (a path such as `/services/web/restart`).
    pub fn token(&self, action: &str) -> String {
        hex(ring::hmac::sign(&self.key, action.as_bytes()).as_ref())
    }

    /// Whether `token` is the token for `action`.
    pub fn check(&self, action: &str, token: &str) -> bool {
        match unhex(token) {
            Some(t) => ring::hmac::verify(&self.key, action.as_bytes(), &t).is_ok(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth() {
        let p = Password::plain("s3cret-pass\n").unwrap();
        let h = |s: &str| format!("Basic {}", base64_encode(s.as_bytes()));
        assert!(p.check_header(Some(h("krazy:s3cret-pass").as_bytes())));
        assert!(!p.check_header(Some(h("krazy:wrong").as_bytes())));
        assert!(!p.check_header(Some(h("root:s3cret-pass").as_bytes())));
        assert!(!p.check_header(Some(b"Basic !!!")));
        assert!(!p.check_header(Some(b"Bearer x")));
        assert!(!p.check_header(None));
        let stored = Password::stored_form("s3cret-pass", b"salty");
        let s = Password::parse_stored(&stored).unwrap();
        assert!(s.check_header(Some(h("krazy:s3cret-pass").as_bytes())));
        assert!(!s.check_header(Some(h("krazy:s3cret-pas").as_bytes())));
        assert!(Password::parse_stored("sha256$zz$00").is_err());
        assert!(Password::plain(" \n").is_err());
    }

    #[test]
    fn base64_round_trip() {
        for s in ["", "f", "fo", "foo", "foob", "fooba", "foobar"] {
            assert_eq!(
                base64_decode(base64_encode(s.as_bytes()).as_bytes()).unwrap(),
                s.as_bytes()
            );
        }
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_decode(b"Zg"), Some(b"f".to_vec()));
        assert_eq!(base64_decode(b"Z"), None);
    }

    #[test]
    fn csrf() {
        let c = Csrf::from_secret(b"k");
        let t = c.token("/services/a/restart");
        assert!(c.check("/services/a/restart", &t));
        assert!(!c.check("/services/b/restart", &t));
        assert!(!c.check("/services/a/restart", ""));
        assert!(!Csrf::random().unwrap().check("/services/a/restart", &t));
    }
}

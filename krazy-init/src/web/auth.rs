//! HTTP Basic authentication and CSRF tokens.
//!
//! The password is stored either plain (host mode's `--password-file`) or, in
//! the image, as PBKDF2-HMAC-SHA256:
//! `pbkdf2-sha256$<iterations>$<salt hex>$<hex of the 32-byte derived key>`
//! (the form krazy-build's `secrets::hash_password` writes, with
//! [`PBKDF2_ITERATIONS`] iterations). Comparisons are constant time.
//!
//! [`Verifier`] checks `Authorization` headers for the web server: a
//! credential that verified once is recognised again by an HMAC-SHA256 of it
//! under a per-boot key (made on first use, never on the boot path), so the
//! CLI, which opens a connection per request, costs one PBKDF2 per boot; the
//! slow check itself runs on a blocking thread, one at a time.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// The user name of HTTP Basic auth.
pub const USER: &str = "krazy";

/// PBKDF2-HMAC-SHA256 iterations of a stored password (krazy-build's
/// `secrets::PBKDF2_ITERATIONS`): 95 ms on an x86 build machine, a few tenths
/// of a second estimated on a Raspberry Pi 3 core; paid once per boot and
/// credential, thanks to the cache.
pub const PBKDF2_ITERATIONS: u32 = 100_000;

/// Verified credentials remembered (by HMAC) per boot.
const CACHED_CREDENTIALS: usize = 8;

/// The longest `Authorization` header looked at.
const MAX_AUTH_HEADER: usize = 1024;

/// Errors of reading a stored password.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The stored line is malformed.
    #[error("the stored password hash is malformed (want pbkdf2-sha256$<iterations>$<salt hex>$<64 hex digits>)")]
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
    /// PBKDF2-HMAC-SHA256 of the password.
    Pbkdf2 {
        /// Iterations.
        iterations: NonZeroU32,
        /// The salt.
        salt: Vec<u8>,
        /// The derived key.
        hash: [u8; 32],
    },
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(..)")
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    hex::decode(s).ok()
}

fn hex(b: &[u8]) -> String {
    hex::encode(b)
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

    /// Parses the stored form `pbkdf2-sha256$<iterations>$<salt hex>$<hash hex>`.
    pub fn parse_stored(text: &str) -> Result<Self, AuthError> {
        let mut parts = text.trim().split('$');
        let (Some("pbkdf2-sha256"), Some(iter), Some(salt), Some(d), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(AuthError::BadHash);
        };
        let iterations = iter.parse::<NonZeroU32>().map_err(|_| AuthError::BadHash)?;
        let salt = unhex(salt).ok_or(AuthError::BadHash)?;
        let hash: [u8; 32] = unhex(d)
            .and_then(|v| v.try_into().ok())
            .ok_or(AuthError::BadHash)?;
        Ok(Password::Pbkdf2 {
            iterations,
            salt,
            hash,
        })
    }

    /// The stored form of `password` with `salt` and `iterations` (what an image build writes).
    pub fn stored_form(password: &str, salt: &[u8], iterations: NonZeroU32) -> String {
        let mut hash = [0u8; 32];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA256,
            iterations,
            salt,
            password.as_bytes(),
            &mut hash,
        );
        format!("pbkdf2-sha256${iterations}${}${}", hex(salt), hex(&hash))
    }

    /// Checks a candidate password in constant time (for a given stored
    /// length). Slow for a stored password: PBKDF2 runs its iterations.
    pub fn verify(&self, candidate: &[u8]) -> bool {
        match self {
            Password::Plain(p) => {
                // Compare digests so neither length nor content leaks through timing.
                let a = Sha256::digest(p);
                let b = Sha256::digest(candidate);
                ct_eq(&a, &b)
            }
            Password::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => ring::pbkdf2::verify(
                ring::pbkdf2::PBKDF2_HMAC_SHA256,
                *iterations,
                salt,
                candidate,
                hash,
            )
            .is_ok(),
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

/// Checks `Authorization` headers against the password for the web server:
/// cached per credential, slow checks on a blocking thread one at a time.
#[derive(Clone)]
pub struct Verifier(Arc<VerifierInner>);

struct VerifierInner {
    password: Password,
    one_at_a_time: tokio::sync::Semaphore,
    /// The per-boot key of the cache, made by the first slow check.
    key: OnceLock<Option<ring::hmac::Key>>,
    verified: Mutex<VecDeque<ring::hmac::Tag>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier(..)")
    }
}

impl Verifier {
    /// A verifier of `password`.
    pub fn new(password: Password) -> Self {
        Verifier(Arc::new(VerifierInner {
            password,
            one_at_a_time: tokio::sync::Semaphore::new(1),
            key: OnceLock::new(),
            verified: Mutex::new(VecDeque::new()),
        }))
    }

    fn cached(&self, header: &[u8]) -> bool {
        let Some(Some(key)) = self.0.key.get() else {
            return false;
        };
        let tag = ring::hmac::sign(key, header);
        let v = self.0.verified.lock().unwrap_or_else(|p| p.into_inner());
        v.iter()
            .fold(false, |hit, t| hit | ct_eq(t.as_ref(), tag.as_ref()))
    }

    /// Whether `header` holds the right credentials.
    pub async fn check(&self, header: Option<&[u8]>) -> bool {
        let Some(h) = header.filter(|h| h.len() <= MAX_AUTH_HEADER) else {
            return false;
        };
        if self.cached(h) {
            return true;
        }
        let Ok(_permit) = self.0.one_at_a_time.acquire().await else {
            return false;
        };
        if self.cached(h) {
            return true;
        }
        let inner = self.0.clone();
        let h = h.to_vec();
        tokio::task::spawn_blocking(move || {
            if !inner.password.check_header(Some(&h)) {
                return false;
            }
            let key = inner.key.get_or_init(|| {
                let rng = ring::rand::SystemRandom::new();
                ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).ok()
            });
            if let Some(key) = key {
                let mut v = inner.verified.lock().unwrap_or_else(|p| p.into_inner());
                if v.len() >= CACHED_CREDENTIALS {
                    v.pop_front();
                }
                v.push_back(ring::hmac::sign(key, &h));
            }
            true
        })
        .await
        .unwrap_or(false)
    }
}

/// Constant-time equality of two byte strings (the length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Standard base64, padding optional and trailing bits not checked, as
/// browsers and curl send it in a Basic `Authorization` header.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes standard base64 (padding optional); `None` on bad input. Output is bounded by input.
pub fn base64_decode(input: &[u8]) -> Option<Vec<u8>> {
    if input.len() > 4096 {
        return None;
    }
    B64.decode(input).ok()
}

/// Encodes standard base64 with padding.
pub fn base64_encode(input: &[u8]) -> String {
    B64.encode(input)
}

/// Per-boot CSRF tokens: an HMAC-SHA256 of the form's purpose under a random
/// secret, made on first use (so nothing on the boot path waits for the
/// kernel's random generator).
pub struct Csrf {
    key: OnceLock<Option<ring::hmac::Key>>,
}

impl Csrf {
    /// A fresh random secret (from the kernel's generator), made now.
    pub fn random() -> Result<Self, ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        let key = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng)?;
        Ok(Csrf {
            key: OnceLock::from(Some(key)),
        })
    }

    /// A random secret made when the first token is asked for.
    pub fn lazy() -> Self {
        Csrf {
            key: OnceLock::new(),
        }
    }

    /// A fixed secret (tests).
    pub fn from_secret(secret: &[u8]) -> Self {
        Csrf {
            key: OnceLock::from(Some(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret))),
        }
    }

    fn key(&self) -> Option<&ring::hmac::Key> {
        self.key
            .get_or_init(|| {
                let rng = ring::rand::SystemRandom::new();
                let k = ring::hmac::Key::generate(ring::hmac::HMAC_SHA256, &rng).ok();
                if k.is_none() {
                    tracing::error!(
                        "cannot get random bytes for the CSRF secret: forms are refused"
                    );
                }
                k
            })
            .as_ref()
    }

    /// The token for forms posting to `action` (a path such as `/services/web/restart`).
    pub fn token(&self, action: &str) -> String {
        match self.key() {
            Some(k) => hex(ring::hmac::sign(k, action.as_bytes()).as_ref()),
            None => String::new(),
        }
    }

    /// Whether `token` is the token for `action`.
    pub fn check(&self, action: &str, token: &str) -> bool {
        match (self.key(), unhex(token)) {
            (Some(k), Some(t)) => ring::hmac::verify(k, action.as_bytes(), &t).is_ok(),
            _ => false,
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
        let stored = Password::stored_form("s3cret-pass", b"salty", NonZeroU32::new(10).unwrap());
        assert!(
            stored.starts_with("pbkdf2-sha256$10$73616c7479$"),
            "{stored}"
        );
        let s = Password::parse_stored(&stored).unwrap();
        assert!(s.check_header(Some(h("krazy:s3cret-pass").as_bytes())));
        assert!(!s.check_header(Some(h("krazy:s3cret-pas").as_bytes())));
        assert!(Password::parse_stored("sha256$zz$00").is_err());
        assert!(Password::parse_stored(&format!("sha256$00${}", "0".repeat(64))).is_err());
        assert!(Password::parse_stored(&format!("pbkdf2-sha256$0$00${}", "0".repeat(64))).is_err());
        assert!(Password::plain(" \n").is_err());
    }

    /// The published PBKDF2-HMAC-SHA256 vector (RFC 7914 section 11,
    /// "passwd"/"salt", 1 iteration), which krazy-build's writer is tested
    /// against too.
    #[test]
    fn pbkdf2_matches_the_rfc_vector_and_krazy_builds_form() {
        let stored = Password::stored_form("passwd", b"salt", NonZeroU32::new(1).unwrap());
        assert_eq!(
            stored,
            "pbkdf2-sha256$1$73616c74$55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc"
        );
        let p = Password::parse_stored(&stored).unwrap();
        assert!(p.verify(b"passwd") && !p.verify(b"passwe"));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_verifier_caches_only_verified_credentials() {
        let stored = Password::stored_form("s3cret-pass", b"salty", NonZeroU32::new(10).unwrap());
        let v = Verifier::new(Password::parse_stored(&stored).unwrap());
        let good = format!("Basic {}", base64_encode(b"krazy:s3cret-pass"));
        let bad = format!("Basic {}", base64_encode(b"krazy:s3cret-pasS"));
        assert!(v.0.key.get().is_none(), "no key before the first check");
        assert!(!v.check(Some(bad.as_bytes())).await);
        assert!(!v.cached(good.as_bytes()));
        assert!(v.check(Some(good.as_bytes())).await);
        assert!(v.cached(good.as_bytes()));
        assert!(!v.cached(bad.as_bytes()));
        assert!(!v.check(Some(bad.as_bytes())).await);
        assert!(v.check(Some(good.as_bytes())).await);
        assert!(!v.check(None).await);
        assert!(!v.check(Some(&[b'a'; 2000])).await);
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
        let lazy = Csrf::lazy();
        assert!(lazy.key.get().is_none());
        let t = lazy.token("/reboot");
        assert!(lazy.check("/reboot", &t) && !lazy.check("/poweroff", &t));
    }
}

//! Identity for every liveshop host: HS256 JSON Web Tokens with the claims `sub`, `room`, `role`,
//! `exp` and optional `name`, `nbf`, `iat` and `dev` (the guest device, on guest tokens).
//!
//! Tokens are minted by the platform or a merchant with any JWT library; hosts verify them here
//! and hand the resulting [`Identity`] to the room or shop actor. Verification reads no clock:
//! the caller passes `now`, so the same code runs natively, in WASM components and in workers.
//!
//! ```
//! use liveshop_identity::{Claims, Role, Secret};
//! let secret = Secret::new(b"a dev secret of at least 32 bytes!!".to_vec()).unwrap();
//! let token = secret.mint(&Claims::new("ana", "demo", Role::Viewer, 2_000_000_000)).unwrap();
//! let who = secret.verify(&token, "demo", 1_900_000_000).unwrap();
//! assert_eq!(who.subject, "ana");
//! assert_eq!(secret.verify(&token, "other", 1_900_000_000).unwrap_err().code(), "token_wrong_room");
//! ```

mod device;
mod stream_key;
pub use device::{DEVICE_COOKIE, DEVICE_ID_BYTES, Devices};
pub use stream_key::StreamKeys;

use hmac::{Hmac, Mac};
use jwt::{SignWithKey, VerifyWithKey};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Shortest secret we accept: RFC 7518 asks HS256 keys to be at least as long as the hash.
pub const MIN_SECRET_LEN: usize = 32;
/// Longest token we try to parse; anything larger is malformed by definition.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Longest subject or display name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Seconds a token's `nbf` or `iat` may lie ahead of our clock: the minter's clock may run ahead.
pub const CLOCK_LEEWAY_SECS: u64 = 60;

/// What a token holder may do in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Moderator,
    Host,
    Merchant,
}

impl Role {
    /// Moderators and hosts run the room; merchants run the products in it.
    pub fn is_staff(self) -> bool {
        !matches!(self, Role::Viewer)
    }

    pub fn can_moderate(self) -> bool {
        matches!(self, Role::Moderator | Role::Host)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Moderator => "moderator",
            Role::Host => "host",
            Role::Merchant => "merchant",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = TokenError;
    fn from_str(s: &str) -> Result<Self, TokenError> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "moderator" => Ok(Role::Moderator),
            "host" => Ok(Role::Host),
            "merchant" => Ok(Role::Merchant),
            _ => Err(TokenError::Malformed),
        }
    }
}

/// The claims of a liveshop token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub room: String,
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The guest device (see [`Devices`]): set only on the tokens a host mints at `POST /guest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    /// Not valid before, seconds since the Unix epoch (RFC 7519 `nbf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at, seconds since the Unix epoch (RFC 7519 `iat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
}

impl Claims {
    pub fn new(sub: impl Into<String>, room: impl Into<String>, role: Role, exp: u64) -> Self {
        Claims { sub: sub.into(), room: room.into(), role, exp, name: None, dev: None, nbf: None, iat: None }
    }

    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Valid only from `nbf` (seconds since the Unix epoch).
    pub fn not_before(mut self, nbf: u64) -> Self {
        self.nbf = Some(nbf);
        self
    }

    /// Issued at `iat` (seconds since the Unix epoch).
    pub fn issued_at(mut self, iat: u64) -> Self {
        self.iat = Some(iat);
        self
    }

    pub fn with_device(mut self, device: impl Into<String>) -> Self {
        self.dev = Some(device.into());
        self
    }
}

/// A verified caller, as actors see it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    pub subject: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The guest device the token was minted for: present exactly on guest tokens, so an
    /// identity without it was vouched for by the platform or a merchant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl Identity {
    pub fn new(subject: impl Into<String>, role: Role) -> Self {
        Identity { subject: subject.into(), role, name: None, device: None }
    }
}

/// Why a token was refused. Each has a stable code clients and tests can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is not a well-formed liveshop JWT")]
    Malformed,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is for another room")]
    WrongRoom,
    #[error("the secret is shorter than {MIN_SECRET_LEN} bytes")]
    WeakSecret,
}

impl TokenError {
    pub fn code(self) -> &'static str {
        match self {
            TokenError::Malformed => "token_malformed",
            TokenError::BadSignature => "token_bad_signature",
            TokenError::Expired => "token_expired",
            TokenError::NotYetValid => "token_not_yet_valid",
            TokenError::WrongRoom => "token_wrong_room",
            TokenError::WeakSecret => "weak_secret",
        }
    }
}

/// The HS256 key shared by whoever mints tokens and the hosts that verify them.
#[derive(Clone)]
pub struct Secret(Hmac<Sha256>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl Secret {
    /// The stream keys (WHIP bearer keys) derived from this secret.
    pub fn stream_keys(&self) -> StreamKeys {
        StreamKeys::from_mac(self.0.clone())
    }

    /// The guest devices (cookies and guest subjects) derived from this secret.
    pub fn devices(&self) -> Devices {
        Devices::from_mac(self.0.clone())
    }

    pub fn new(bytes: Vec<u8>) -> Result<Self, TokenError> {
        if bytes.len() < MIN_SECRET_LEN {
            return Err(TokenError::WeakSecret);
        }
        Hmac::new_from_slice(&bytes).map(Secret).map_err(|_| TokenError::WeakSecret)
    }

    pub fn mint(&self, claims: &Claims) -> Result<String, TokenError> {
        claims.sign_with_key(&self.0).map_err(|_| TokenError::Malformed)
    }

    /// Verifies signature (in constant time), room, expiry and start (`nbf`, and an `iat` not in
    /// the future), in that order, so a forged token never learns whether its room or times
    /// would have passed. `nbf` and `iat` may be up to [`CLOCK_LEEWAY_SECS`] ahead of `now_secs`
    /// (the minter's clock may run ahead); past that the token is not valid yet. The token's room must equal
    /// `room` exactly: a platform-wide token (`room: "*"`) is only good where `"*"` is asked
    /// for (creating shows), never as a key to every room.
    pub fn verify(&self, token: &str, room: &str, now_secs: u64) -> Result<Identity, TokenError> {
        if token.len() > MAX_TOKEN_LEN || token.split('.').count() != 3 {
            return Err(TokenError::Malformed);
        }
        let claims: Claims = token.verify_with_key(&self.0).map_err(|e| match e {
            jwt::Error::InvalidSignature | jwt::Error::RustCryptoMac(_) => TokenError::BadSignature,
            _ => TokenError::Malformed,
        })?;
        if claims.sub.is_empty()
            || claims.sub.len() > MAX_NAME_LEN
            || claims.name.as_ref().is_some_and(|n| n.len() > MAX_NAME_LEN)
            || claims.dev.as_ref().is_some_and(|d| d.len() > MAX_NAME_LEN)
        {
            return Err(TokenError::Malformed);
        }
        if claims.room != room {
            return Err(TokenError::WrongRoom);
        }
        if claims.exp <= now_secs {
            return Err(TokenError::Expired);
        }
        let latest_start = now_secs.saturating_add(CLOCK_LEEWAY_SECS);
        if claims.nbf.into_iter().chain(claims.iat).any(|t| t > latest_start) {
            return Err(TokenError::NotYetValid);
        }
        Ok(Identity { subject: claims.sub, role: claims.role, name: claims.name, device: claims.dev })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    fn token(room: &str, exp: u64) -> String {
        secret().mint(&Claims::new("ana", room, Role::Host, exp).with_name("Ana")).unwrap()
    }

    #[test]
    fn a_valid_token_yields_its_identity() {
        let who = secret().verify(&token("demo", 100), "demo", 99).unwrap();
        assert_eq!(
            who,
            Identity { subject: "ana".into(), role: Role::Host, name: Some("Ana".into()), device: None }
        );
    }

    #[test]
    fn each_kind_of_bad_token_has_its_own_code() {
        assert_eq!(secret().verify(&token("demo", 100), "demo", 100), Err(TokenError::Expired));
        assert_eq!(secret().verify(&token("demo", 100), "other", 1), Err(TokenError::WrongRoom));
        assert_eq!(secret().verify(&token("*", 100), "demo", 1), Err(TokenError::WrongRoom));
        assert!(secret().verify(&token("*", 100), "*", 1).is_ok());
        assert_eq!(secret().verify("not.a.jwt", "demo", 1), Err(TokenError::Malformed));
        assert_eq!(secret().verify("nodots", "demo", 1), Err(TokenError::Malformed));
        let other = Secret::new(b"another secret that is long enough".to_vec()).unwrap();
        assert_eq!(other.verify(&token("demo", 100), "demo", 1), Err(TokenError::BadSignature));
        let codes: std::collections::BTreeSet<_> =
            [TokenError::Malformed, TokenError::BadSignature, TokenError::Expired, TokenError::WrongRoom]
                .iter()
                .map(|e| e.code())
                .collect();
        assert_eq!(codes.len(), 4);
    }

    #[test]
    fn a_token_from_the_future_is_not_valid_yet_beyond_the_leeway() {
        let mint = |c: Claims| secret().mint(&c).unwrap();
        let base = || Claims::new("ana", "demo", Role::Host, 200_000);
        let now = 1_000;
        let tomorrow = mint(base().not_before(now + 86_400).issued_at(now));
        assert_eq!(secret().verify(&tomorrow, "demo", now), Err(TokenError::NotYetValid));
        assert_eq!(TokenError::NotYetValid.code(), "token_not_yet_valid");
        assert!(secret().verify(&tomorrow, "demo", now + 86_400).is_ok());
        let issued_later = mint(base().issued_at(now + CLOCK_LEEWAY_SECS + 1));
        assert_eq!(secret().verify(&issued_later, "demo", now), Err(TokenError::NotYetValid));
        // A minter whose clock runs a little ahead is fine.
        let skewed = mint(base().not_before(now + CLOCK_LEEWAY_SECS).issued_at(now + CLOCK_LEEWAY_SECS));
        assert!(secret().verify(&skewed, "demo", now).is_ok());
        // Signature first: a forged future token learns nothing about its times.
        let other = Secret::new(b"another secret that is long enough".to_vec()).unwrap();
        assert_eq!(other.verify(&tomorrow, "demo", now), Err(TokenError::BadSignature));
    }

    #[test]
    fn a_tampered_payload_fails_the_signature() {
        let t = token("demo", 100);
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = secret().mint(&Claims::new("eve", "demo", Role::Host, 100)).unwrap();
        parts[1] = forged.split('.').nth(1).unwrap();
        assert_eq!(secret().verify(&parts.join("."), "demo", 1), Err(TokenError::BadSignature));
    }

    #[test]
    fn alg_none_is_refused() {
        // {"alg":"none","typ":"JWT"} . {"sub":"eve","room":"demo","role":"host","exp":100} .
        let t = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJldmUiLCJyb29tIjoiZGVtbyIsInJvbGUiOiJob3N0IiwiZXhwIjoxMDB9.";
        assert!(secret().verify(t, "demo", 1).is_err());
    }

    #[test]
    fn short_secrets_are_refused() {
        assert_eq!(Secret::new(b"short".to_vec()).unwrap_err(), TokenError::WeakSecret);
    }
}

//! Guest devices: the signed `liveshop_device` cookie a host sets on `POST /guest`, and the
//! guest subject each device gets. A device id is random; the cookie carries it with an
//! HMAC-SHA256 of it under the node's secret (domain-separated from every other use of that
//! secret), so only the node makes devices. The same device always gets the same guest subject,
//! so asking for a new guest token does not make a new identity.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The cookie's name.
pub const DEVICE_COOKIE: &str = "liveshop_device";
/// The cookie's lifetime: 400 days, the most browsers keep a cookie.
pub const DEVICE_COOKIE_MAX_AGE_SECS: u64 = 400 * 24 * 3600;
/// Random bytes in a device id (hex in the cookie and the token's `dev` claim).
pub const DEVICE_ID_BYTES: usize = 16;

/// Prefixed to what is signed, so neither MAC is valid for anything else.
const COOKIE_DOMAIN: &[u8] = b"liveshop device cookie v1\0";
const SUBJECT_DOMAIN: &[u8] = b"liveshop guest subject v1\0";

/// Keeps the secret's HMAC state, not the secret.
#[derive(Clone)]
pub struct Devices(Hmac<Sha256>);

impl std::fmt::Debug for Devices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Devices(..)")
    }
}

impl Devices {
    /// The devices of the node whose tokens `mac` signs (the same secret, another domain).
    pub(crate) fn from_mac(mac: Hmac<Sha256>) -> Devices {
        Devices(mac)
    }

    fn mac(&self, domain: &[u8], device: &str) -> [u8; 32] {
        let mut mac = self.0.clone();
        mac.update(domain);
        mac.update(device.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A new device id from random bytes the host draws.
    pub fn new_device(random: [u8; DEVICE_ID_BYTES]) -> String {
        random.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The cookie's value for `device`: `<id>.<mac>`.
    pub fn cookie_value(&self, device: &str) -> String {
        format!("{device}.{}", URL_SAFE_NO_PAD.encode(self.mac(COOKIE_DOMAIN, device)))
    }

    /// The `Set-Cookie` header that gives a browser `device` (script cannot read it; it goes
    /// with top-level navigations and same-site requests only; over HTTPS only, when `secure`:
    /// the cookie is a bearer credential for its guest).
    pub fn set_cookie(&self, device: &str, secure: bool) -> String {
        format!(
            "{DEVICE_COOKIE}={}; Max-Age={DEVICE_COOKIE_MAX_AGE_SECS}; Path=/; HttpOnly; SameSite=Lax{}",
            self.cookie_value(device),
            if secure { "; Secure" } else { "" }
        )
    }

    /// The device of a cookie value whose MAC verifies (in constant time).
    pub fn verify(&self, value: &str) -> Option<String> {
        let (device, mac) = value.trim().split_once('.')?;
        let well_formed = device.len() == 2 * DEVICE_ID_BYTES
            && device.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        let mac = URL_SAFE_NO_PAD.decode(mac).ok()?;
        let valid = well_formed && mac.len() == 32 && bool::from(mac.ct_eq(&self.mac(COOKIE_DOMAIN, device)));
        valid.then(|| device.to_string())
    }

    /// The verified device in a request's `Cookie` header, if it has one.
    pub fn from_cookie_header(&self, header: &str) -> Option<String> {
        header
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .filter(|(name, _)| *name == DEVICE_COOKIE)
            .find_map(|(_, value)| self.verify(value))
    }

    /// The guest subject of `device`: the same for every token the device gets, and telling
    /// nothing of the device id (subjects are public in chat; the id is not).
    pub fn guest_subject(&self, device: &str) -> String {
        let mac = self.mac(SUBJECT_DOMAIN, device);
        format!("guest-{}", mac[..6].iter().map(|b| format!("{b:02x}")).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn devices(secret: &[u8]) -> Devices {
        Devices::from_mac(Hmac::new_from_slice(secret).unwrap())
    }

    #[test]
    fn a_cookie_verifies_under_its_own_secret_only() {
        let d = devices(b"node secret");
        let device = Devices::new_device([7; DEVICE_ID_BYTES]);
        let value = d.cookie_value(&device);
        assert_eq!(d.verify(&value), Some(device.clone()));
        assert_eq!(devices(b"other secret").verify(&value), None);
        let forged =
            format!("{}.{}", Devices::new_device([8; DEVICE_ID_BYTES]), value.split_once('.').unwrap().1);
        assert_eq!(d.verify(&forged), None);
        assert_eq!(d.verify("nonsense"), None);
        let header = format!("a=b; {DEVICE_COOKIE}=junk; {DEVICE_COOKIE}={value}");
        assert_eq!(d.from_cookie_header(&header), Some(device.clone()));
        assert!(d.set_cookie(&device, false).ends_with("HttpOnly; SameSite=Lax"));
        assert!(d.set_cookie(&device, true).ends_with("HttpOnly; SameSite=Lax; Secure"));
    }

    #[test]
    fn a_device_has_one_guest_subject() {
        let d = devices(b"node secret");
        let (a, b) = (Devices::new_device([1; DEVICE_ID_BYTES]), Devices::new_device([2; DEVICE_ID_BYTES]));
        assert_eq!(d.guest_subject(&a), d.guest_subject(&a));
        assert_ne!(d.guest_subject(&a), d.guest_subject(&b));
        assert_eq!(d.guest_subject(&a).len(), "guest-".len() + 12);
    }
}

//! Limits on guessing coupon codes: failed attempts are counted per key, a burst is allowed,
//! then one more attempt per interval. A guess that is refused for the limit tests nothing, the
//! right code included, so guessing stops being useful.
//!
//! Two tables use [`Attempts`]: the shop keeps one per buyer ([`BUYER_COUPON_FAILURES`]), and
//! each host keeps one per client address ([`AddressGuard`], [`ADDRESS_COUPON_FAILURES`]), since
//! the shop never sees addresses and guest identities are cheap. Both live in memory: a restart
//! of the node (or the shop actor's revival after it went idle) forgets them, which gives a
//! guesser at most one more burst per restart.
//!
//! An attempt is taken *before* the code is looked up and given back when it was not a wrong
//! code, so concurrent guesses from one address cannot all pass before the first is counted.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_json::Value;

use crate::ids::{Millis, SECOND};
use crate::protocol::{ApiError, ErrorCode};

/// How many failures at once, and how often one more attempt is allowed after that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pace {
    pub burst: u64,
    pub every_ms: Millis,
}

/// Per buyer: 5 wrong codes, then one attempt per 30 s.
pub const BUYER_COUPON_FAILURES: Pace = Pace { burst: 5, every_ms: 30 * SECOND };
/// Per client address and shop (every buyer behind it together): 10 wrong codes, then one
/// attempt per 30 s.
pub const ADDRESS_COUPON_FAILURES: Pace = Pace { burst: 10, every_ms: 30 * SECOND };
/// Keys one table remembers at most.
pub const MAX_KEYS: usize = 65_536;

/// Failed attempts per key, in a table of at most a fixed number of keys.
#[derive(Debug)]
pub struct Attempts<K> {
    pace: Pace,
    capacity: usize,
    /// Per key, when all its failures will have been forgiven (the "theoretical arrival time" of
    /// GCRA); a key whose time has passed carries nothing and may be dropped.
    /// A `BTreeMap`: a `HashMap`'s random seed would need a source of randomness the actor
    /// has not got.
    clear_at: BTreeMap<K, Millis>,
}

impl<K: Ord + Clone> Attempts<K> {
    pub fn new(pace: Pace, capacity: usize) -> Self {
        Attempts { pace, capacity, clear_at: BTreeMap::new() }
    }

    /// Takes one attempt for `key`, counted as a failure until [`Attempts::give_back`]; or the
    /// milliseconds until an attempt is allowed again.
    pub fn try_take(&mut self, key: &K, now: Millis) -> Result<(), Millis> {
        let Pace { burst, every_ms } = self.pace;
        let clear_at = self.clear_at.get(key).copied().filter(|&t| t > now).unwrap_or(now);
        let next = clear_at.saturating_add(every_ms);
        let allowed = burst.saturating_mul(every_ms);
        if next - now > allowed {
            return Err(next - now - allowed);
        }
        self.make_room(key, now);
        self.clear_at.insert(key.clone(), next);
        Ok(())
    }

    /// The keys not forgiven at `now`, with when they will be: for a host whose instances share
    /// no memory (Spin), which stores the table with the shop.
    pub fn rows(&self, now: Millis) -> Vec<(K, Millis)> {
        self.clear_at.iter().filter(|(_, t)| **t > now).map(|(k, t)| (k.clone(), *t)).collect()
    }

    /// Takes back what [`Attempts::rows`] gave.
    pub fn load(&mut self, rows: impl IntoIterator<Item = (K, Millis)>) {
        self.clear_at.extend(rows);
    }

    /// Forgives an attempt taken for `key` that turned out not to be a failure.
    pub fn give_back(&mut self, key: &K) {
        if let Some(t) = self.clear_at.get_mut(key) {
            *t = t.saturating_sub(self.pace.every_ms);
        }
    }

    /// Keeps the table within its capacity without forgetting a limited key while any key that
    /// carries less is there: first the keys already forgiven go, then the one closest to it.
    fn make_room(&mut self, key: &K, now: Millis) {
        if self.clear_at.len() < self.capacity || self.clear_at.contains_key(key) {
            return;
        }
        self.clear_at.retain(|_, t| *t > now);
        if self.clear_at.len() >= self.capacity
            && let Some(oldest) = self.clear_at.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone())
        {
            self.clear_at.remove(&oldest);
        }
    }
}

/// The refusal of a coupon attempt over a limit, with `retry_after` in whole seconds.
pub fn attempts_exceeded(wait_ms: Millis, whose: &str) -> ApiError {
    let secs = wait_ms.div_ceil(SECOND).max(1);
    let msg = format!("too many wrong coupon codes {whose}; retry in {secs} s");
    ApiError::new(ErrorCode::CouponAttemptsExceeded, msg).with("retry_after", secs)
}

/// The `Retry-After` seconds of a shop answer: the `retry_after` of a `429` refusal. Hosts send
/// it as the header too.
pub fn retry_after(status: u16, body: &[u8]) -> Option<u64> {
    if status != 429 {
        return None;
    }
    serde_json::from_slice::<Value>(body).ok()?["error"]["retry_after"].as_u64()
}

/// Whether a request to a shop (the method and the path below the shop's base) tries a coupon
/// code: `PUT /carts/{buyer}/coupon`, split as the shop's router splits it.
pub fn is_coupon_attempt(method: &str, path: &str) -> bool {
    let Ok(decoded) = crate::api::segments(path) else { return false };
    let segs: Vec<&str> = decoded.iter().map(String::as_str).collect();
    method == "PUT" && matches!(segs.as_slice(), ["carts", _, "coupon"])
}

/// The host's half: wrong coupon codes per shop and client address. Hosts pass the address as
/// every per-address limit counts it (`liveshop_room::filter::address_key`: an IPv6 client by its
/// /64, which one subscriber holds whole).
#[derive(Debug)]
pub struct AddressGuard {
    attempts: Attempts<(String, IpAddr)>,
}

/// A coupon attempt let through to the shop; hand it back with the shop's answer.
#[derive(Debug)]
#[must_use = "an attempt counts as a failure until the shop's answer is shown to the guard"]
pub struct Attempt {
    key: (String, IpAddr),
}

impl Default for AddressGuard {
    fn default() -> Self {
        AddressGuard { attempts: Attempts::new(ADDRESS_COUPON_FAILURES, MAX_KEYS) }
    }
}

impl AddressGuard {
    /// Before a request goes to `shop`: `Ok(None)` when it tries no coupon code, `Ok(Some)`
    /// when it does and the address may, or the `429 coupon_attempts_exceeded` to answer.
    pub fn before(
        &mut self,
        shop: &str,
        addr: IpAddr,
        method: &str,
        path: &str,
        now: Millis,
    ) -> Result<Option<Attempt>, ApiError> {
        if !is_coupon_attempt(method, path) {
            return Ok(None);
        }
        let key = (shop.to_string(), addr);
        self.attempts.try_take(&key, now).map_err(|ms| attempts_exceeded(ms, "from your address"))?;
        Ok(Some(Attempt { key }))
    }

    /// The table as `(shop, address, when its failures are forgiven)` rows, those not forgiven at
    /// `now`: for a host whose instances share no memory (Spin), which stores it with the shop.
    pub fn rows(&self, now: Millis) -> Vec<(String, IpAddr, Millis)> {
        self.attempts.rows(now).into_iter().map(|((shop, addr), t)| (shop, addr, t)).collect()
    }

    /// A guard holding what [`AddressGuard::rows`] gave.
    pub fn from_rows(rows: impl IntoIterator<Item = (String, IpAddr, Millis)>) -> AddressGuard {
        let mut guard = AddressGuard::default();
        guard.attempts.load(rows.into_iter().map(|(shop, addr, t)| ((shop, addr), t)));
        guard
    }

    /// After the shop answered an attempt: only a wrong code (`coupon_invalid`) stays counted.
    pub fn after(&mut self, attempt: Attempt, status: u16, body: &[u8]) {
        let wrong = ErrorCode::CouponInvalid;
        let code = serde_json::from_slice::<Value>(body).ok().map(|v| v["error"]["code"] == wrong.as_str());
        if !(status == wrong.status() && code == Some(true)) {
            self.attempts.give_back(&attempt.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PACE: Pace = Pace { burst: 3, every_ms: 10_000 };

    #[test]
    fn a_burst_then_one_attempt_per_interval() {
        let mut a = Attempts::new(PACE, 10);
        for _ in 0..3 {
            assert_eq!(a.try_take(&"k", 0), Ok(()));
        }
        assert_eq!(a.try_take(&"k", 0), Err(10_000));
        assert_eq!(a.try_take(&"k", 4_000), Err(6_000));
        assert_eq!(a.try_take(&"k", 10_000), Ok(()));
        assert_eq!(a.try_take(&"k", 10_000), Err(10_000));
        assert_eq!(a.try_take(&"other", 10_000), Ok(()), "keys are counted apart");
    }

    #[test]
    fn an_attempt_given_back_does_not_count() {
        let mut a = Attempts::new(PACE, 10);
        for _ in 0..10 {
            assert_eq!(a.try_take(&"k", 0), Ok(()));
            a.give_back(&"k");
        }
        assert_eq!(a.try_take(&"k", 0), Ok(()));
    }

    #[test]
    fn a_full_table_keeps_its_limited_keys() {
        let mut a = Attempts::new(PACE, 2);
        for _ in 0..3 {
            a.try_take(&"limited", 0).unwrap();
        }
        a.try_take(&"once", 0).unwrap();
        // Full: the key with the least counted goes, never the limited one.
        a.try_take(&"new", 0).unwrap();
        assert!(a.try_take(&"limited", 0).is_err());
        assert_eq!(a.clear_at.len(), 2);
    }

    #[test]
    fn a_guard_stored_as_rows_reads_back_what_it_counted() {
        let addr: IpAddr = "192.0.2.7".parse().unwrap();
        let mut guard = AddressGuard::default();
        for _ in 0..ADDRESS_COUPON_FAILURES.burst {
            let a = guard.before("s", addr, "PUT", "/carts/x/coupon", 0).unwrap().unwrap();
            guard.after(a, 422, br#"{"error":{"code":"coupon_invalid"}}"#);
        }
        let mut back = AddressGuard::from_rows(guard.rows(0));
        assert!(back.before("s", addr, "PUT", "/carts/x/coupon", 0).is_err());
        assert!(AddressGuard::default().rows(0).is_empty());
    }

    #[test]
    fn coupon_attempts_are_recognised_as_the_shop_routes_them() {
        assert!(is_coupon_attempt("PUT", "/carts/ana/coupon"));
        assert!(is_coupon_attempt("PUT", "//carts/auth0%7C1/coupon/?x=1"));
        assert!(is_coupon_attempt("PUT", "/carts/ana/%63oupon"), "escapes are decoded, as by the router");
        assert!(!is_coupon_attempt("DELETE", "/carts/ana/coupon"));
        assert!(!is_coupon_attempt("PUT", "/coupons/SAVE10"));
    }
}

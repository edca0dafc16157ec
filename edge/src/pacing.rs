//! Per-address limits: one table of token buckets for every limit the node keeps by client
//! address (new connections and reads, new guest devices, commands over HTTP), keyed by the
//! IPv4 address or the IPv6 /64 ([`liveshop_room::filter::address_key`]) of the client as
//! [`client_address`] finds it behind trusted proxies.
//!
//! The table is bounded and never cleared: it forgets only buckets that have refilled
//! completely (they say no more than a new one would). When it is full of buckets that still
//! count, a new address is refused until some refill, rather than everyone let in.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::http::HeaderMap;
use liveshop_room::filter::{Pace, TokenBucket, address_key};
use serde::Deserialize;

type Millis = u64;

/// What a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    /// New connections, room reads and shop reads that may wake an actor.
    Connections,
    /// Guest tokens for new devices (`POST /v1/rooms/{room}/guest` without a device cookie).
    GuestDevices,
    /// `POST /v1/rooms/{room}/commands`.
    Commands,
}

/// How long after a sweep that freed nothing a full table may sweep again: under a flood of
/// new addresses, one scan a second, not one per request.
const SWEEP_EVERY_MS: Millis = 1000;

/// The buckets of every address and limit, at most `capacity` of them.
pub struct Pacer {
    capacity: usize,
    table: Mutex<Table>,
}

#[derive(Default)]
struct Table {
    /// Each bucket with the pace it was last taken from.
    buckets: HashMap<(Limit, IpAddr), (TokenBucket, Pace)>,
    swept_at: Option<Millis>,
}

/// Why a request was refused: in how many milliseconds to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This address has used its allowance.
    Spent(u64),
    /// The table holds `capacity` addresses that all still count.
    Full(u64),
}

impl Pacer {
    pub fn new(capacity: usize) -> Pacer {
        Pacer { capacity: capacity.max(1), table: Mutex::default() }
    }

    /// Takes one from `ip`'s bucket for `limit`.
    pub fn take(&self, limit: Limit, pace: Pace, ip: IpAddr, now: Millis) -> Result<(), Refusal> {
        let key = (limit, address_key(ip));
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if !t.buckets.contains_key(&key) && t.buckets.len() >= self.capacity {
            if t.swept_at.is_some_and(|at| now < at + SWEEP_EVERY_MS) {
                return Err(Refusal::Full(SWEEP_EVERY_MS));
            }
            t.buckets.retain(|_, (bucket, pace)| !bucket.is_full(*pace, now));
            t.swept_at = Some(now);
            if t.buckets.len() >= self.capacity {
                return Err(Refusal::Full(SWEEP_EVERY_MS));
            }
        }
        let (bucket, last) = t.buckets.entry(key).or_insert_with(|| (TokenBucket::full(pace, now), pace));
        *last = pace;
        bucket.take(pace, now).map_err(Refusal::Spent)
    }

    /// Buckets held now.
    pub fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A network in CIDR notation (`10.0.0.0/8`, `2001:db8::/32`, or one address), as
/// `trusted_proxies` lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                masked(u32::from(n).into(), u32::from(a).into(), 32, self.prefix)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => masked(u128::from(n), u128::from(a), 128, self.prefix),
            _ => false,
        }
    }
}

/// Whether `a` is in `n`/`prefix` for addresses of `bits` bits.
fn masked(n: u128, a: u128, bits: u32, prefix: u8) -> bool {
    let host_bits = bits - u32::from(prefix);
    host_bits >= bits || (n >> host_bits) == (a >> host_bits)
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an address or a network such as 10.0.0.0/8");
        let (addr, prefix) = s.trim().split_once('/').map_or((s.trim(), None), |(a, p)| (a, Some(p)));
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let net = net.to_canonical();
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(bad)?,
            None => max,
        };
        Ok(Cidr { net, prefix })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// The client's address, for every per-address limit. It is the TCP peer's, unless the peer is
/// one of `trusted` proxies and `header` is set: then it is the header's address
/// (`CF-Connecting-IP`: one address; `X-Forwarded-For`: the rightmost address that is not a
/// trusted proxy, since each proxy appends what it saw and only ours are believed).
pub fn client_address(
    peer: SocketAddr,
    headers: &HeaderMap,
    header: Option<&str>,
    trusted: &[Cidr],
) -> IpAddr {
    let peer = peer.ip().to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    let Some(name) = header.filter(|_| is_trusted(peer)) else { return peer };
    let mut client = peer;
    // Every value of the header, in order, as one list.
    let hops: Vec<&str> =
        headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).collect();
    for hop in hops.iter().rev() {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip.to_canonical();
                if !is_trusted(client) {
                    break;
                }
            }
            // Not an address (a proxy's placeholder such as "unknown"): what is left of it is
            // not to be believed.
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn networks_hold_their_addresses_only() {
        let [v4, v6, one] = [cidrs(&["10.0.0.0/8"]), cidrs(&["2001:db8::/32"]), cidrs(&["127.0.0.1"])];
        assert!(v4[0].contains("10.9.8.7".parse().unwrap()));
        assert!(v4[0].contains("::ffff:10.9.8.7".parse().unwrap()));
        assert!(!v4[0].contains("11.0.0.1".parse().unwrap()));
        assert!(v6[0].contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6[0].contains("2001:db9::1".parse().unwrap()));
        assert!(
            one[0].contains("127.0.0.1".parse().unwrap()) && !one[0].contains("127.0.0.2".parse().unwrap())
        );
        assert!(cidrs(&["0.0.0.0/0"])[0].contains("8.8.8.8".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err() && "ten".parse::<Cidr>().is_err());
    }

    #[test]
    fn trusted_proxies_are_checked_when_the_config_is_read() {
        let ok: crate::config::EdgeConfig = toml::from_str(
            "client_ip_header = \"CF-Connecting-IP\"\ntrusted_proxies = [\"173.245.48.0/20\", \"2400:cb00::/32\"]",
        )
        .unwrap();
        assert_eq!(ok.trusted_proxies.len(), 2);
        assert!(toml::from_str::<crate::config::EdgeConfig>("trusted_proxies = [\"10.0.0.0/40\"]").is_err());
    }

    #[test]
    fn a_full_table_forgets_only_refilled_buckets_and_never_lets_everyone_in() {
        let pace = Pace { burst: 1, refill_every_ms: 10_000 };
        let pacer = Pacer::new(2);
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        assert_eq!(pacer.take(Limit::GuestDevices, pace, ip(1), 0), Ok(()));
        assert_eq!(pacer.take(Limit::GuestDevices, pace, ip(2), 0), Ok(()));
        assert_eq!(pacer.take(Limit::GuestDevices, pace, ip(3), 0), Err(Refusal::Full(SWEEP_EVERY_MS)));
        // Still spent: a full table did not forget address 1.
        assert_eq!(pacer.take(Limit::GuestDevices, pace, ip(1), 5000), Err(Refusal::Spent(5000)));
        // Refilled buckets carry no information: they make room.
        assert_eq!(pacer.take(Limit::GuestDevices, pace, ip(3), 20_000), Ok(()));
        assert_eq!(pacer.len(), 1);
    }
}

//! Per-address limits: a table of token buckets for each limit the node keeps by client
//! address (new connections and reads, new guest devices, commands over HTTP), keyed by the
//! IPv4 address or the IPv6 /64 ([`liveshop_room::filter::address_key`]) of the client as
//! [`client_address`] finds it behind trusted proxies.
//!
//! Each table is bounded and never cleared. When one is full it first forgets the buckets that
//! have refilled completely (they say no more than a new one would), then the least limited
//! eighth (those closest to full): a newcomer always gets in, a flood of new addresses costs one
//! scan per eighth of the table, and the most limited addresses are forgotten last. Tables are
//! apart so that guest buckets, slow to refill, never crowd out connection buckets.

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
    /// The public feed's reads and heartbeats: cheap (shared answers, no room event each), so
    /// allowed far more often than connections.
    Reads,
}

/// The buckets of every address, per limit, at most `capacity` in each table.
pub struct Pacer {
    capacity: usize,
    tables: [Mutex<Table>; 4],
}

/// Each address's bucket with the pace it was last taken from.
#[derive(Default)]
struct Table(HashMap<IpAddr, (TokenBucket, Pace)>);

impl Pacer {
    pub fn new(capacity: usize) -> Pacer {
        Pacer { capacity: capacity.max(1), tables: Default::default() }
    }

    /// Takes one from `ip`'s bucket for `limit`, or says in how many milliseconds to retry.
    pub fn take(&self, limit: Limit, pace: Pace, ip: IpAddr, now: Millis) -> Result<(), u64> {
        let key = address_key(ip);
        let mut t = self.tables[limit as usize].lock().unwrap_or_else(|p| p.into_inner());
        if !t.0.contains_key(&key) && t.0.len() >= self.capacity {
            t.make_room(self.capacity, now);
        }
        let (bucket, last) = t.0.entry(key).or_insert_with(|| (TokenBucket::full(pace, now), pace));
        *last = pace;
        bucket.take(pace, now)
    }

    /// Buckets held now, in all tables.
    pub fn len(&self) -> usize {
        self.tables.iter().map(|t| t.lock().unwrap_or_else(|p| p.into_inner()).0.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Table {
    fn make_room(&mut self, capacity: usize, now: Millis) {
        self.0.retain(|_, (bucket, pace)| !bucket.is_full(*pace, now));
        if self.0.len() < capacity {
            return;
        }
        let mut levels: Vec<(u64, IpAddr)> =
            self.0.iter().map(|(ip, (bucket, pace))| (bucket.level(*pace, now), *ip)).collect();
        let evict = (capacity / 8).clamp(1, levels.len());
        levels.select_nth_unstable_by(evict - 1, |a, b| b.0.cmp(&a.0));
        for (_, ip) in &levels[..evict] {
            self.0.remove(ip);
        }
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
    fn a_full_table_forgets_refilled_then_the_least_limited_buckets_and_always_lets_a_newcomer_in() {
        let pace = Pace { burst: 2, refill_every_ms: 10_000 };
        let pacer = Pacer::new(2);
        let ip = |n: u8| IpAddr::from([192, 0, 2, n]);
        let take = |n: u8, now: Millis| pacer.take(Limit::GuestDevices, pace, ip(n), now);
        assert_eq!((take(1, 0), take(1, 0), take(1, 0)), (Ok(()), Ok(()), Err(10_000)));
        assert_eq!(take(2, 0), Ok(()));
        // Full: address 2 (one token left) is forgotten before address 1 (none left).
        assert_eq!(take(3, 0), Ok(()));
        assert_eq!(take(1, 5000), Err(5000), "the most limited address is still limited");
        // Another table: connections are never crowded out by guest buckets.
        assert_eq!(pacer.take(Limit::Connections, pace, ip(9), 0), Ok(()));
        // Refilled buckets carry no information: both go, and only address 4's is kept.
        assert_eq!(take(4, 40_000), Ok(()));
        assert_eq!(pacer.len(), 1 + 1);
    }
}

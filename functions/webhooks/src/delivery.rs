//! What one outbound delivery attempt means for the endpoint, and where a delivery may go at
//! all. The retry schedule itself belongs to the shop core's webhook outbox.
//!
//! # Where webhooks may go
//!
//! A webhook is a POST the node makes on a merchant's behalf, so an endpoint URL could aim it at
//! the node's own network (server-side request forgery): `127.0.0.1`, a private range, the
//! cloud metadata service at `169.254.169.254`. [`check_endpoint`] refuses any URL whose host is
//! such an address, written in any form a URL parser accepts (IPv4-mapped IPv6, NAT64, 6to4,
//! decimal or hex IPv4), or `localhost`, unless the node's [`EndpointPolicy`] names that host.
//! Names are checked again where they resolve: [`EndpointPolicy::allowed_addresses`] keeps only
//! the addresses a name may connect to ([`is_public`], or any for a named host).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

/// The verdict on one delivery attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOutcome {
    /// The merchant has it; stop.
    Delivered,
    /// Try again on the outbox's schedule (which gives up, and disables, when it runs out).
    Retry,
    /// The merchant asked us to stop (410 Gone): disable the endpoint now, no more attempts.
    DisableEndpoint,
}

/// Classifies an attempt by its HTTP status, `None` meaning no response at all (connection
/// refused or reset, TLS failure, timeout).
///
/// Following Standard Webhooks, only `2xx` is success and only `410 Gone` stops delivery.
/// Everything else is a failure to retry, including `3xx` (redirects are not followed: the
/// merchant should fix the URL) and `4xx` other than 410: a 401, 404 or 400 is most often a
/// deploy or configuration mistake on the merchant's side that gets fixed within the retry
/// schedule, and the schedule is finite anyway. `429`, `502`, `503` and `504` are retries too;
/// honouring `Retry-After` is the schedule's business.
pub fn classify_delivery(status: Option<u16>) -> DeliveryOutcome {
    match status {
        Some(200..=299) => DeliveryOutcome::Delivered,
        Some(410) => DeliveryOutcome::DisableEndpoint,
        _ => DeliveryOutcome::Retry,
    }
}

/// Hosts a node lets webhooks reach although they are not public (development, or a merchant
/// system inside the operator's own network): exact host names or addresses, as in the URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointPolicy {
    allow_private_hosts: Vec<String>,
}

/// Why an endpoint URL is refused; `code` is the stable error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("the endpoint is an http(s) URL with a plain host name or address: {0}")]
    Malformed(&'static str),
    #[error(
        "webhooks may not go to {host}: it is not a public address (loopback, private, \
         link-local, multicast or reserved)"
    )]
    NotAllowed { host: String },
}

impl EndpointError {
    pub fn code(&self) -> &'static str {
        match self {
            EndpointError::Malformed(_) => "invalid_argument",
            EndpointError::NotAllowed { .. } => "endpoint_not_allowed",
        }
    }
}

impl EndpointPolicy {
    /// A policy that lets webhooks reach `hosts` (names or addresses; `[::1]` and `::1` alike).
    pub fn allowing<S: AsRef<str>>(hosts: impl IntoIterator<Item = S>) -> EndpointPolicy {
        let allow_private_hosts = hosts.into_iter().map(|h| normalize(h.as_ref())).collect();
        EndpointPolicy { allow_private_hosts }
    }

    /// Whether `host` (as written in a URL, or as resolved) is one of the named hosts.
    pub fn names(&self, host: &str) -> bool {
        let host = normalize(host);
        let ip = host.parse::<IpAddr>().ok();
        self.allow_private_hosts.iter().any(|h| *h == host || (ip.is_some() && h.parse().ok() == ip))
    }

    /// The addresses `host` resolved to that a delivery may connect to: all of them when the
    /// policy names `host`, else the public ones only.
    pub fn allowed_addresses(&self, host: &str, addrs: impl IntoIterator<Item = IpAddr>) -> Vec<IpAddr> {
        let named = self.names(host);
        addrs.into_iter().filter(|ip| named || is_public(*ip)).collect()
    }
}

/// Host names and addresses compared as a URL parser would see them: lower case, no brackets
/// around IPv6, no final dot.
fn normalize(host: &str) -> String {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Checks where a webhook endpoint URL points before it is stored or used: an `http(s)` URL whose
/// host is a public address, a plain DNS name (not `localhost`), or a host the policy names.
///
/// Hosts are read strictly, so no URL parser can see another address than this one did: ASCII
/// only, no `%` escapes or backslashes, and a name whose last label is numeric must be a plain
/// dotted-quad IPv4 address (WHATWG parsers read `2130706433` and `0x7f.1` as 127.0.0.1).
pub fn check_endpoint(url: &str, policy: &EndpointPolicy) -> Result<(), EndpointError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or(EndpointError::Malformed("the scheme must be http or https"))?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.contains(['\\', '@', '%']) || !authority.is_ascii() {
        return Err(EndpointError::Malformed("no credentials, escapes or non-ASCII in the host"));
    }
    let host = if authority.starts_with('[') {
        let end = authority.find(']').ok_or(EndpointError::Malformed("an unclosed [ in the host"))?;
        authority[1..end].parse::<Ipv6Addr>().map_err(|_| EndpointError::Malformed("a bad IPv6 address"))?;
        port(&authority[end + 1..])?;
        &authority[..=end]
    } else {
        let (host, rest) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
        port(rest)?;
        host
    };
    let plain = normalize(host);
    if policy.names(&plain) {
        return Ok(());
    }
    let refused = || Err(EndpointError::NotAllowed { host: host.to_string() });
    if let Ok(ip) = plain.parse::<IpAddr>() {
        return if is_public(ip) { Ok(()) } else { refused() };
    }
    let labels: Vec<&str> = plain.split('.').collect();
    let valid_label = |l: &&str| {
        !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if plain.len() > 253 || !labels.iter().all(valid_label) {
        return Err(EndpointError::Malformed("the host is not a DNS name"));
    }
    let last = labels.last().expect("split yields at least one label");
    if last.starts_with(|c: char| c.is_ascii_digit()) {
        // A numeric last label makes the whole host an IPv4 address to a WHATWG parser.
        return Err(EndpointError::Malformed("a numeric host must be a dotted-quad IPv4 address"));
    }
    if *last == "localhost" {
        return refused();
    }
    Ok(())
}

/// `""` or `":"` followed by a port number.
fn port(s: &str) -> Result<(), EndpointError> {
    match s.strip_prefix(':') {
        None if s.is_empty() => Ok(()),
        Some("") => Ok(()),
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok() => {
            Ok(())
        }
        _ => Err(EndpointError::Malformed("a bad port")),
    }
}

/// Whether `ip` is a public unicast address: not loopback, private (RFC 1918, `fc00::/7`),
/// shared (CGNAT `100.64.0.0/10`), link-local (`169.254.0.0/16`, `fe80::/10`), multicast,
/// unspecified, broadcast, documentation, benchmarking or reserved. IPv6 forms that carry an IPv4
/// address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
/// `2002::/16`) are judged by that address; Teredo and local-use NAT64 are refused outright.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 169 && b == 254)
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168)
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    match s {
        // Mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) reach the IPv4 address.
        [0, 0, 0, 0, 0, 0xffff, hi, lo] | [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => {
            is_public_v4(embedded(hi, lo))
        }
        // 6to4 carries the IPv4 address of its relay in bits 16..48.
        [0x2002, hi, lo, ..] => is_public_v4(embedded(hi, lo)),
        // ::, ::1, IPv4-compatible ::a.b.c.d and the rest of ::/96 and ::ffff:0:0/96 neighbours.
        [0, 0, 0, 0, 0, _, _, _] => false,
        [0x64, 0xff9b, 1, ..] => false,   // local-use NAT64
        [0x100, 0, 0, 0, ..] => false,    // discard-only
        [0x2001, 0..=0x1ff, ..] => false, // Teredo and other IETF assignments
        [0x2001, 0xdb8, ..] => false,     // documentation
        [first, ..] => {
            !((first & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
                || (first & 0xff00) == 0xff00) // multicast
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_2xx_delivers_only_410_disables_and_everything_else_retries() {
        for status in [200, 201, 202, 204, 299] {
            assert_eq!(classify_delivery(Some(status)), DeliveryOutcome::Delivered, "{status}");
        }
        assert_eq!(classify_delivery(Some(410)), DeliveryOutcome::DisableEndpoint);
        for status in
            [100, 199, 300, 301, 308, 400, 401, 403, 404, 408, 409, 429, 500, 502, 503, 504, 599, 0, 999]
        {
            assert_eq!(classify_delivery(Some(status)), DeliveryOutcome::Retry, "{status}");
        }
        assert_eq!(classify_delivery(None), DeliveryOutcome::Retry);
    }

    #[test]
    fn private_loopback_link_local_and_reserved_addresses_are_refused_in_every_spelling() {
        let strict = EndpointPolicy::default();
        for url in [
            "http://127.0.0.1:8080/hook",
            "http://127.1.2.3/",
            "http://localhost:9000/",
            "http://LOCALHOST./",
            "http://shop.localhost/",
            "http://[::1]:80/",
            "http://[::ffff:127.0.0.1]:8080/",
            "http://[::ffff:7f00:1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::a9fe:a9fe]/",
            "http://[2002:c0a8:0101::1]/",
            "http://[2001:0:4136:e378::1]/",
            "http://[fd00::1]/",
            "http://[fe80::1]/",
            "http://[ff02::1]/",
            "http://[::]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.1/",
            "http://172.16.0.1/",
            "http://192.168.1.1/",
            "http://100.64.0.1/",
            "http://0.0.0.0:80/",
            "http://224.0.0.1/",
            "http://255.255.255.255/",
            "https://192.0.2.1/",
        ] {
            let e = check_endpoint(url, &strict).unwrap_err();
            assert_eq!(e.code(), "endpoint_not_allowed", "{url}: {e}");
        }
    }

    #[test]
    fn hosts_a_url_parser_might_read_as_another_address_are_malformed() {
        let strict = EndpointPolicy::default();
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://%31%32%37.0.0.1/",
            "http://example.com\\@127.0.0.1/",
            "http://user@127.0.0.1/",
            "http://\u{ff11}\u{ff12}\u{ff17}.0.0.1/",
            "http://example.com:99999/",
            "http://[::1/",
            "http:///path",
            "ftp://example.com/",
        ] {
            let e = check_endpoint(url, &strict).unwrap_err();
            assert_eq!(e.code(), "invalid_argument", "{url}: {e}");
        }
    }

    #[test]
    fn public_hosts_pass_and_named_private_hosts_pass_only_by_their_own_name() {
        let strict = EndpointPolicy::default();
        for url in [
            "https://merchant.example.com/hooks?x=1",
            "http://8.8.8.8:8080/",
            "https://[2606:4700::1111]/",
            "https://[::ffff:8.8.8.8]/",
            "https://shop-1.example/",
        ] {
            assert_eq!(check_endpoint(url, &strict), Ok(()), "{url}");
        }
        let dev = EndpointPolicy::allowing(["localhost", "127.0.0.1", "[::1]"]);
        for url in ["http://localhost:9000/", "http://127.0.0.1:8080/", "http://[::1]:80/", "http://[0::1]/"]
        {
            assert_eq!(check_endpoint(url, &dev), Ok(()), "{url}");
        }
        // Another spelling of an allowed address is another host; other private ranges stay closed.
        for url in
            ["http://[::ffff:127.0.0.1]/", "http://127.0.0.2/", "http://10.0.0.1/", "http://a.localhost/"]
        {
            assert_eq!(check_endpoint(url, &dev).unwrap_err().code(), "endpoint_not_allowed", "{url}");
        }
    }

    #[test]
    fn resolved_addresses_are_filtered_unless_the_name_is_allowed() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let resolved =
            [ip("127.0.0.1"), ip("::1"), ip("10.1.2.3"), ip("93.184.216.34"), ip("::ffff:169.254.169.254")];
        let strict = EndpointPolicy::default();
        assert_eq!(strict.allowed_addresses("rebind.example", resolved), [ip("93.184.216.34")]);
        assert!(strict.allowed_addresses("localhost", [ip("127.0.0.1"), ip("::1")]).is_empty());
        let dev = EndpointPolicy::allowing(["localhost"]);
        assert_eq!(dev.allowed_addresses("LocalHost.", [ip("127.0.0.1"), ip("::1")]).len(), 2);
        assert!(dev.allowed_addresses("other.example", [ip("127.0.0.1")]).is_empty());
    }
}

//! The edge node's per-address limits over real sockets, as the attacks were made: many
//! loopback addresses, an IPv6 /64 behind a proxy, a proxy's client-address header believed
//! only from trusted proxies, and a table of addresses that is never wiped. (Every address
//! here is loopback or only named in a header: nothing leaves the machine.)

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::{ROOM, TestNode};
use liveshop_edge::pacing::Cidr;

/// `POST /guest` without a device cookie, from `from`, with extra headers: the status.
async fn new_guest(node: &TestNode, from: &str, headers: &[(&str, &str)]) -> u16 {
    let local: IpAddr = from.parse().unwrap();
    let client = liveshop_edge::payments::http_client_builder().local_address(local).build().unwrap();
    let mut req = client.post(format!("http://{}/v1/rooms/{ROOM}/guest", node.addr)).body(r#"{"name":"G"}"#);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = tokio::time::timeout(Duration::from_secs(10), req.send()).await.unwrap().unwrap();
    let status = r.status().as_u16();
    if status != 200 {
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{body}");
    }
    status
}

fn one_guest_an_hour(c: &mut liveshop_edge::config::EdgeConfig) {
    c.guest_devices_per_ip_burst = 1;
    c.guest_devices_per_ip_per_hour = 1;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_loopback_addresses_neither_reset_the_table_nor_lock_newcomers_out() {
    // The attack: 50 loopback addresses minted 1,000 guest tokens; a table wiped when full
    // forgave everyone, and a table that refused newcomers when full locked every new viewer
    // out. Here each limit's table holds 8 addresses and each address may make 2 guests an hour.
    let node = TestNode::start(|c| {
        c.guest_devices_per_ip_burst = 2;
        c.guest_devices_per_ip_per_hour = 2;
        c.paced_addresses = 8;
    })
    .await;
    let limited = "127.0.0.1";
    assert_eq!(new_guest(&node, limited, &[]).await, 200);
    assert_eq!(new_guest(&node, limited, &[]).await, 200);
    assert_eq!(new_guest(&node, limited, &[]).await, 429);
    // 50 others, each leaving one guest of its allowance: they overflow the table six times
    // over, and each one is let in although the table is full.
    for n in 2..52 {
        let from = format!("127.0.0.{n}");
        assert_eq!(new_guest(&node, &from, &[]).await, 200, "{from} is let in");
        if n % 10 == 0 {
            assert_eq!(new_guest(&node, limited, &[]).await, 429, "{from} coming did not forgive {limited}");
        }
    }
    // The least limited are forgotten first: the limited address is still limited, and a new
    // address still gets in (its full allowance, then no more).
    assert_eq!(new_guest(&node, limited, &[]).await, 429, "the flood did not forgive {limited}");
    for _ in 0..2 {
        assert_eq!(new_guest(&node, "127.0.0.60", &[]).await, 200, "a newcomer is let in");
    }
    assert_eq!(new_guest(&node, "127.0.0.60", &[]).await, 429, "a newcomer is limited too");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client_and_an_ipv6_64_is_one_client() {
    let node = TestNode::start(|c| {
        one_guest_an_hour(c);
        c.client_ip_header = Some("X-Forwarded-For".into());
        c.trusted_proxies = vec!["127.0.0.1".parse::<Cidr>().unwrap()];
    })
    .await;
    let xff = |v: &'static str| [("X-Forwarded-For", v)];
    // Through the trusted proxy, each client is the address it names.
    assert_eq!(new_guest(&node, "127.0.0.1", &xff("198.51.100.7")).await, 200);
    assert_eq!(new_guest(&node, "127.0.0.1", &xff("198.51.100.7")).await, 429);
    assert_eq!(new_guest(&node, "127.0.0.1", &xff("198.51.100.8")).await, 200);
    // A client cannot pick its address: what it sends comes before what our proxy appended.
    assert_eq!(new_guest(&node, "127.0.0.1", &xff("203.0.113.1, 198.51.100.7")).await, 429);
    // One IPv6 /64 is one client, whichever of its addresses it uses.
    assert_eq!(new_guest(&node, "127.0.0.1", &xff("2001:db8:1:2::1")).await, 200);
    assert_eq!(new_guest(&node, "127.0.0.1", &xff("2001:db8:1:2:ffff::9")).await, 429);
    assert_eq!(new_guest(&node, "127.0.0.1", &xff("2001:db8:1:3::1")).await, 200);
    // From an untrusted peer the header is ignored: the peer is the client.
    assert_eq!(new_guest(&node, "127.0.0.2", &xff("198.51.100.20")).await, 200);
    assert_eq!(new_guest(&node, "127.0.0.2", &xff("198.51.100.21")).await, 429);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_trusted_proxies_a_client_address_header_is_ignored() {
    let node = TestNode::start(|c| {
        one_guest_an_hour(c);
        c.client_ip_header = Some("CF-Connecting-IP".into());
    })
    .await;
    assert_eq!(new_guest(&node, "127.0.0.1", &[("CF-Connecting-IP", "198.51.100.1")]).await, 200);
    assert_eq!(new_guest(&node, "127.0.0.1", &[("CF-Connecting-IP", "198.51.100.2")]).await, 429);
    node.stop().await;
}

//! The show's measures as the room keeps them: visits from sockets and from the feed's
//! heartbeats, concurrency per slot, engagement per product, the show's moments; durable, and
//! for staff only.

mod harness;

use harness::{Host, acked, who};
use liveshop_room::analytics::{
    Measures, MomentKind, SLOT_MS, Slot, WATCH_BUCKETS, visitor_hash, watch_bucket,
};
use liveshop_room::{Input, ProductId, Role};
use serde_json::{Value, json};

fn analytics(h: &mut Host, role: Role) -> (u16, Value) {
    h.input(Input::Request {
        who: Some(who("someone", role)),
        method: "GET".into(),
        path: "/analytics".into(),
        body: vec![],
    });
    h.replies.pop().unwrap()
}

fn measures(h: &mut Host) -> Measures {
    let (status, body) = analytics(h, Role::Host);
    assert_eq!(status, 200);
    serde_json::from_value(body["measures"].clone()).unwrap()
}

#[test]
fn visits_concurrency_engagement_and_moments_are_measured_per_slot_and_survive_a_restart() {
    let mut h = Host::new();
    // Start on a slot boundary, so the script's slots are plain to read.
    h.now = (h.now / SLOT_MS + 1) * SLOT_MS;
    let t0 = Slot::of(h.now);
    let host = h.connect("host", Role::Host);
    let pin = json!({"type":"product.pin","product":{"id":"a","title":"Linen shirt"}});
    assert!(acked(&h.send(host, pin)));
    let viewers: Vec<_> = (0..4).map(|i| h.connect(&format!("v{i}"), Role::Viewer)).collect();
    h.connect("v0", Role::Viewer); // a second tab: the same visit
    // Three devices on the feed, as the host's heartbeat counter hands them over.
    let arrived: Vec<u64> = ["d1", "d2", "d3"].iter().map(|d| visitor_hash(d)).collect();
    let count = json!({"viewers": 3, "joins": 3, "arrived": arrived});
    h.input(Input::Request {
        who: None,
        method: "PUT".into(),
        path: "/audience".into(),
        body: count.to_string().into(),
    });
    for v in &viewers[..2] {
        h.raw(*v, r#"{"type":"product.impression","product_id":"a"}"#);
    }
    h.raw(viewers[0], r#"{"type":"product.click","product_id":"a"}"#);
    assert!(acked(&h.send(viewers[1], json!({"type":"chat.send","text":"love it"}))));
    for _ in 0..3 {
        h.raw(viewers[2], r#"{"type":"react","emoji":"🔥"}"#);
    }
    h.run_for(1_000);

    // 35 s later (slot 3): a viewer leaves, a feed device leaves after 35 s, a poll is voted in.
    h.advance(34_000);
    h.close(viewers[3]);
    let mut ended = vec![0; WATCH_BUCKETS];
    ended[watch_bucket(35_000)] = 1;
    let count = json!({"viewers": 2, "ended": ended});
    h.input(Input::Request {
        who: None,
        method: "PUT".into(),
        path: "/audience".into(),
        body: count.to_string().into(),
    });
    assert!(acked(
        &h.send(host, json!({"type":"poll.open","question":"Which colour?","options":["sand","navy"]}))
    ));
    let poll = h.of_type(host, "poll.opened")[0]["poll"]["id"].clone();
    for v in &viewers[..2] {
        assert!(acked(&h.send(*v, json!({"type":"poll.vote","poll_id":poll,"option":1}))));
    }
    h.run_for(1_000);

    // A restart: everything committed is there, and the connections the host kept are no new visits.
    h.revive();
    h.advance(1_000);
    // The host hands its feed count over again (it does every few seconds).
    let count = json!({"viewers": 2});
    h.input(Input::Request {
        who: None,
        method: "PUT".into(),
        path: "/audience".into(),
        body: count.to_string().into(),
    });
    h.connect("v9", Role::Viewer);
    h.run_for(1_000);

    let m = measures(&mut h);
    let first = &m.slots[&t0];
    assert_eq!((first.viewers, first.peak, first.joins, first.leaves), (Some(7), 7, 7, 0));
    assert_eq!((first.chat, first.reactions), (1, 3));
    assert_eq!(
        (first.products[&ProductId("a".into())].impressions, first.products[&ProductId("a".into())].clicks),
        (2, 1)
    );
    let third = &m.slots[&Slot(t0.0 + 3)];
    assert_eq!((third.viewers, third.joins, third.leaves, third.votes), (Some(6), 1, 2, 2));
    assert_eq!(m.visitors.count(), 8, "v0..v3, v9 and three devices");
    let mut watch = vec![0u64; WATCH_BUCKETS];
    watch[watch_bucket(35_000)] = 2;
    assert_eq!(m.watch, watch, "v3's visit and the device's, both 35 s");
    let kinds: Vec<MomentKind> = m.moments.iter().map(|m| m.kind).collect();
    assert_eq!(kinds, [MomentKind::ProductPinned, MomentKind::PollOpened]);
    assert_eq!(m.moments[0].label, "Linen shirt");
    assert_eq!(m.moments[0].product_id, Some(ProductId("a".into())));

    // Staff read it; viewers do not.
    assert_eq!(analytics(&mut h, Role::Viewer).0, 403);
    assert_eq!(analytics(&mut h, Role::Merchant).0, 200);
}

#[test]
fn a_visit_begins_at_a_viewers_first_connection_and_ends_at_their_last() {
    let mut h = Host::new();
    let a = h.connect("ana", Role::Viewer);
    h.advance(5_000);
    let b = h.connect("ana", Role::Viewer);
    h.advance(5_000);
    h.close(a);
    h.run_for(1_000);
    assert_eq!(measures(&mut h).watch.iter().sum::<u64>(), 0, "one tab left, the visit goes on");
    h.advance(60_000);
    h.close(b);
    h.run_for(1_000);
    let m = measures(&mut h);
    let mut watch = vec![0u64; WATCH_BUCKETS];
    watch[watch_bucket(71_000)] = 1;
    assert_eq!(m.watch, watch);
    assert_eq!(m.watch_ms, 71_000);
    assert_eq!(
        m.slots.values().map(|s| (s.joins, s.leaves)).fold((0, 0), |t, s| (t.0 + s.0, t.1 + s.1)),
        (1, 1)
    );
}

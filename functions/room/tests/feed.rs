//! The public feed as a host asks for it: the snapshot, public events after a position, the
//! 204 that parks a request, the wait round, and the audience a host counts by heartbeats.

mod harness;

use harness::{Host, acked, who};
use liveshop_room::{Input, Role};
use serde_json::{Value, json};

fn feed(h: &mut Host, query: &str) -> (u16, Value) {
    let path = if query.is_empty() { "/feed".to_string() } else { format!("/feed?{query}") };
    h.input(Input::Request { who: None, method: "GET".into(), path, body: vec![] });
    h.replies.pop().unwrap()
}

fn audience(h: &mut Host, body: Value) -> (u16, Value) {
    let body = serde_json::to_vec(&body).unwrap();
    h.input(Input::Request { who: None, method: "PUT".into(), path: "/audience".into(), body });
    h.replies.pop().unwrap()
}

#[test]
fn the_snapshot_shows_what_is_public_and_nothing_personal() {
    let mut h = Host::new();
    let host = h.connect("host", Role::Host);
    let ana = h.connect("ana", Role::Viewer);
    assert!(acked(&h.send(host, json!({"type": "banner.set", "text": "Free shipping"}))));
    assert!(acked(
        &h.send(host, json!({"type": "poll.open", "question": "Color?", "options": ["red", "blue"]}))
    ));
    let poll = h.room.state().poll.as_ref().unwrap().info.id.0;
    assert!(acked(&h.send(ana, json!({"type": "poll.vote", "poll_id": poll, "option": 1}))));
    assert!(acked(&h.send(ana, json!({"type": "chat.send", "text": "hello"}))));
    assert!(acked(&h.send(host, json!({"type": "mod.shadow_ban", "user": "sam"}))));
    let sam = h.connect("sam", Role::Viewer);
    assert!(acked(&h.send(sam, json!({"type": "chat.send", "text": "only sam sees this"}))));
    assert!(acked(&h.send(host, json!({"type": "mod.settings", "links": "review"}))));
    assert!(acked(&h.send(ana, json!({"type": "chat.send", "text": "see https://example.com"}))));

    let (status, snap) = feed(&mut h, "");
    assert_eq!(status, 200);
    assert_eq!(snap["next"], format!("42-{}", h.room.seq().0));
    let state = &snap["state"];
    assert_eq!(state["banner"], "Free shipping");
    assert_eq!(state["poll"]["counts"], json!([0, 1]));
    assert!(state["poll"].get("my_vote").is_none());
    let texts: Vec<&str> =
        state["history"].as_array().unwrap().iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["hello"], "neither a shadow-banned message nor a held one is public");
    assert!(state.get("moderation").is_none() && state.get("stats").is_none());
    assert_eq!(state["viewers"], 2);
}

#[test]
fn after_a_position_come_public_events_only_then_latest_state() {
    let mut h = Host::new();
    let host = h.connect("host", Role::Host);
    let ana = h.connect("ana", Role::Viewer);
    let (_, snap) = feed(&mut h, "");
    let at = snap["next"].as_str().unwrap().to_string();
    // Nothing after: the host parks the request.
    assert_eq!(feed(&mut h, &format!("after={at}")).0, 204);

    assert!(acked(&h.send(host, json!({"type": "poll.open", "question": "Size?", "options": ["S", "M"]}))));
    let poll = h.room.state().poll.as_ref().unwrap().info.id.0;
    assert!(acked(&h.send(ana, json!({"type": "poll.vote", "poll_id": poll, "option": 0}))));
    assert!(acked(&h.send(host, json!({"type": "mod.ban", "user": "troll"}))));
    assert!(acked(&h.send(host, json!({"type": "chat.send", "text": "welcome"}))));
    let (status, page) = feed(&mut h, &format!("after={at}"));
    assert_eq!(status, 200);
    let types: Vec<&str> =
        page["events"].as_array().unwrap().iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["poll.opened", "chat.message"], "the vote and the ban are not public");
    assert_eq!(page["next"], format!("42-{}", h.room.seq().0));
    assert!(page.get("wait").is_none());
    let latest = page["latest"].as_array().unwrap();
    assert_eq!(latest[0]["type"], "presence");
    assert_eq!(latest[0]["viewers"], 1);
    assert_eq!(latest[1]["type"], "poll.tally");
    assert_eq!(latest[1]["counts"], json!([1, 0]));

    // A vote alone moves the position on: the tally changed although no public event did.
    let next = page["next"].as_str().unwrap().to_string();
    let bob = h.connect("bob", Role::Viewer);
    assert!(acked(&h.send(bob, json!({"type": "poll.vote", "poll_id": poll, "option": 1}))));
    let (status, page) = feed(&mut h, &format!("after={next}"));
    assert_eq!(status, 200);
    assert_eq!(page["events"], json!([]));
    assert_eq!(page["latest"][1]["counts"], json!([1, 1]));

    // The wait ended with nothing new: an empty answer naming its round.
    let here = page["next"].as_str().unwrap().to_string();
    let (status, empty) = feed(&mut h, &format!("after={here}&wait=17"));
    assert_eq!(status, 200);
    assert_eq!(
        (empty["events"].clone(), empty["next"].as_str().unwrap(), empty["wait"].clone()),
        (json!([]), here.as_str(), json!(17))
    );
}

#[test]
fn a_position_the_log_no_longer_reaches_or_of_another_epoch_gets_the_snapshot() {
    let mut h = Host::new();
    let host = h.connect("host", Role::Host);
    for i in 0..600 {
        h.advance(10);
        assert!(acked(&h.send(host, json!({"type": "chat.send", "text": format!("m{i}")}))));
    }
    for stale in ["after=42-3", "after=41-600", "after=42-100000"] {
        let (status, answer) = feed(&mut h, stale);
        assert_eq!(status, 200, "{stale}");
        assert!(answer.get("state").is_some() && answer.get("events").is_none(), "{stale}");
    }
    let ten_back = format!("after=42-{}", h.room.seq().0 - 10);
    let (status, answer) = feed(&mut h, &ten_back);
    assert_eq!(status, 200);
    assert_eq!(answer["events"].as_array().unwrap().len(), 10);
    for bad in ["after=42", "after=x-1", "since=42-1"] {
        let (status, answer) = feed(&mut h, bad);
        assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_argument")), "{bad}");
    }
}

#[test]
fn feed_viewers_counted_by_the_host_join_presence_peak_and_watch_time() {
    let mut h = Host::new();
    let host = h.connect("host", Role::Host);
    let _ana = h.connect_identity(who("ana", Role::Viewer));
    assert_eq!(audience(&mut h, json!({"viewers": 200, "watch_ms": 20_000})).0, 200);
    h.run_for(1000);
    let presence = h.of_type(host, "presence");
    assert_eq!(presence.last().unwrap()["viewers"], 201);
    assert_eq!(h.room.state().stats.peak_viewers, 201);
    assert_eq!(h.room.state().stats.feed_watch_ms, 20_000);
    assert_eq!(feed(&mut h, "").1["state"]["viewers"], 201);
    audience(&mut h, json!({"viewers": 0}));
    h.run_for(1000);
    assert_eq!(h.of_type(host, "presence").last().unwrap()["viewers"], 1);
    assert_eq!(h.room.state().stats.peak_viewers, 201, "the peak stays");
    let (status, refused) = audience(&mut h, json!({"viewers": -1}));
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("invalid_argument")));
}

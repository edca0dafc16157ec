//! Property tests of the room's invariants over random command streams.

mod harness;

use harness::Host;
use liveshop_room::{ConnId, Epoch, Input, Role, Seq};
use proptest::prelude::*;
use serde_json::{Value, json};

const USERS: [(&str, Role); 5] = [
    ("ana", Role::Viewer),
    ("bob", Role::Viewer),
    ("mia", Role::Moderator),
    ("host", Role::Host),
    ("shop", Role::Merchant),
];

/// One step a random client (or the clock) takes; commands may be valid or not.
#[derive(Debug, Clone)]
enum Step {
    Command { user: usize, frame: Value },
    Advance(u64),
    Alarm,
    Reconnect { user: usize },
    Revive,
}

fn command() -> impl Strategy<Value = Value> {
    let user = prop::sample::select(vec!["ana", "bob", "mia", "eve"]);
    let text = prop::sample::select(vec![
        "hi",
        "hello there",
        "buy now",
        "f u c k",
        "see x.example.com",
        "  ",
        "ok",
    ]);
    let id = 0u64..40;
    prop_oneof![
        4 => text.clone().prop_map(|t| json!({"type": "chat.send", "text": t})),
        1 => (text.clone(), id.clone()).prop_map(|(t, r)| json!({"type": "chat.send", "text": t, "reply_to": r})),
        1 => id.clone().prop_map(|m| json!({"type": "chat.delete", "message_id": m})),
        1 => id.clone().prop_map(|m| json!({"type": "chat.pin", "message_id": m})),
        1 => id.clone().prop_map(|m| json!({"type": "mod.approve", "message_id": m})),
        1 => id.clone().prop_map(|m| json!({"type": "mod.reject", "message_id": m})),
        1 => (user.clone(), 0u32..100).prop_map(|(u, s)| json!({"type": "mod.timeout", "user": u, "seconds": s})),
        1 => user.clone().prop_map(|u| json!({"type": "mod.ban", "user": u})),
        1 => user.clone().prop_map(|u| json!({"type": "mod.unban", "user": u})),
        1 => user.clone().prop_map(|u| json!({"type": "mod.shadow_ban", "user": u})),
        1 => user.clone().prop_map(|u| json!({"type": "mod.unshadow_ban", "user": u})),
        1 => prop::sample::select(vec!["off", "flagged", "all"]).prop_map(|r| json!({"type": "mod.settings", "review": r})),
        1 => (0u32..20).prop_map(|s| json!({"type": "mod.settings", "slow_mode_secs": s})),
        2 => prop::sample::select(vec!["🔥", "❤️", "x"]).prop_map(|e| json!({"type": "react", "emoji": e})),
        1 => Just(json!({"type": "poll.open", "question": "Which?", "options": ["a", "b", "c"]})),
        2 => (id.clone(), 0u8..4).prop_map(|(p, o)| json!({"type": "poll.vote", "poll_id": p, "option": o})),
        1 => id.clone().prop_map(|p| json!({"type": "poll.close", "poll_id": p})),
        1 => text.clone().prop_map(|t| json!({"type": "question.ask", "text": t})),
        1 => id.clone().prop_map(|q| json!({"type": "question.upvote", "question_id": q})),
        1 => id.clone().prop_map(|q| json!({"type": "question.answer", "question_id": q})),
        1 => id.clone().prop_map(|q| json!({"type": "question.pin", "question_id": q})),
        1 => text.clone().prop_map(|t| json!({"type": "banner.set", "text": t})),
        1 => prop::sample::select(vec!["a", "b", "c", "d"]).prop_map(|p| json!({"type": "product.pin", "product": {"id": p, "title": "T"}})),
        1 => prop::sample::select(vec!["a", "b"]).prop_map(|p| json!({"type": "product.unpin", "product_id": p})),
        1 => (prop::sample::select(vec!["a", "b"]), any::<bool>()).prop_map(|(p, s)| json!({"type": "product.sold_out", "product_id": p, "sold_out": s})),
        1 => prop::sample::select(vec!["a", "b"]).prop_map(|p| json!({"type": "product.click", "product_id": p})),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        10 => (0..USERS.len(), command()).prop_map(|(user, frame)| Step::Command { user, frame }),
        3 => (0u64..5_000).prop_map(Step::Advance),
        2 => Just(Step::Alarm),
        1 => (0..USERS.len()).prop_map(|user| Step::Reconnect { user }),
        1 => Just(Step::Revive),
    ]
}

fn connect_all(h: &mut Host) -> Vec<ConnId> {
    USERS.iter().map(|(s, r)| h.connect(s, *r)).collect()
}

fn run(h: &mut Host, conns: &mut [ConnId], step: Step) {
    match step {
        Step::Command { user, frame } => {
            h.input(Input::Message { conn: conns[user], text: frame.to_string() });
        }
        Step::Advance(ms) => h.advance(ms),
        Step::Alarm => h.run_for(0),
        Step::Reconnect { user } => {
            h.close(conns[user]);
            let (s, r) = USERS[user];
            conns[user] = h.connect(s, r);
        }
        Step::Revive => h.revive(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// What a revived room rebuilds from storage (snapshot + log) equals the live room, at every
    /// point of any history.
    #[test]
    fn snapshot_plus_log_replay_equals_live_state(steps in prop::collection::vec(step(), 1..300)) {
        let mut h = Host::new();
        let mut conns = connect_all(&mut h);
        for (i, s) in steps.into_iter().enumerate() {
            run(&mut h, &mut conns, s);
            if i % 25 == 0 {
                let records = h.store.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                let restored = liveshop_room::Room::restore(records, Epoch(1)).unwrap();
                prop_assert_eq!(restored.state(), h.room.state());
                prop_assert_eq!(restored.seq(), h.room.seq());
                prop_assert_eq!(restored.epoch(), h.room.epoch());
            }
        }
    }

    /// Frames that are malformed, unknown, oversized or beyond the sender's role get a typed error
    /// and leave the room exactly as it was: no state change, no storage write, no seq.
    #[test]
    fn bad_input_never_changes_the_room(bad in prop::collection::vec(bad_frame(), 1..60)) {
        let mut h = Host::new();
        let conns = connect_all(&mut h);
        for f in [
            json!({"type": "chat.send", "text": "hello"}),
            json!({"type": "poll.open", "question": "Q", "options": ["a", "b"]}),
            json!({"type": "product.pin", "product": {"id": "a", "title": "A"}}),
            json!({"type": "banner.set", "text": "B"}),
        ] {
            h.input(Input::Message { conn: conns[3], text: f.to_string() });
        }
        h.run_for(1_000);
        let (state, seq, store) = (h.room.state().clone(), h.room.seq(), h.store.clone());
        let viewer = conns[0];
        for text in bad {
            let before = h.frames(viewer).len();
            h.input(Input::Message { conn: viewer, text });
            let reply = &h.frames(viewer)[before..];
            prop_assert_eq!(reply.len(), 1, "one reply per bad frame: {:?}", reply);
            prop_assert_eq!(&reply[0]["type"], "error");
            prop_assert!(reply[0]["code"].as_str().is_some_and(|c| !c.is_empty()));
        }
        prop_assert_eq!(h.room.state(), &state);
        prop_assert_eq!(h.room.seq(), seq);
        prop_assert_eq!(&h.store, &store);
    }

    /// A viewer who drops and resumes any number of times, across revivals of the room, sees
    /// every message exactly once and in order.
    #[test]
    fn resume_delivers_every_event_once(plan in prop::collection::vec((0u8..4, 1usize..5), 1..40)) {
        let mut h = Host::new();
        let host = h.connect("host", Role::Host);
        let mut ana = Some(h.connect("ana", Role::Viewer));
        let mut seen: Vec<u64> = Vec::new();
        let mut last = (h.room.epoch(), h.room.seq());
        let mut n = 0;
        for (action, count) in plan {
            match action {
                0 => {
                    for _ in 0..count {
                        n += 1;
                        h.advance(1);
                        h.input(Input::Message { conn: host, text: json!({"type":"chat.send","text":format!("m{n}")}).to_string() });
                    }
                }
                1 => if let Some(c) = ana.take() { collect(&h, c, &mut seen, &mut last); h.close(c); },
                2 => if ana.is_none() { ana = Some(h.connect_resuming("ana", Role::Viewer, Some(last))); },
                _ => h.revive(),
            }
        }
        let c = ana.unwrap_or_else(|| h.connect_resuming("ana", Role::Viewer, Some(last)));
        collect(&h, c, &mut seen, &mut last);
        let all: Vec<u64> = h.room.log().filter(|r| r.event.name() == "chat.message").map(|r| r.seq.0).collect();
        prop_assert_eq!(seen, all);
    }

    /// However viewers vote and change their minds, each counts once, with their last choice.
    #[test]
    fn each_viewer_counts_once_with_their_last_vote(votes in prop::collection::vec((0usize..6, 0u8..3), 1..80)) {
        let mut h = Host::new();
        let host = h.connect("host", Role::Host);
        let voters: Vec<ConnId> = (0..6).map(|i| h.connect(&format!("v{i}"), Role::Viewer)).collect();
        h.input(Input::Message { conn: host, text: json!({"type":"poll.open","question":"Q","options":["a","b","c"]}).to_string() });
        let poll = h.room.seq().0;
        let mut last = [None; 6];
        for (who, option) in votes {
            h.advance(200);
            h.input(Input::Message { conn: voters[who], text: json!({"type":"poll.vote","poll_id":poll,"option":option}).to_string() });
            last[who] = Some(option);
        }
        let mut expected = vec![0u32; 3];
        for o in last.into_iter().flatten() { expected[usize::from(o)] += 1; }
        h.input(Input::Message { conn: host, text: json!({"type":"poll.close","poll_id":poll}).to_string() });
        let closed = h.of_type(host, "poll.closed");
        prop_assert_eq!(&closed[0]["counts"], &json!(expected));
    }
}

fn collect(h: &Host, conn: ConnId, seen: &mut Vec<u64>, last: &mut (Epoch, Seq)) {
    for f in h.frames(conn) {
        if let Some(seq) = f["seq"].as_u64() {
            last.1 = Seq(last.1.0.max(seq));
        }
        if f["type"] == "welcome" && f["resumed"] == false {
            // A fresh welcome replays history from its snapshot instead.
            for m in f["state"]["history"].as_array().unwrap() {
                seen.push(m["id"].as_u64().unwrap());
            }
        }
        if f["type"] == "chat.message" {
            seen.push(f["seq"].as_u64().unwrap());
        }
    }
}

fn bad_frame() -> impl Strategy<Value = String> {
    let forbidden = prop_oneof![
        Just(json!({"type": "chat.delete", "message_id": 1})),
        Just(json!({"type": "chat.pin", "message_id": 1})),
        Just(json!({"type": "chat.unpin"})),
        Just(json!({"type": "mod.ban", "user": "bob"})),
        Just(json!({"type": "mod.timeout", "user": "bob", "seconds": 60})),
        Just(json!({"type": "mod.shadow_ban", "user": "bob"})),
        Just(json!({"type": "mod.settings", "slow_mode_secs": 5})),
        Just(json!({"type": "poll.open", "question": "Q", "options": ["a", "b"]})),
        Just(json!({"type": "poll.close", "poll_id": 2})),
        Just(json!({"type": "question.answer", "question_id": 1})),
        Just(json!({"type": "banner.set", "text": "mine now"})),
        Just(json!({"type": "banner.clear"})),
        Just(json!({"type": "product.pin", "product": {"id": "z", "title": "Z"}})),
        Just(json!({"type": "product.unpin", "product_id": "a"})),
        Just(json!({"type": "product.sold_out", "product_id": "a", "sold_out": true})),
    ]
    .prop_map(|v| v.to_string());
    prop_oneof![
        3 => forbidden,
        2 => ".{0,64}".prop_filter("not a valid frame", |s| liveshop_room::decode(s).is_err()),
        1 => "[a-z._]{1,20}".prop_map(|t| json!({"type": t}).to_string())
            .prop_filter("unknown", |s| liveshop_room::decode(s).is_err()),
        1 => (9_000usize..20_000).prop_map(|n| format!(r#"{{"type":"chat.send","text":"{}"}}"#, "a".repeat(n))),
        1 => Just(r#"{"type":"chat.send","text":"hi","v":3}"#.to_string()),
        1 => Just(r#"{"type":"poll.vote","poll_id":"x","option":-1}"#.to_string()),
    ]
}

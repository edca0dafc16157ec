//! The room's rules, driven the way clients drive them: frames in, frames out.

mod harness;

use harness::{Host, acked, code, who};
use liveshop_room::{CLOSE_BANNED, ConnId, Identity, Role, SNAPSHOT_EVERY};
use serde_json::json;

fn chat(text: &str) -> serde_json::Value {
    json!({"type": "chat.send", "text": text})
}

#[test]
fn everyone_in_the_room_sees_a_chat_message_and_the_sender_gets_an_ack_after_it() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let bob = h.connect("bob", Role::Viewer);
    let reply = h.send(ana, chat("  hello \n  there  "));
    assert!(acked(&reply));
    assert_eq!(h.chat_texts(bob), ["hello there"]);
    let frames = h.frames(ana);
    let msg = frames.iter().position(|f| f["type"] == "chat.message").unwrap();
    let ack = frames.iter().position(|f| f["type"] == "ack").unwrap();
    assert!(msg < ack, "the event precedes its ack");
    assert_eq!(reply["seq"], frames[msg]["seq"]);
    assert_eq!(frames[msg]["epoch"], 42);
}

#[test]
fn a_newcomer_gets_the_last_hundred_messages_on_join() {
    let mut h = Host::new();
    let host = h.connect("host", Role::Host);
    for i in 0..120 {
        h.advance(10);
        assert!(acked(&h.send(host, chat(&format!("message {i}")))));
    }
    let late = h.connect("late", Role::Viewer);
    let welcome = &h.frames(late)[0];
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["resumed"], false);
    let history = welcome["state"]["history"].as_array().unwrap();
    assert_eq!(history.len(), 100);
    assert_eq!(history[0]["text"], "message 20");
    assert_eq!(history[99]["text"], "message 119");
}

#[test]
fn replies_pins_and_deletes() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let mod_ = h.connect("mia", Role::Moderator);
    let first = h.send(ana, chat("is this in blue?"))["seq"].clone();
    h.advance(1500);
    assert!(acked(&h.send(ana, json!({"type": "chat.send", "text": "size M", "reply_to": first}))));
    assert_eq!(code(&h.send(ana, json!({"type": "chat.send", "text": "x", "reply_to": 9999}))), "not_found");
    assert_eq!(code(&h.send(ana, json!({"type": "chat.pin", "message_id": first}))), "forbidden");
    assert!(acked(&h.send(mod_, json!({"type": "chat.pin", "message_id": first}))));
    assert_eq!(h.room.state().pinned_message.as_ref().unwrap().text, "is this in blue?");
    assert!(acked(&h.send(mod_, json!({"type": "chat.delete", "message_id": first}))));
    assert!(h.room.state().pinned_message.is_none(), "deleting a pinned message unpins it");
    assert_eq!(h.of_type(ana, "chat.deleted").len(), 1);
    assert!(h.of_type(ana, "mod.action").is_empty(), "viewers do not see the moderation log");
    let actions = h.of_type(mod_, "mod.action");
    assert_eq!(actions.last().unwrap()["action"], "delete");
    assert_eq!(actions.last().unwrap()["by"], "mia");
}

#[test]
fn a_message_gone_from_the_live_history_is_still_deleted_from_the_replay() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let mia = h.connect("mia", Role::Moderator);
    let first = h.send(ana, chat("rude"))["seq"].clone();
    for i in 0..liveshop_room::state::HISTORY_LEN {
        h.advance(1100);
        assert!(acked(&h.send(mia, chat(&format!("line {i}")))));
    }
    assert!(h.room.state().find_message(serde_json::from_value(first.clone()).unwrap()).is_none());
    assert!(acked(&h.send(mia, json!({"type": "chat.delete", "message_id": first}))));
    let replayed = &h.room.state().timeline.moments;
    assert_eq!(replayed.len(), liveshop_room::state::HISTORY_LEN, "only the deleted line left the replay");
    assert_eq!(code(&h.send(mia, json!({"type": "chat.delete", "message_id": first}))), "not_found");
}

#[test]
fn length_cap_and_empty_messages_are_refused() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    assert_eq!(code(&h.send(ana, chat(&"a".repeat(501)))), "message_too_long");
    assert!(acked(&h.send(ana, chat(&"é".repeat(500)))));
    assert_eq!(code(&h.send(ana, chat(" \n\u{200B} "))), "empty_message");
}

#[test]
fn a_viewer_is_rate_limited_by_a_token_bucket_and_may_speak_again_later() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    for i in 0..5 {
        assert!(acked(&h.send(ana, chat(&format!("burst {i}")))), "burst {i}");
    }
    let refused = h.send(ana, chat("one too many"));
    assert_eq!(code(&refused), "rate_limited");
    assert_eq!(refused["retry_after_ms"], 1000);
    h.advance(1000);
    assert!(acked(&h.send(ana, chat("later"))));
    // The host is not paced.
    let host = h.connect("host", Role::Host);
    for i in 0..20 {
        assert!(acked(&h.send(host, chat(&format!("announcement {i}")))));
    }
}

#[test]
fn slow_mode_spaces_viewer_messages_but_not_the_hosts() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let host = h.connect("host", Role::Host);
    assert_eq!(code(&h.send(ana, json!({"type": "mod.settings", "slow_mode_secs": 10}))), "forbidden");
    assert!(acked(&h.send(host, json!({"type": "mod.settings", "slow_mode_secs": 10}))));
    assert_eq!(h.of_type(ana, "settings.changed")[0]["settings"]["slow_mode_secs"], 10);
    assert!(acked(&h.send(ana, chat("first"))));
    h.advance(4000);
    let refused = h.send(ana, chat("second"));
    assert_eq!(code(&refused), "slow_mode");
    assert_eq!(refused["retry_after_ms"], 6000);
    assert!(acked(&h.send(host, chat("hosts are not slowed"))));
    assert!(acked(&h.send(host, chat("not at all"))));
    h.advance(6000);
    assert!(acked(&h.send(ana, chat("second"))));
}

#[test]
fn the_same_message_twice_within_thirty_seconds_is_suppressed() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    assert!(acked(&h.send(ana, chat("BUY BUY BUY"))));
    h.advance(2000);
    assert_eq!(code(&h.send(ana, chat("buy   buy buy"))), "duplicate_message");
    assert_eq!(code(&h.send(ana, chat("b.u.y b u y BUY"))), "duplicate_message");
    h.advance(30_000);
    assert!(acked(&h.send(ana, chat("BUY BUY BUY"))));
}

#[test]
fn blocked_terms_links_and_profanity_are_refused_with_their_own_codes() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let mia = h.connect("mia", Role::Moderator);
    assert!(acked(&h.send(mia, json!({"type": "mod.settings", "blocked_terms": ["knockoff"]}))));
    assert_eq!(code(&h.send(ana, chat("what a kn0ck-0ff"))), "blocked_content");
    assert_eq!(code(&h.send(ana, chat("cheaper at deals.example.com"))), "link_not_allowed");
    assert_eq!(code(&h.send(ana, chat("f u c k this"))), "blocked_content");
    assert!(h.of_type(mia, "chat.message").is_empty(), "nothing refused reached anyone");
}

#[test]
fn shadow_banned_users_see_their_own_messages_and_nobody_else_does() {
    let mut h = Host::new();
    let troll = h.connect("troll", Role::Viewer);
    let ana = h.connect("ana", Role::Viewer);
    let mia = h.connect("mia", Role::Moderator);
    assert!(acked(&h.send(mia, json!({"type": "mod.shadow_ban", "user": "troll"}))));
    let reply = h.send(troll, chat("you cannot stop me"));
    assert!(acked(&reply), "the sender cannot tell");
    assert_eq!(h.chat_texts(troll), ["you cannot stop me"]);
    assert!(h.chat_texts(ana).is_empty());
    assert!(h.chat_texts(mia).is_empty());
    // Also after a rejoin: history keeps it for the sender alone.
    let troll2 = h.connect("troll", Role::Viewer);
    let ana2 = h.connect("ana", Role::Viewer);
    assert_eq!(h.frames(troll2)[0]["state"]["history"].as_array().unwrap().len(), 1);
    assert_eq!(h.frames(ana2)[0]["state"]["history"].as_array().unwrap().len(), 0);
    assert!(acked(&h.send(mia, json!({"type": "mod.unshadow_ban", "user": "troll"}))));
    h.advance(2000);
    h.send(troll, chat("back"));
    assert_eq!(h.chat_texts(ana), ["back"]);
}

#[test]
fn held_messages_reach_moderators_only_until_approved() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let bob = h.connect("bob", Role::Viewer);
    let mia = h.connect("mia", Role::Moderator);
    assert!(acked(&h.send(mia, json!({"type": "mod.settings", "review": "all"}))));
    let reply = h.send(ana, chat("is shipping free?"));
    assert_eq!(reply["held"], true);
    let held = h.of_type(mia, "chat.held");
    assert_eq!(held.len(), 1);
    assert!(h.of_type(bob, "chat.held").is_empty() && h.chat_texts(bob).is_empty());
    assert!(h.of_type(ana, "chat.held").is_empty());
    let id = held[0]["message"]["id"].clone();
    assert!(acked(&h.send(mia, json!({"type": "mod.approve", "message_id": id}))));
    assert_eq!(h.chat_texts(bob), ["is shipping free?"]);
    assert!(h.room.state().held.is_empty());
    // A rejected one never reaches viewers.
    h.advance(2000);
    let id = h.send(ana, chat("spam spam"))["seq"].clone();
    assert!(acked(&h.send(mia, json!({"type": "mod.reject", "message_id": id}))));
    assert_eq!(h.chat_texts(bob), ["is shipping free?"]);
    assert_eq!(code(&h.send(mia, json!({"type": "mod.approve", "message_id": id}))), "not_found");
}

#[test]
fn links_under_review_are_held_instead_of_refused() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let mia = h.connect("mia", Role::Moderator);
    assert!(acked(&h.send(mia, json!({"type": "mod.settings", "links": "review"}))));
    let reply = h.send(ana, chat("is it this one? shop.example.com/p/1"));
    assert_eq!(reply["held"], true);
    assert_eq!(h.of_type(mia, "chat.held")[0]["reason"], "link");
}

#[test]
fn timeouts_last_between_ten_seconds_and_a_day() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let mia = h.connect("mia", Role::Moderator);
    assert_eq!(
        code(&h.send(mia, json!({"type": "mod.timeout", "user": "ana", "seconds": 5}))),
        "invalid_argument"
    );
    assert_eq!(
        code(&h.send(mia, json!({"type": "mod.timeout", "user": "ana", "seconds": 86_401}))),
        "invalid_argument"
    );
    assert!(acked(&h.send(mia, json!({"type": "mod.timeout", "user": "ana", "seconds": 60}))));
    let refused = h.send(ana, chat("hey"));
    assert_eq!(code(&refused), "timed_out");
    assert_eq!(refused["retry_after_ms"], 60_000);
    h.advance(60_000);
    assert!(acked(&h.send(ana, chat("hey"))));
}

#[test]
fn a_banned_user_is_disconnected_and_cannot_come_back_until_unbanned() {
    let mut h = Host::new();
    let troll = h.connect("troll", Role::Viewer);
    let mia = h.connect("mia", Role::Moderator);
    assert_eq!(code(&h.send(mia, json!({"type": "mod.ban", "user": "mia"}))), "invalid_argument");
    assert!(acked(&h.send(mia, json!({"type": "mod.ban", "user": "troll"}))));
    assert_eq!(h.closed.get(&troll), Some(&CLOSE_BANNED));
    let again = h.connect("troll", Role::Viewer);
    assert_eq!(h.closed.get(&again), Some(&CLOSE_BANNED));
    assert_eq!(h.frames(again)[0]["code"], "banned");
    assert!(acked(&h.send(mia, json!({"type": "mod.unban", "user": "troll"}))));
    let back = h.connect("troll", Role::Viewer);
    assert_eq!(h.frames(back)[0]["type"], "welcome");
}

#[test]
fn reactions_are_aggregated_per_window_not_sent_per_tap() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let bob = h.connect("bob", Role::Viewer);
    h.run_for(1000);
    h.clear();
    for _ in 0..20 {
        h.raw(ana, r#"{"type":"react","emoji":"🔥"}"#);
        h.raw(bob, r#"{"type":"react","emoji":"🔥"}"#);
    }
    h.raw(bob, r#"{"type":"react","emoji":"❤️"}"#);
    assert!(h.of_type(ana, "reactions").is_empty(), "nothing before the window closes");
    assert_eq!(code(&h.raw(ana, r#"{"type":"react","emoji":"💩"}"#).unwrap()), "invalid_emoji");
    h.run_for(250);
    let r = h.of_type(ana, "reactions");
    assert_eq!(r.len(), 1);
    assert_eq!(r[0]["counts"], json!({"🔥": 40, "❤️": 1}));
    assert!(h.of_type(ana, "ack").is_empty(), "signals are not acknowledged");
}

/// What a host that keeps no room between events (Spin) relies on: the window closes with the
/// event, and each user's allowance goes out with the room's records and comes back.
#[test]
fn a_host_without_memory_closes_windows_at_once_and_carries_allowances() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    h.run_for(1000);
    h.clear();
    h.raw(ana, r#"{"type":"react","emoji":"🔥"}"#);
    assert!(h.alarm.is_some(), "a window is open");
    h.room.flush_window(h.now);
    h.drain();
    assert_eq!(h.of_type(ana, "reactions")[0]["counts"], json!({"🔥": 1}));
    assert_eq!(h.alarm, None, "nothing left for an alarm");
    for n in 0..40 {
        h.send(ana, json!({"type": "chat.send", "text": format!("m{n}")}));
    }
    let paces = h.room.paces(h.now);
    assert!(paces.iter().any(|(who, _, _)| who == "ana"), "{paces:?}");
    let records = h.store.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let mut fresh = liveshop_room::Room::restore(records, liveshop_room::Epoch(7)).unwrap();
    fresh.load_paces(paces.clone());
    assert_eq!(fresh.paces(h.now), paces);
    assert!(h.room.paces(h.now + 3_600_000).is_empty(), "refilled allowances are not carried");
}

#[test]
fn a_viewer_votes_once_may_change_while_open_and_sees_final_results() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let bob = h.connect("bob", Role::Viewer);
    let host = h.connect("host", Role::Host);
    assert_eq!(
        code(&h.send(host, json!({"type":"poll.open","question":"Color?","options":["red"]}))),
        "invalid_argument"
    );
    assert_eq!(
        code(&h.send(
            host,
            json!({"type":"poll.open","question":"Color?","options":["a","b","c","d","e","f","g"]})
        )),
        "invalid_argument"
    );
    assert_eq!(
        code(&h.send(ana, json!({"type":"poll.open","question":"Color?","options":["a","b"]}))),
        "forbidden"
    );
    let poll =
        h.send(host, json!({"type":"poll.open","question":"Color?","options":["red","blue"]}))["seq"].clone();
    assert_eq!(
        code(&h.send(host, json!({"type":"poll.open","question":"Again?","options":["a","b"]}))),
        "poll_already_open"
    );
    assert!(acked(&h.send(ana, json!({"type":"poll.vote","poll_id":poll,"option":0}))));
    assert!(acked(&h.send(ana, json!({"type":"poll.vote","poll_id":poll,"option":0}))));
    assert!(acked(&h.send(bob, json!({"type":"poll.vote","poll_id":poll,"option":0}))));
    assert!(acked(&h.send(bob, json!({"type":"poll.vote","poll_id":poll,"option":1}))), "a vote may change");
    assert_eq!(code(&h.send(bob, json!({"type":"poll.vote","poll_id":poll,"option":2}))), "invalid_argument");
    h.run_for(250);
    let tally = h.of_type(host, "poll.tally");
    assert_eq!(tally.last().unwrap()["counts"], json!([1, 1]));
    assert!(h.of_type(bob, "poll.voted").iter().all(|v| v["user"] == "bob"), "votes are private");
    assert!(acked(&h.send(host, json!({"type":"poll.close","poll_id":poll}))));
    assert_eq!(code(&h.send(ana, json!({"type":"poll.vote","poll_id":poll,"option":1}))), "poll_closed");
    let closed = h.of_type(ana, "poll.closed");
    assert_eq!(closed[0]["counts"], json!([1, 1]));
    assert_eq!(closed[0]["total"], 2);
}

#[test]
fn one_question_a_minute_one_upvote_each_and_the_host_answers_and_pins() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let bob = h.connect("bob", Role::Viewer);
    let host = h.connect("host", Role::Host);
    let q = h.send(ana, json!({"type":"question.ask","text":"Does it come in XL?"}))["seq"].clone();
    assert_eq!(
        code(&h.send(ana, json!({"type":"question.ask","text":"And in XXL?"}))),
        "question_rate_limited"
    );
    assert!(acked(&h.send(bob, json!({"type":"question.upvote","question_id":q}))));
    assert_eq!(code(&h.send(bob, json!({"type":"question.upvote","question_id":q}))), "already_upvoted");
    assert_eq!(code(&h.send(bob, json!({"type":"question.answer","question_id":q}))), "forbidden");
    assert!(acked(&h.send(host, json!({"type":"question.answer","question_id":q}))));
    assert!(acked(&h.send(host, json!({"type":"question.pin","question_id":q}))));
    let asked = h.state_question(q.as_u64().unwrap());
    assert_eq!((asked.upvotes, asked.answered), (1, true));
    assert_eq!(h.of_type(bob, "question.pinned").len(), 1);
    h.advance(60_000);
    let reply = h.send(ana, json!({"type":"question.ask","text":"And in XXL?"}));
    assert!(acked(&reply), "{reply}");
}

#[test]
fn banners_are_the_hosts() {
    let mut h = Host::new();
    let mia = h.connect("mia", Role::Moderator);
    let host = h.connect("host", Role::Host);
    assert_eq!(code(&h.send(mia, json!({"type":"banner.set","text":"Free shipping"}))), "forbidden");
    assert!(acked(&h.send(host, json!({"type":"banner.set","text":"Free shipping"}))));
    assert_eq!(h.of_type(mia, "banner.set")[0]["text"], "Free shipping");
    assert!(acked(&h.send(host, json!({"type":"banner.clear"}))));
    assert_eq!(code(&h.send(host, json!({"type":"banner.clear"}))), "not_found");
}

#[test]
fn the_media_origin_posts_stream_events_as_the_host_and_the_room_relays_them() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let mia = h.connect("mia", Role::Moderator);
    let host = h.connect("host", Role::Host);
    let origin = h.connect("media-origin", Role::Host);
    let started = json!({"type": "stream.started", "playlist": "/hls/demo/master.m3u8",
        "codecs": "avc1.64001f,opus", "width": 1280, "height": 720, "capture_lag_ms": 30});
    assert_eq!(code(&h.send(ana, started.clone())), "forbidden");
    assert_eq!(code(&h.send(mia, started.clone())), "forbidden");
    assert_eq!(code(&h.send(host, started.clone())), "forbidden", "a host does not fake the stream");
    assert!(acked(&h.send(origin, started)));
    assert_eq!(h.room.state().timeline.capture_lag_ms, Some(30));
    assert_eq!(h.of_type(ana, "stream.started")[0]["playlist"], "/hls/demo/master.m3u8");
    // Health is for the dashboard, not for viewers.
    let health = json!({"type": "stream.health", "bitrate_kbps": 2500, "fps": 30, "keyframe_interval_ms": 4000,
        "warnings": ["keyframes every 4.0 s"]});
    assert!(acked(&h.send(origin, health)));
    assert_eq!(h.of_type(mia, "stream.health")[0]["warnings"][0], "keyframes every 4.0 s");
    assert!(h.of_type(ana, "stream.health").is_empty());
    let flood =
        json!({"type": "stream.health", "bitrate_kbps": 1, "fps": 1, "warnings": ["a", "b", "c", "d", "e"]});
    assert_eq!(code(&h.send(origin, flood)), "invalid_argument");
    // A publisher whose clock is a day off still streams: its playlist's dates are a day off too,
    // and the room maps by the same day.
    let broken = json!({"type": "stream.health", "bitrate_kbps": 1, "fps": 1, "capture_lag_ms": 86_400_000});
    assert!(acked(&h.send(origin, broken)));
    assert_eq!(h.room.state().timeline.capture_lag_ms, Some(86_400_000));
    let ended = json!({"type": "stream.ended", "duration_ms": 60000});
    assert_eq!(code(&h.send(host, ended.clone())), "forbidden");
    assert!(acked(&h.send(origin, ended)));
    assert_eq!(h.of_type(ana, "stream.ended")[0]["duration_ms"], 60000);
}

fn product(id: &str) -> serde_json::Value {
    json!({"id": id, "title": format!("Product {id}"), "price": {"minor": 1999, "currency": "EUR"}})
}

#[test]
fn up_to_three_products_are_pinned_and_a_countdown_ends_by_alarm() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let host = h.connect("host", Role::Host);
    let ends = h.now + 5000;
    assert_eq!(code(&h.send(ana, json!({"type":"product.pin","product":product("a")}))), "forbidden");
    assert!(acked(
        &h.send(host, json!({"type":"product.pin","product":product("a"),"countdown_ends_at":ends}))
    ));
    assert!(acked(&h.send(host, json!({"type":"product.pin","product":product("b")}))));
    assert!(acked(&h.send(host, json!({"type":"product.pin","product":product("c")}))));
    assert_eq!(code(&h.send(host, json!({"type":"product.pin","product":product("d")}))), "too_many_pins");
    let bad = json!({"id":"e","title":"E","price":{"minor":-5,"currency":"EUR"}});
    assert_eq!(code(&h.send(host, json!({"type":"product.pin","product":bad}))), "invalid_argument");
    assert!(acked(&h.send(host, json!({"type":"product.sold_out","product_id":"b","sold_out":true}))));
    assert_eq!(h.of_type(ana, "product.pinned").len(), 3);
    assert_eq!(h.of_type(ana, "product.sold_out")[0]["product_id"], "b");
    h.run_for(250);
    assert_eq!(h.alarm, Some(ends), "the room asked to be woken at the deal's end");
    h.run_for(4750);
    assert_eq!(h.of_type(ana, "product.countdown_ended")[0]["product_id"], "a");
    assert_eq!(h.alarm, None);
    assert!(acked(&h.send(host, json!({"type":"product.unpin","product_id":"c"}))));
    assert_eq!(code(&h.send(host, json!({"type":"product.unpin","product_id":"c"}))), "not_found");
}

#[test]
fn a_countdown_alarm_still_fires_after_the_room_is_revived() {
    let mut h = Host::new();
    let host = h.connect("host", Role::Host);
    let ends = h.now + 60_000;
    h.send(host, json!({"type":"product.pin","product":product("a"),"countdown_ends_at":ends}));
    h.revive();
    h.run_for(60_000);
    assert_eq!(h.of_type(host, "product.countdown_ended").len(), 1);
    // Alarms fire at least once: a second firing changes nothing.
    let seq = h.room.seq();
    h.input(liveshop_room::Input::Alarm);
    assert_eq!(h.room.seq(), seq);
}

#[test]
fn presence_counts_current_and_peak_viewers_watch_time_and_product_clicks() {
    let mut h = Host::new();
    let host = h.connect("host", Role::Host);
    h.send(host, json!({"type":"product.pin","product":product("a")}));
    let viewers: Vec<_> = (0..5).map(|i| h.connect(&format!("v{i}"), Role::Viewer)).collect();
    h.connect("v0", Role::Viewer); // a second tab is the same viewer
    h.run_for(250);
    let p = h.of_type(host, "presence");
    assert_eq!(
        (p.last().unwrap()["viewers"].clone(), p.last().unwrap()["peak"].clone()),
        (json!(5), json!(5))
    );
    for v in &viewers[..3] {
        h.raw(*v, r#"{"type":"product.impression","product_id":"a"}"#);
    }
    h.raw(viewers[0], r#"{"type":"product.click","product_id":"a"}"#);
    h.advance(10_000);
    for v in &viewers[1..] {
        h.close(*v);
    }
    h.run_for(250);
    let stats = &h.room.state().stats;
    assert_eq!(stats.peak_viewers, 5);
    assert_eq!(stats.impressions[&liveshop_room::ProductId("a".into())], 3);
    assert_eq!(stats.clicks[&liveshop_room::ProductId("a".into())], 1);
    assert_eq!(stats.socket_watch_ms, 4 * 10_250, "the visits of v1..v4");
    assert_eq!(h.of_type(host, "presence").last().unwrap()["viewers"], 1);
    assert!(h.of_type(viewers[0], "stats").is_empty(), "analytics are for staff");
    assert!(!h.of_type(host, "stats").is_empty());
}

#[test]
fn a_viewer_who_resumes_after_reconnect_sees_every_missed_message_once() {
    let mut h = Host::new();
    let host = h.connect("host", Role::Host);
    let ana = h.connect("ana", Role::Viewer);
    h.send(host, chat("one"));
    let last = h.of_type(ana, "chat.message").last().unwrap()["seq"].as_u64().unwrap();
    h.close(ana);
    h.send(host, chat("two"));
    h.send(host, chat("three"));
    let again =
        h.connect_resuming("ana", Role::Viewer, Some((liveshop_room::Epoch(42), liveshop_room::Seq(last))));
    assert_eq!(h.frames(again)[0]["resumed"], true);
    assert_eq!(h.chat_texts(again), ["two", "three"]);
}

#[test]
fn a_client_too_far_behind_or_from_another_epoch_gets_a_snapshot() {
    let mut h = Host::new();
    let host = h.connect("host", Role::Host);
    for i in 0..(liveshop_room::LOG_RETAIN + 10) {
        h.advance(1);
        h.send(host, chat(&format!("m{i}")));
    }
    let old =
        h.connect_resuming("ana", Role::Viewer, Some((liveshop_room::Epoch(42), liveshop_room::Seq(1))));
    assert_eq!(h.frames(old)[0]["resumed"], false);
    assert_eq!(h.frames(old)[0]["state"]["history"].as_array().unwrap().len(), 100);
    assert_eq!(h.frames(old).len(), 1);
    let other = h.connect_resuming("bob", Role::Viewer, Some((liveshop_room::Epoch(7), h.room.seq())));
    assert_eq!(h.frames(other)[0]["resumed"], false);
}

#[test]
fn the_log_is_compacted_into_a_snapshot_and_restores_to_the_same_state() {
    let mut h = Host::new();
    let host = h.connect("host", Role::Host);
    let n = SNAPSHOT_EVERY * 3 + 17;
    for i in 0..n {
        h.advance(1);
        h.send(host, chat(&format!("m{i}")));
    }
    let logs = h.store.keys().filter(|k| k.starts_with("log/")).count() as u64;
    assert!(h.store.contains_key("snapshot"));
    assert!(logs <= liveshop_room::LOG_RETAIN + SNAPSHOT_EVERY, "{logs} log records kept");
    assert!(logs >= liveshop_room::LOG_RETAIN);
    let live = h.room.state().clone();
    let seq = h.room.seq();
    h.revive();
    assert_eq!(h.room.state(), &live);
    assert_eq!(h.room.seq(), seq);
    assert!(acked(&h.send(host, chat("after"))));
    assert_eq!(h.room.seq().0, seq.0 + 1);
}

#[test]
fn bad_frames_get_typed_errors() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    let cases = [
        ("{not json", "malformed_json"),
        ("[1,2]", "malformed_json"),
        (r#"{"type":"chat.explode"}"#, "unknown_command"),
        (r#"{"text":"no type"}"#, "unknown_command"),
        (r#"{"type":"chat.send"}"#, "invalid_argument"),
        (r#"{"type":"chat.send","text":"hi","extra":1}"#, "invalid_argument"),
        (r#"{"type":"chat.send","text":5}"#, "invalid_argument"),
        (r#"{"type":"chat.send","text":"hi","v":2}"#, "unsupported_version"),
        (r#"{"type":"chat.send","text":"hi","id":7}"#, "invalid_argument"),
    ];
    for (text, expected) in cases {
        assert_eq!(code(&h.raw(ana, text).unwrap()), expected, "{text}");
    }
    let big = format!(r#"{{"type":"chat.send","text":"{}"}}"#, "a".repeat(9000));
    assert_eq!(code(&h.raw(ana, &big).unwrap()), "payload_too_large");
    assert_eq!(h.room.seq().0, 0);
}

#[test]
fn http_requests_read_the_state_and_carry_commands() {
    let mut h = Host::new();
    let host = liveshop_room::Identity::new("host", Role::Host);
    let body = br#"{"type":"banner.set","text":"Welcome"}"#.to_vec();
    h.input(liveshop_room::Input::Request {
        who: Some(host),
        method: "POST".into(),
        path: "/commands".into(),
        body: body.clone(),
    });
    assert_eq!(h.replies[0].0, 200);
    h.input(liveshop_room::Input::Request {
        who: None,
        method: "POST".into(),
        path: "/commands".into(),
        body,
    });
    assert_eq!(h.replies[1].0, 403);
    assert_eq!(h.replies[1].1["error"]["code"], "forbidden");
    h.input(liveshop_room::Input::Request {
        who: None,
        method: "GET".into(),
        path: "/state?x".into(),
        body: vec![],
    });
    assert_eq!(h.replies[2].1["state"]["banner"], "Welcome");
    h.input(liveshop_room::Input::Request {
        who: None,
        method: "GET".into(),
        path: "/nope".into(),
        body: vec![],
    });
    assert_eq!(h.replies[3].0, 404);
}

#[test]
fn an_early_or_stale_alarm_does_not_lose_the_next_one() {
    let mut h = Host::new();
    let ana = h.connect("ana", Role::Viewer);
    h.run_for(1000);
    h.raw(ana, r#"{"type":"react","emoji":"🔥"}"#);
    let due = h.alarm.expect("a flush is scheduled");
    // An alarm set earlier fires now, before the flush is due; the host clears it, as the ABI says.
    h.alarm = None;
    h.input(liveshop_room::Input::Alarm);
    assert_eq!(h.alarm, Some(due), "the room asks for its alarm again");
    h.run_for(250);
    assert_eq!(h.of_type(ana, "reactions").len(), 1);
}

#[test]
fn stream_events_come_from_the_media_origin_say_only_how_a_stream_is_doing_and_tell_its_end() {
    let mut h = Host::new();
    let viewer = h.connect("ana", Role::Viewer);
    let origin = Identity::new(liveshop_room::MEDIA_ORIGIN, Role::Host);
    let mut event = |who: Option<Identity>, body: serde_json::Value| {
        h.input(liveshop_room::Input::Request {
            who,
            method: "POST".into(),
            path: liveshop_room::STREAM_EVENTS_PATH.into(),
            body: body.to_string().into_bytes(),
        });
        h.replies.last().unwrap().clone()
    };
    let ended = json!({"type": "stream.ended", "duration_ms": 4200});
    let (status, answer) = event(Some(Identity::new("host", Role::Host)), ended.clone());
    assert_eq!((status, answer["error"]["code"].as_str()), (403, Some("forbidden")), "only the origin");
    let (status, answer) = event(Some(origin.clone()), json!({"type": "chat.send", "text": "buy now"}));
    assert_eq!((status, answer["error"]["code"].as_str()), (400, Some("invalid_argument")), "{answer}");
    let (status, answer) = event(Some(origin.clone()), json!({"type": "stream.health", "nope": 1}));
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = event(Some(origin), ended);
    assert_eq!((status, answer["ended"].as_bool()), (200, Some(true)), "{answer}");
    assert!(answer["seq"].is_u64(), "{answer}");
    assert!(h.frames(viewer).iter().any(|f| f["type"] == "stream.ended"));
}

#[test]
fn a_banned_user_can_do_nothing_and_moderators_cannot_sanction_the_host() {
    let mut h = Host::new();
    let host = h.connect("host", Role::Host);
    let mia = h.connect("mia", Role::Moderator);
    let poll = h.send(host, json!({"type":"poll.open","question":"Q","options":["a","b"]}))["seq"].clone();
    assert!(acked(&h.send(mia, json!({"type": "mod.ban", "user": "troll"}))));
    // A banned user's token still works over HTTP; the room refuses every command.
    let troll = liveshop_room::Identity::new("troll", Role::Viewer);
    let vote = json!({"type":"poll.vote","poll_id":poll,"option":0}).to_string().into_bytes();
    h.input(liveshop_room::Input::Request {
        who: Some(troll),
        method: "POST".into(),
        path: "/commands".into(),
        body: vote,
    });
    assert_eq!(h.replies[0].1["error"]["code"], "banned");
    assert_eq!(code(&h.send(mia, json!({"type": "mod.ban", "user": "host"}))), "forbidden");
    assert_eq!(
        code(&h.send(mia, json!({"type": "mod.timeout", "user": "host", "seconds": 60}))),
        "forbidden"
    );
    let other = h.connect("max", Role::Moderator);
    assert_eq!(code(&h.send(mia, json!({"type": "mod.shadow_ban", "user": "max"}))), "forbidden");
    assert!(acked(&h.send(host, json!({"type": "mod.timeout", "user": "max", "seconds": 60}))));
    let _ = other;
}

#[test]
fn staff_met_once_stay_out_of_a_moderators_reach_and_hosts_lift_any_sanction() {
    let mut h = Host::new();
    let mia = h.connect("mia", Role::Moderator);
    // Staff who came once, and the show's creator the host shell vouched for, then went away.
    for (subject, role) in [("max", Role::Moderator), ("mel", Role::Merchant)] {
        let c = h.connect(subject, role);
        h.close(c);
    }
    h.input(liveshop_room::Input::Request {
        who: Some(who("studio", Role::Host)),
        method: "PUT".into(),
        path: "/staff".into(),
        body: vec![],
    });
    // Remembered for good: a revival from storage forgets nothing.
    h.revive();
    for user in ["studio", "max", "mel", liveshop_room::MEDIA_ORIGIN] {
        for cmd in ["mod.ban", "mod.shadow_ban"] {
            assert_eq!(code(&h.send(mia, json!({"type": cmd, "user": user}))), "forbidden", "{cmd} {user}");
        }
        let timeout = json!({"type": "mod.timeout", "user": user, "seconds": 60});
        assert_eq!(code(&h.send(mia, timeout)), "forbidden", "{user}");
    }
    // A moderator's ban of a name never seen binds it as a viewer, never as staff.
    assert!(acked(&h.send(mia, json!({"type": "mod.ban", "user": "sam"}))));
    let sam_mod = h.connect("sam", Role::Moderator);
    assert!(acked(&h.send(sam_mod, json!({"type": "chat.send", "text": "still here"}))));
    let sam_viewer = h.connect("sam", Role::Viewer);
    assert_eq!(h.of_type(sam_viewer, "error")[0]["code"], "banned");
    // A host's sanction binds a moderator, only a host lifts it, and a host lifts any.
    let host = h.connect("studio", Role::Host);
    assert!(acked(&h.send(host, json!({"type": "mod.ban", "user": "max"}))));
    let max = h.connect("max", Role::Moderator);
    assert_eq!(h.of_type(max, "error")[0]["code"], "banned");
    assert_eq!(code(&h.send(mia, json!({"type": "mod.unban", "user": "max"}))), "forbidden");
    assert!(acked(&h.send(host, json!({"type": "mod.unban", "user": "max"}))));
    assert!(acked(&h.send(host, json!({"type": "mod.unban", "user": "sam"}))));
    assert_eq!(code(&h.send(host, json!({"type": "mod.ban", "user": "studio"}))), "invalid_argument");
}

#[test]
fn a_staff_member_hears_the_welcome_first_even_when_attached_by_a_revival() {
    // A host that revives a room for a new connection attaches it before the room sees it
    // connect; the room then meets that staff member and says so, after the welcome.
    let mut h = Host::new();
    let conn = ConnId(77);
    h.room.attach(conn, who("max", Role::Moderator), h.now);
    h.open.insert(conn, who("max", Role::Moderator));
    h.input(liveshop_room::Input::Connect {
        conn,
        who: who("max", Role::Moderator),
        connected_at: h.now,
        resume: None,
    });
    let kinds: Vec<_> = h.frames(conn).iter().map(|f| f["type"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds, ["welcome", "staff.admitted"]);
    assert_eq!(h.frames(conn)[1]["seq"].as_u64(), h.frames(conn)[0]["seq"].as_u64().map(|s| s + 1));
}

#[test]
fn product_links_must_be_web_links() {
    let mut h = Host::new();
    let host = h.connect("host", Role::Host);
    let evil = json!({"id": "x", "title": "X", "url": "javascript:alert(1)"});
    assert_eq!(code(&h.send(host, json!({"type":"product.pin","product":evil}))), "invalid_argument");
    let fine = json!({"id": "x", "title": "X", "url": "https://shop.example/x", "image_url": "data:image/png;base64,AA=="});
    assert!(acked(&h.send(host, json!({"type":"product.pin","product":fine}))));
    // A small inline picture fits (a link of that length would not); a big one does not.
    let picture = |bytes: usize| format!("data:image/svg+xml,{}", "a".repeat(bytes - 19));
    let small = json!({"id": "x", "title": "X", "image_url": picture(2048)});
    assert!(acked(&h.send(host, json!({"type":"product.pin","product":small}))));
    let big = json!({"id": "x", "title": "X", "image_url": picture(2049)});
    assert_eq!(code(&h.send(host, json!({"type":"product.pin","product":big}))), "invalid_argument");
    let long_link =
        json!({"id": "x", "title": "X", "url": format!("https://shop.example/{}", "a".repeat(300))});
    assert_eq!(code(&h.send(host, json!({"type":"product.pin","product":long_link}))), "invalid_argument");
}

#[test]
fn a_device_votes_once_whatever_guest_subjects_it_holds() {
    let mut h = Host::new();
    let on =
        |subject: &str, device: &str| Identity { device: Some(device.into()), ..who(subject, Role::Viewer) };
    let host = h.connect("host", Role::Host);
    let guests: Vec<ConnId> = ["g1", "g2", "g3"].iter().map(|s| h.connect_identity(on(s, "phone"))).collect();
    let other = h.connect_identity(on("g4", "laptop"));
    let poll =
        h.send(host, json!({"type":"poll.open","question":"Color?","options":["red","blue"]}))["seq"].clone();
    for &g in &guests {
        assert!(acked(&h.send(g, json!({"type":"poll.vote","poll_id":poll,"option":0}))));
    }
    assert!(acked(&h.send(other, json!({"type":"poll.vote","poll_id":poll,"option":0}))));
    // The device's latest vote is the one that counts, also after a revival from storage.
    assert!(acked(&h.send(guests[0], json!({"type":"poll.vote","poll_id":poll,"option":1}))));
    h.revive();
    assert!(acked(&h.send(guests[1], json!({"type":"poll.vote","poll_id":poll,"option":1}))));
    assert!(acked(&h.send(host, json!({"type":"poll.close","poll_id":poll}))));
    let closed = h.of_type(host, "poll.closed");
    assert_eq!((closed[0]["counts"].clone(), closed[0]["total"].clone()), (json!([1, 1]), json!(2)));
}

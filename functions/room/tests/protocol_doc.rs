//! Keeps `docs/protocol.md` true: every example there decodes as the type its heading names and
//! re-encodes to the same JSON, and every command, event, frame and error code is documented.

use std::collections::BTreeSet;

use liveshop_room::protocol::{Command, ErrorCode, EventFrame, ServerFrame};
use serde_json::Value;
use strum::VariantNames;

/// `(section, name, json)` for every `### \`name\`` heading followed by a json block.
fn examples(doc: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let (mut section, mut name) = (String::new(), None::<String>);
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if let Some(s) = line.strip_prefix("## ") {
            section = s.to_string();
            name = None;
        } else if let Some(h) = line.strip_prefix("### ") {
            name = Some(h.trim_matches('`').to_string());
        } else if line.trim() == "```json" {
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            let n = name.take().unwrap_or_else(|| panic!("a json block without a heading in {section}"));
            out.push((section.clone(), n, block.join("\n")));
        }
    }
    out
}

fn doc() -> String {
    std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/protocol.md")).unwrap()
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn every_command_example_decodes_as_its_command() {
    let mut seen = BTreeSet::new();
    for (section, name, json) in examples(&doc()).into_iter().filter(|e| e.0 == "Commands") {
        let frame = liveshop_room::decode(&json).unwrap_or_else(|e| panic!("{section} {name}: {e:?}"));
        assert_eq!(frame.command.name(), name);
        // Re-encoding gives the same fields (the id travels beside the command).
        let mut expected: Value = serde_json::from_str(&json).unwrap();
        expected.as_object_mut().unwrap().remove("id");
        assert_eq!(serde_json::to_value(&frame.command).unwrap(), expected, "{name}");
        seen.insert(name);
    }
    assert_eq!(seen, names(Command::VARIANTS), "every command is documented, and only those");
}

#[test]
fn every_event_example_decodes_as_its_event() {
    let mut seen = BTreeSet::new();
    for (_, name, json) in examples(&doc()).into_iter().filter(|e| e.0 == "Events") {
        let frame: EventFrame = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(frame.event.name(), name);
        let expected: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_value(&frame).unwrap(), expected, "{name}");
        seen.insert(name);
    }
    assert_eq!(seen, names(liveshop_room::Event::VARIANTS), "every event is documented, and only those");
}

#[test]
fn every_other_frame_example_decodes_as_its_frame() {
    let mut seen = BTreeSet::new();
    for (_, name, json) in examples(&doc()).into_iter().filter(|e| e.0 == "Other frames from the room") {
        let frame: ServerFrame = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(<&str>::from(&frame), name);
        let expected: Value = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_value(&frame).unwrap(), expected, "{name}");
        seen.insert(name);
    }
    assert_eq!(seen, names(ServerFrame::VARIANTS));
}

#[test]
fn every_error_code_is_documented() {
    let doc = doc();
    let table = doc.split("## Error codes").nth(1).unwrap().split("\n## ").next().unwrap();
    let documented: BTreeSet<String> = table
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .map(|l| l.split('`').next().unwrap().to_string())
        .collect();
    assert_eq!(documented, names(ErrorCode::VARIANTS));
    // The identity crate's codes are the token_* ones here.
    for e in [
        liveshop_identity::TokenError::Malformed,
        liveshop_identity::TokenError::BadSignature,
        liveshop_identity::TokenError::Expired,
        liveshop_identity::TokenError::NotYetValid,
        liveshop_identity::TokenError::WrongRoom,
    ] {
        assert!(documented.contains(e.code()), "{}", e.code());
    }
}

#[test]
fn an_event_frames_position_is_read_from_its_start_and_only_events_have_one() {
    for (_, _, json) in examples(&doc()).into_iter().filter(|e| e.0 == "Events") {
        let frame: EventFrame = serde_json::from_str(&json).unwrap();
        let written = serde_json::to_string(&frame).unwrap();
        assert_eq!(EventFrame::position(&written), Some((frame.epoch, frame.seq)), "{written}");
    }
    for (_, _, json) in examples(&doc()).into_iter().filter(|e| e.0 == "Other frames from the room") {
        let frame: ServerFrame = serde_json::from_str(&json).unwrap();
        assert_eq!(EventFrame::position(&serde_json::to_string(&frame).unwrap()), None);
    }
}

/// The feed's examples are the room's answers: the snapshot's `state` a welcome's view, the
/// events event frames and the latest-state frames what a socket gets.
#[test]
fn the_feed_examples_are_answers_the_room_gives() {
    let feed: Vec<(String, String)> = examples(&doc())
        .into_iter()
        .filter(|e| e.0 == "The public feed")
        .map(|(_, name, json)| (name, json))
        .collect();
    assert_eq!(feed.len(), 2, "the snapshot and an answer after a position");
    for (name, json) in feed {
        let answer: Value = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{name}: {e}"));
        let position = format!("{}-{}", answer["epoch"], answer["seq"]);
        assert_eq!(answer["next"], position.as_str(), "{name}");
        if name.contains("after=") {
            for e in answer["events"].as_array().unwrap() {
                let frame: EventFrame =
                    serde_json::from_value(e.clone()).unwrap_or_else(|x| panic!("{name}: {x}"));
                assert_eq!(serde_json::to_value(&frame).unwrap(), *e);
            }
            for f in answer["latest"].as_array().unwrap() {
                let frame: ServerFrame =
                    serde_json::from_value(f.clone()).unwrap_or_else(|x| panic!("{name}: {x}"));
                assert!(
                    matches!(frame, ServerFrame::Presence { .. } | ServerFrame::PollTally { .. }),
                    "{name}"
                );
            }
        } else {
            let view: liveshop_room::view::RoomView =
                serde_json::from_value(answer["state"].clone()).unwrap_or_else(|x| panic!("{name}: {x}"));
            assert_eq!(serde_json::to_value(&view).unwrap(), answer["state"], "{name}");
        }
    }
}

/// The timeline's example is the room's answer: its moments are moments as the room writes them.
#[test]
fn the_timeline_example_is_an_answer_the_room_gives() {
    let docs = examples(&doc());
    let (_, _, json) = docs.iter().find(|e| e.0 == "The replay's timeline").expect("the timeline's example");
    let answer: Value = serde_json::from_str(json).unwrap();
    assert_eq!(
        answer.as_object().unwrap().keys().cloned().collect::<Vec<_>>(),
        ["capture_lag_ms", "chat_dropped", "ended", "live", "moments"]
    );
    for m in answer["moments"].as_array().unwrap() {
        let moment: liveshop_room::timeline::Moment = serde_json::from_value(m.clone()).unwrap();
        assert_eq!(serde_json::to_value(&moment).unwrap(), *m);
    }
}

//! The node's fan-out without sockets: batches released when a room's mailbox drains, bounded
//! queues per connection.

use std::sync::Arc;
use std::time::Duration;

use liveshop_edge::metrics::Metrics;
use liveshop_edge::node::{CLOSE_TOO_SLOW, Delivery, Kind, KindSetup, NoEffects, Node, NodeConfig};
use liveshop_edge::sqlite::Db;
use liveshop_edge::{ROOM_COMPONENT, Runtime, RuntimeConfig, SystemEnv};
use liveshop_identity::{Identity, Role};

async fn frames(sub: &mut liveshop_edge::node::Subscription) -> Vec<serde_json::Value> {
    match tokio::time::timeout(Duration::from_secs(10), sub.next()).await.expect("frames within 10 s") {
        Delivery::Frames(f) => f.iter().map(|f| serde_json::from_str(f.as_str()).unwrap()).collect(),
        Delivery::Close(code, reason) => panic!("closed {code} {reason}"),
    }
}

#[tokio::test]
async fn a_connection_that_falls_behind_is_closed_while_the_room_goes_on() {
    let component = Runtime::new(RuntimeConfig::default()).unwrap().load(ROOM_COMPONENT).unwrap();
    let rooms = KindSetup { component, db: Db::in_memory().unwrap() };
    let config =
        NodeConfig { queue_batches: 4, max_batch_delay: Duration::from_millis(1), ..NodeConfig::default() };
    let metrics = Arc::new(Metrics::default());
    let node =
        Node::start(config, rooms, None, Arc::new(SystemEnv), metrics.clone(), Arc::new(NoEffects)).unwrap();
    let mut sloth = node.connect(Kind::Room, "r", Identity::new("sloth", Role::Viewer), None).await.unwrap();
    let mut host = node.connect(Kind::Room, "r", Identity::new("host", Role::Host), None).await.unwrap();
    assert_eq!(frames(&mut host).await[0]["type"], "welcome");
    // Twenty commands, each waited for, so each lands in its own batch.
    for i in 0..20 {
        let id = format!("c{i}");
        host.send(format!(r#"{{"type":"chat.send","id":"{id}","text":"m{i}"}}"#)).await.unwrap();
        while !frames(&mut host).await.iter().any(|f| f["id"] == id.as_str()) {}
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), sloth.next()).await.unwrap();
    assert_eq!(closed, Delivery::Close(CLOSE_TOO_SLOW, "too slow: reconnect and resume".into()));
    assert!(metrics.render().contains("liveshop_slow_consumers_closed_total 1"));
}

#[tokio::test]
async fn a_room_releases_an_event_once_its_mailbox_is_drained_not_after_the_batch_delay() {
    let component = Runtime::new(RuntimeConfig::default()).unwrap().load(ROOM_COMPONENT).unwrap();
    let rooms = KindSetup { component, db: Db::in_memory().unwrap() };
    // A backlog would wait a minute for its batch; an idle room must not wait at all.
    let config = NodeConfig { max_batch_delay: Duration::from_secs(60), ..NodeConfig::default() };
    let metrics = Arc::new(Metrics::default());
    let node = Node::start(config, rooms, None, Arc::new(SystemEnv), metrics, Arc::new(NoEffects)).unwrap();
    let mut host = node.connect(Kind::Room, "r", Identity::new("host", Role::Host), None).await.unwrap();
    let mut viewer = node.connect(Kind::Room, "r", Identity::new("ann", Role::Viewer), None).await.unwrap();
    assert_eq!(frames(&mut host).await[0]["type"], "welcome");
    assert_eq!(frames(&mut viewer).await[0]["type"], "welcome");
    for i in 0..3 {
        let id = format!("c{i}");
        host.send(format!(r#"{{"type":"chat.send","id":"{id}","text":"m{i}"}}"#)).await.unwrap();
        // `frames` gives up after 10 s, far inside the minute.
        let got = frames(&mut host).await;
        assert!(got.iter().any(|f| f["type"] == "ack" && f["id"] == id.as_str()), "{got:?}");
        let mut seen = frames(&mut viewer).await;
        while !seen.iter().any(|f| f["type"] == "chat.message" && f["message"]["text"] == format!("m{i}")) {
            seen = frames(&mut viewer).await;
        }
    }
}

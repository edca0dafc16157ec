//! A leaked stream key is revoked by its show's host: `POST /v1/shows/{show}/stream-key` bumps
//! the show's key version, the old key stops opening WHIP at once, and a live publisher keeps
//! streaming unless the host asks to cut it off. Over real sockets: `liveshop dev` (the origin
//! in the node's process), and an origin of its own asking a node for the key version (as
//! `liveshop origin --edge` does). The WHIP sessions here carry no media (nothing to send
//! packets to, so no network namespace is needed): a session exists at the origin from the
//! answered offer until its publisher ends it, the host does, or media stays away for the
//! silence timeout, and that is what "live" means to the rotation.

mod common;
mod media;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use liveshop_identity::{Claims, Role, Secret};
use liveshop_media_origin::events::LogEvents;
use liveshop_media_origin::keys::NodeKeyVersions;
use liveshop_media_origin::{Origin, OriginConfig};
use media::request;
use serde_json::Value;

fn obs_offer() -> Vec<u8> {
    std::fs::read(media::root().join("tests/media/obs-offer.sdp")).unwrap()
}

/// `POST /whip/{show}` with `key`: the status and the error code, if any.
async fn publish(addr: SocketAddr, show: &str, key: &str) -> (u16, Option<String>) {
    let auth = format!("Bearer {key}");
    let headers = [("Content-Type", "application/sdp"), ("Authorization", auth.as_str())];
    let r = request(addr, "POST", &format!("/whip/{show}"), &headers, &obs_offer()).await;
    let code = (r.status >= 400).then(|| r.json()["error"]["code"].as_str().unwrap_or_default().to_string());
    (r.status, code)
}

/// `POST /v1/shows/{show}/stream-key` with `token` (if any) and `body`.
async fn rotate(addr: SocketAddr, show: &str, token: Option<&str>, body: &str) -> (u16, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("Authorization", a.as_str()));
    }
    let r = request(addr, "POST", &format!("/v1/shows/{show}/stream-key"), &headers, body.as_bytes()).await;
    (r.status, r.json())
}

fn mint(secret: &Secret, room: &str, sub: &str, role: Role) -> String {
    let exp = common::now_ms() / 1000 + 3600;
    secret.mint(&Claims::new(sub, room, role, exp)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_rotates_a_leaked_stream_key_and_cuts_off_its_publisher_only_when_asked() {
    let data = common::temp_dir("stream-keys");
    let (node, url, mut lines) = common::liveshop_dev(&data);
    let host_token = common::printed(&mut lines, "Host token:");
    let leaked = common::printed(&mut lines, "Bearer Token:");
    std::thread::spawn(move || for _ in lines {});
    let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap_or_else(|_| panic!("{url}"));
    let secret =
        Secret::new(std::fs::read_to_string(data.join("secret")).unwrap().trim().as_bytes().to_vec())
            .unwrap();

    // Only the show's host rotates: not its viewers or moderators, nor another show's host.
    for (token, status) in [
        (None, 401),
        (Some(mint(&secret, "demo", "v", Role::Viewer)), 403),
        (Some(mint(&secret, "demo", "m", Role::Moderator)), 403),
        (Some(mint(&secret, "other-show", "host", Role::Host)), 403),
    ] {
        let (got, answer) = rotate(addr, "demo", token.as_deref(), "").await;
        assert_eq!(got, status, "{answer}");
    }
    assert_eq!(rotate(addr, "nope", Some(&mint(&secret, "nope", "h", Role::Host)), "").await.0, 404);

    // The publisher with the leaked key is live.
    assert_eq!(publish(addr, "demo", &leaked).await, (201, None));
    let live_since = Instant::now();

    // Rotated without `disconnect`: the old key opens nothing any more, the new one is good
    // (its publish is refused only because the show is still live: the publisher was kept).
    let (status, rotated) = rotate(addr, "demo", Some(&host_token), "").await;
    assert_eq!(status, 200, "{rotated}");
    // (The node's configured address: `--listen` here asked for any port.)
    assert!(rotated["whip_url"].as_str().unwrap().ends_with("/whip/demo"), "{rotated}");
    assert_eq!(
        (rotated["stream_key_version"].as_u64(), rotated["disconnected"].as_bool()),
        (Some(1), Some(false))
    );
    let first = rotated["stream_key"].as_str().unwrap().to_string();
    assert_ne!(first, leaked);
    assert_eq!(publish(addr, "demo", &leaked).await, (401, Some("unauthorized".into())));
    assert_eq!(publish(addr, "demo", &first).await, (409, Some("show_live".into())));

    // Rotated with `disconnect`: the live session ends and the new key publishes at once.
    let (status, rotated) = rotate(addr, "demo", Some(&host_token), r#"{"disconnect": true}"#).await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(
        (rotated["stream_key_version"].as_u64(), rotated["disconnected"].as_bool()),
        (Some(2), Some(true))
    );
    let second = rotated["stream_key"].as_str().unwrap().to_string();
    assert_eq!(publish(addr, "demo", &first).await, (401, Some("unauthorized".into())));
    assert_eq!(publish(addr, "demo", &second).await, (201, None));
    // Well inside the origin's silence timeout (6 s): the rotation ended the session, not silence.
    assert!(live_since.elapsed() < Duration::from_secs(5), "too slow to tell what ended the session");

    let bad = rotate(addr, "demo", Some(&host_token), r#"{"disconect": true}"#).await;
    assert_eq!((bad.0, bad.1["error"]["code"].as_str()), (400, Some("invalid_argument")));

    // The version is the show's: a restarted node prints the key it now takes.
    drop(node);
    let (node, _, mut lines) = common::liveshop_dev(&data);
    assert_eq!(common::printed(&mut lines, "Bearer Token:"), second);
    drop(node);
    std::fs::remove_dir_all(&data).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_of_its_own_asks_the_node_which_key_a_show_takes() {
    let node = common::TestNode::start(|_| {}).await;
    let media_dir = media::temp_dir("stream-keys-origin");
    let mut config = OriginConfig::new(media_dir.clone());
    config.key_versions = Arc::new(NodeKeyVersions::new(
        liveshop_edge::payments::http_client(),
        &format!("http://{}", node.addr),
    ));
    let origin = Origin::start(config, common::SECRET.as_bytes(), Arc::new(LogEvents)).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let at = listener.local_addr().unwrap();
    let app = origin.router();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let show = common::ROOM;
    let old = origin.stream_key(show);
    // A show the node does not have cannot be published to, whatever the key.
    assert_eq!(
        publish(at, "no-such-show", &origin.stream_key("no-such-show")).await,
        (404, Some("not_found".into()))
    );

    let host = common::token(show, "host", Role::Host);
    // No origin in the node's process to end a session: refused before the key changes.
    let (status, answer) = rotate(node.addr, show, Some(&host), r#"{"disconnect": true}"#).await;
    assert_eq!((status, answer["error"]["code"].as_str()), (409, Some("no_media_origin")));
    assert_eq!(publish(at, show, &old).await, (201, None));
    assert_eq!(origin.end_stream(show).await, Ok(true));

    let (status, rotated) = rotate(node.addr, show, Some(&host), "").await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(publish(at, show, &old).await, (401, Some("unauthorized".into())));
    assert_eq!(publish(at, show, rotated["stream_key"].as_str().unwrap()).await, (201, None));

    node.stop().await;
    let _ = std::fs::remove_dir_all(&media_dir);
}

//! Every WHIP rule of the origin over real HTTP, with the offer OBS 30 sends
//! (`tests/media/obs-offer.sdp`: no candidates, `profile-level-id=42e01f`, `stereo=1`, and
//! payload types 109/102 that are not str0m's defaults). No media flows here, so no network
//! namespace is needed; `media_live.rs` publishes for real.

mod common;
mod media;

use media::{TestOrigin, request};

/// Request headers, owned.
type Headers = Vec<(&'static str, String)>;

fn obs_offer() -> Vec<u8> {
    std::fs::read(media::root().join("tests/media/obs-offer.sdp")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_answers_obs_and_refuses_everything_it_should_with_its_own_status() {
    let o = TestOrigin::start("whip-rules", |c| c.ingest.max_sessions = 2).await;
    let key = o.origin.stream_key("demo");
    let auth = format!("Bearer {key}");
    let sdp = [("Content-Type", "application/sdp"), ("Authorization", auth.as_str())];
    let post = |headers: Headers, body: Vec<u8>| {
        let http = o.http;
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            request(http, "POST", "/whip/demo", &h, &body).await
        }
    };

    // CORS preflight: a browser page may publish and read Location/ETag.
    let pre = request(o.http, "OPTIONS", "/whip/demo", &[("Origin", "https://studio.example")], b"").await;
    assert_eq!(pre.status, 204);
    assert_eq!(pre.header("access-control-allow-origin"), Some("*"));
    assert!(pre.header("access-control-allow-methods").unwrap().contains("POST"));
    assert!(pre.header("access-control-allow-headers").unwrap().contains("Authorization"));
    assert_eq!(pre.header("access-control-expose-headers"), Some("Location, ETag, Link"));

    // 415, 401 (missing and wrong key, and another show's key), 400, 406: each with its code.
    let cases: Vec<(Headers, Vec<u8>, u16, &str)> = vec![
        (vec![("Authorization", auth.clone())], obs_offer(), 415, "unsupported_media_type"),
        (vec![("Content-Type", "application/sdp".into())], obs_offer(), 401, "unauthorized"),
        (
            vec![("Content-Type", "application/sdp".into()), ("Authorization", "Bearer nope".into())],
            obs_offer(),
            401,
            "unauthorized",
        ),
        (
            vec![
                ("Content-Type", "application/sdp".into()),
                ("Authorization", format!("Bearer {}", o.origin.stream_key("other-show"))),
            ],
            obs_offer(),
            401,
            "unauthorized",
        ),
        (sdp.iter().map(|(k, v)| (*k, v.to_string())).collect(), b"this is not SDP".to_vec(), 400, "bad_sdp"),
        (
            sdp.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            String::from_utf8(obs_offer()).unwrap().replace("H264/90000", "VP8/90000").into_bytes(),
            406,
            "unsupported_codecs",
        ),
    ];
    for (headers, body, status, code) in cases {
        let r = post(headers, body).await;
        assert_eq!(r.status, status, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], code, "{}", r.text());
        assert!(r.json()["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    }

    // A show id no show can have (and no path outside the media directory).
    let odd = request(o.http, "POST", "/whip/..%2Fetc", &sdp, &obs_offer()).await;
    assert_eq!(odd.status, 404);
    assert_eq!(odd.json()["error"]["code"], "not_found");

    // The real thing: 201, Location, ETag, an ICE-lite answer with our candidate, and the
    // publisher's own payload types kept.
    let r = post(sdp.iter().map(|(k, v)| (*k, v.to_string())).collect(), obs_offer()).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/sdp"));
    let location = r.header("location").unwrap().to_string();
    assert!(location.starts_with("/whip/demo/"), "{location}");
    let session = location.trim_start_matches("/whip/demo/");
    assert_eq!(r.header("etag"), Some(format!("\"{session}\"").as_str()));
    let answer = r.text();
    assert!(answer.contains("a=ice-lite"), "{answer}");
    let udp = o.origin.udp_addr();
    assert!(answer.contains(&format!("{} {} typ host", udp.ip(), udp.port())), "{answer}");
    assert!(answer.contains("a=rtpmap:102 H264/90000"), "{answer}");
    assert!(answer.contains("a=rtpmap:109 opus/48000/2"), "{answer}");
    assert!(answer.contains("a=recvonly"), "{answer}");

    // A second publisher on a live show is refused, not a takeover.
    let again = post(sdp.iter().map(|(k, v)| (*k, v.to_string())).collect(), obs_offer()).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.json()["error"]["code"], "show_live");

    // Trickle is not needed with ICE-lite and a complete answer: 405.
    let patch = request(o.http, "PATCH", &location, &sdp, b"a=end-of-candidates\r\n").await;
    assert_eq!(patch.status, 405);
    assert_eq!(patch.json()["error"]["code"], "trickle_not_supported");

    // At capacity: 503 with Retry-After.
    let key2 = format!("Bearer {}", o.origin.stream_key("second"));
    let h2 = [("Content-Type", "application/sdp"), ("Authorization", key2.as_str())];
    assert_eq!(request(o.http, "POST", "/whip/second", &h2, &obs_offer()).await.status, 201);
    let key3 = format!("Bearer {}", o.origin.stream_key("third"));
    let h3 = [("Content-Type", "application/sdp"), ("Authorization", key3.as_str())];
    let full = request(o.http, "POST", "/whip/third", &h3, &obs_offer()).await;
    assert_eq!(full.status, 503);
    assert_eq!(full.json()["error"]["code"], "at_capacity");
    assert!(full.header("retry-after").is_some_and(|s| s.parse::<u32>().is_ok()));

    // DELETE needs the key, finds only real sessions, and frees the show for a new publish.
    let h_auth = [("Authorization", auth.as_str())];
    assert_eq!(request(o.http, "DELETE", &location, &[], b"").await.status, 401);
    assert_eq!(request(o.http, "DELETE", "/whip/demo/0000", &h_auth, b"").await.status, 404);
    assert_eq!(request(o.http, "DELETE", &location, &h_auth, b"").await.status, 200);
    assert_eq!(request(o.http, "DELETE", &location, &h_auth, b"").await.status, 404);
    let back = post(sdp.iter().map(|(k, v)| (*k, v.to_string())).collect(), obs_offer()).await;
    assert_eq!(back.status, 201, "{}", back.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_show_that_never_went_live_has_no_playlist() {
    let o = TestOrigin::start("whip-nothing", |_| {}).await;
    let r = o.get("/hls/demo/live.m3u8").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "not_found");
    // Nothing escapes the media directory.
    // Nothing outside the media directory is served: a playlist beside it stays private.
    let beside = o.media.with_extension("beside");
    std::fs::create_dir_all(&beside).unwrap();
    std::fs::write(beside.join("live.m3u8"), "#EXTM3U\n").unwrap();
    let name = beside.file_name().unwrap().to_str().unwrap().to_string();
    assert_eq!(o.get(&format!("/hls/..%2F{name}/live.m3u8")).await.status, 404);
    assert_eq!(o.get(&format!("/hls/demo/..%2F..%2F{name}%2Flive.m3u8")).await.status, 404);
    std::fs::remove_dir_all(&beside).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_or_oversized_offer_is_refused_in_words_as_json_never_with_memory_addresses() {
    let o = TestOrigin::start("whip-refusals", |_| {}).await;
    let auth = format!("Bearer {}", o.origin.stream_key("demo"));
    let sdp = [("Content-Type", "application/sdp"), ("Authorization", auth.as_str())];
    for garbage in
        [&b"this is not SDP"[..], b"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n\x01\x02 junk\r\n", b"v=0\r\n"]
    {
        let r = request(o.http, "POST", "/whip/demo", &sdp, garbage).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(r.json()["error"]["code"], "bad_sdp", "{}", r.text());
        let message = r.json()["error"]["message"].as_str().unwrap().to_string();
        assert!(message.starts_with("the offer is not valid SDP"), "{message}");
        assert!(!message.contains("0x") && !message.contains("PointerOffset"), "{message}");
    }
    // Over the limit: the JSON error shape, not axum's plain text.
    let big = vec![b'a'; liveshop_media_origin::whip::MAX_OFFER_BYTES + 1024];
    let r = request(o.http, "POST", "/whip/demo", &sdp, &big).await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert!(
        r.header("content-type").is_some_and(|t| t.starts_with("application/json")),
        "{:?}",
        r.header("content-type")
    );
    assert_eq!(r.json()["error"]["code"], "payload_too_large");
}

/// axum's own refusals on the origin's routes (a method a route does not take, a path that is
/// not UTF-8) in the JSON error shape, as `liveshop dev` serves them (merged into the node's
/// router) and as `liveshop origin` does on a port of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origins_routes_refuse_in_the_json_error_shape_merged_and_standalone() {
    let (data, origin_data) = (media::temp_dir("refusals-node"), media::temp_dir("refusals-origin"));
    let (node, url, lines) = common::liveshop_dev(&data);
    std::thread::spawn(move || for _ in lines {});
    let secret = std::fs::read_to_string(data.join("secret")).unwrap();
    let mut origin = std::process::Command::new(env!("CARGO_BIN_EXE_liveshop"))
        .args(["origin", "--edge", &url, "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&origin_data)
        .env("LIVESHOP_SECRET", secret.trim())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(origin.stdout.take().unwrap());
    let origin = common::NodeProcess(origin);
    let mut first = String::new();
    std::io::BufRead::read_line(&mut out, &mut first).unwrap();
    let alone = first.split("listening on http://").nth(1).and_then(|r| r.split(',').next()).expect(&first);
    let node_addr = url.trim_start_matches("http://").parse().unwrap();

    for at in [node_addr, alone.parse().unwrap()] {
        let cases = [
            ("GET", "/whip/demo", 405, "method_not_allowed"),
            ("PUT", "/hls/demo/index.m3u8", 405, "method_not_allowed"),
            ("GET", "/hls/demo/%FF%FE.m3u8", 400, "invalid_argument"),
        ];
        for (method, path, status, code) in cases {
            let r = request(at, method, path, &[], b"").await;
            let body = r.json();
            assert_eq!((r.status, body["error"]["code"].as_str()), (status, Some(code)), "{at} {path}");
            assert!(r.header("content-type").is_some_and(|ct| ct.starts_with("application/json")));
            assert_eq!(r.header("x-content-type-options"), Some("nosniff"), "{at} {path}");
            if status == 405 {
                assert!(r.header("allow").is_some(), "{at} {method} {path}");
            }
        }
        // What the origin serves on success keeps its own type.
        let player = request(at, "GET", "/media/player.js", &[], b"").await;
        assert_eq!(player.status, 200);
        assert!(player.header("content-type").is_some_and(|ct| ct.starts_with("text/javascript")));
    }
    drop((origin, node));
    let _ = std::fs::remove_dir_all(&data);
    let _ = std::fs::remove_dir_all(&origin_data);
}

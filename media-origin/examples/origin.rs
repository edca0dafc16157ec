//! The origin on its own, without the edge node: for trying a publisher or a player against it.
//!
//! `cargo run -p liveshop-media-origin --example origin -- [HTTP addr] [UDP addr] [media dir]`
//! (defaults `127.0.0.1:8090`, `127.0.0.1:8189`, `/tmp/liveshop-media`). The secret is
//! `$LIVESHOP_SECRET`; the stream key of show `demo` is printed.

use std::sync::Arc;

use liveshop_media_origin::events::LogEvents;
use liveshop_media_origin::{Origin, OriginConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_target(false).init();
    let mut args = std::env::args().skip(1);
    let http = args.next().unwrap_or_else(|| "127.0.0.1:8090".into());
    let udp = args.next().unwrap_or_else(|| "127.0.0.1:8189".into());
    let dir = args.next().unwrap_or_else(|| "/tmp/liveshop-media".into());
    let secret =
        std::env::var("LIVESHOP_SECRET").unwrap_or_else(|_| "a local secret for trying things".into());
    let mut config = OriginConfig::new(dir.into());
    config.ingest.udp = udp.parse()?;
    let origin = Origin::start(config, secret.as_bytes(), Arc::new(LogEvents)).await?;
    let listener = tokio::net::TcpListener::bind(&http).await?;
    println!("WHIP  http://{http}/whip/demo   Bearer {}", origin.stream_key("demo"));
    println!("HLS   http://{http}/hls/demo/master.m3u8");
    axum::serve(listener, origin.router()).await?;
    Ok(())
}

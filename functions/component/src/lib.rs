//! The room and the shop as WASM components: thin shells that implement the `durable-actor`
//! world (`wit/actor.wit`) on top of the sans-IO cores in `liveshop-room` and `liveshop-shop`.
//! A build makes one of them: `--features room` or `--features shop` (`edge/build.rs` builds
//! both, each in its own `cargo` run).
//!
//! The host may drop an instance between any two events (hibernation) and create a fresh one.
//! So the live core sits in a per-instance static, rebuilt on an instance's first event from
//! everything in storage (plus, for a room, the connections the host still holds). Each export
//! then reads the clock, feeds one input to the core and drains its outputs into the host
//! imports; the host commits the writes before it releases anything else (the output gate), so
//! ordering here is free.

use liveshop_identity::{Identity, Role};

wit_bindgen::generate!({ path: "../../wit", world: "durable-actor" });

use liveshop::actor::env;
use liveshop::actor::types::{self, HttpResponse};

#[cfg(feature = "room")]
mod room;
#[cfg(feature = "shop")]
mod shop;

// Exported only when built as a component for one actor: WIT export names
// (`liveshop:actor/...`) are not symbols a native linker accepts, and natively this crate is
// only compiled for lints.
#[cfg(all(target_arch = "wasm32", feature = "room", feature = "shop"))]
compile_error!("build the component with exactly one of the features `room` and `shop`");
#[cfg(all(target_arch = "wasm32", feature = "room", not(feature = "shop")))]
use room::RoomActor as Actor;
#[cfg(all(target_arch = "wasm32", feature = "shop", not(feature = "room")))]
use shop::ShopActor as Actor;
#[cfg(target_arch = "wasm32")]
export!(Actor);

/// A new epoch for a core with no stored one: 53 random bits, so JavaScript clients hold it
/// exactly (their numbers are doubles).
fn new_epoch() -> u64 {
    let random: [u8; 8] = env::random(8).try_into().expect("the host returns the bytes asked for");
    u64::from_le_bytes(random) >> 11
}

fn reply(status: u16, content_type: &str, body: Vec<u8>) -> HttpResponse {
    HttpResponse { status, headers: vec![("content-type".into(), content_type.into())], body }
}

fn identity(who: types::Identity) -> Identity {
    let role = match who.role {
        types::Role::Viewer => Role::Viewer,
        types::Role::Moderator => Role::Moderator,
        types::Role::Host => Role::Host,
        types::Role::Merchant => Role::Merchant,
    };
    Identity { subject: who.subject, role, name: who.name, device: who.device }
}

//! The shop actor: `liveshop-shop` behind the `durable-actor` exports. Payments and webhooks
//! leave through the `effects` import; their results come back through `on-effect-result`.
//! Connections are live clients of the shop (product cards): they get the catalog's prices,
//! stock and deals, then every change; they send nothing.

use std::cell::RefCell;

use liveshop_shop::{Epoch, Input, Millis, Output, Shop, Write};

use crate::exports::liveshop::actor::actor::Guest;
use crate::liveshop::actor::types::{self, HttpRequest, HttpResponse};
use crate::liveshop::actor::{alarm, connections, effects, env, storage};
use crate::{identity, new_epoch, reply};

/// Close code for a message on the read-only live feed (the WebSocket "unsupported data").
const CLOSE_READ_ONLY: u16 = 1003;

thread_local! {
    /// `None` until the first event of this instance; see the crate docs.
    static SHOP: RefCell<Option<Shop>> = const { RefCell::new(None) };
}

#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
pub(crate) struct ShopActor;

impl Guest for ShopActor {
    fn on_connect(conn: u64, _who: types::Identity, _resume_from: Option<(u64, u64)>) {
        with_shop(|shop, now| connections::send(conn, &shop.live_snapshot(now)));
    }

    fn on_message(conn: u64, _text: String) {
        connections::close(conn, CLOSE_READ_ONLY, "the shop's live feed takes no messages: use its HTTP API");
    }

    fn on_close(_conn: u64) {}

    fn on_request(req: HttpRequest) -> HttpResponse {
        let input = Input::Request {
            who: req.who.map(identity),
            method: req.method,
            path: req.path,
            headers: req.headers,
            body: req.body,
        };
        // The core answers every request; this is only a guard against a core bug.
        run(|_| Some(input))
            .unwrap_or_else(|| reply(500, "text/plain", b"the shop produced no reply".to_vec()))
    }

    fn on_alarm() {
        run(|_| Some(Input::Alarm));
    }

    fn on_effect_result(kind: String, body: String) {
        // A result the host garbled cannot be applied; the shop asks again when it times out.
        run(|_| Input::from_effect_result(&kind, &body).ok());
    }
}

/// Runs `f` on the live shop (reviving it first if this instance has none) at the host's `now`,
/// then forwards whatever the shop queued.
fn with_shop<R>(f: impl FnOnce(&mut Shop, Millis) -> R) -> (R, Option<HttpResponse>) {
    SHOP.with_borrow_mut(|slot| {
        let shop = slot.get_or_insert_with(revive);
        let now = env::now();
        let r = f(shop, now);
        (r, drain(shop))
    })
}

/// Feeds one input, made at the host's `now`, to the shop; returns the reply, if any.
fn run(input: impl FnOnce(Millis) -> Option<Input>) -> Option<HttpResponse> {
    with_shop(|shop, now| {
        if let Some(input) = input(now) {
            shop.handle(now, input);
        }
    })
    .1
}

fn drain(shop: &mut Shop) -> Option<HttpResponse> {
    let mut answer = None;
    while let Some(output) = shop.poll_output() {
        if let Some((kind, body)) = output.as_effect() {
            effects::request(kind, &body);
            continue;
        }
        match output {
            Output::Store(Write::Put { key, value }) => storage::put(&key, &value),
            Output::Store(Write::Delete { key }) => storage::delete(&key),
            Output::SetAlarm(Some(at)) => alarm::set(at),
            Output::SetAlarm(None) => alarm::clear(),
            Output::Reply { status, content_type, body } => answer = Some(reply(status, content_type, body)),
            Output::Broadcast { frame } => connections::broadcast(&frame),
            Output::Payment(_) | Output::Deliver(_) => unreachable!("effects are forwarded above"),
        }
    }
    answer
}

/// Rebuilds the shop from storage. A host may have lost the charges of the event before a crash
/// (they leave after the commit): they are asked for again, under the same idempotency keys.
fn revive() -> Shop {
    let shop = match Shop::restore(storage::list(""), Epoch(new_epoch())) {
        Ok(shop) => shop,
        // Trap rather than start an empty shop over one we cannot read; see the room's revive.
        Err(e) => panic!("cannot restore shop {}: {e}", env::actor_id()),
    };
    for req in shop.pending_payments() {
        let (kind, body) = Output::Payment(req).as_effect().expect("a payment is an effect");
        effects::request(kind, &body);
    }
    shop
}

//! The shop as clients see it: catalog entries with live availability and deals, carts with
//! their current quote. Orders, endpoints and deliveries are shown as stored.

use liveshop_identity::Identity;
use serde_json::{Value, json};

use crate::cart::{Cart, QuoteError, quote};
use crate::catalog::{Product, Variant};
use crate::deals::FlashDeal;
use crate::ids::{Millis, Sku};
use crate::money::Money;
use crate::state::ShopState;

pub fn product(state: &ShopState, p: &Product, buyer: Option<&Identity>, now: Millis) -> Value {
    let variants: Vec<Value> = p
        .skus
        .iter()
        .filter_map(|s| state.variants.get(s))
        .filter(|v| v.sellable())
        .map(|v| variant(state, v, buyer, now))
        .collect();
    json!({
        "id": p.id,
        "title": p.title,
        "description": p.description,
        "images": p.images,
        "variants": variants,
    })
}

pub fn variant(state: &ShopState, v: &Variant, buyer: Option<&Identity>, now: Millis) -> Value {
    let mut out = json!({
        "sku": v.sku,
        "title": v.title,
        "options": v.options,
        "price": v.price,
        "offered_price": offered_price(state, buyer, &v.sku, now, false),
        "available": v.available(),
        "sold_out": v.available() == 0,
    });
    if let Some(max) = v.max_per_buyer {
        out["max_per_buyer"] = json!(max);
    }
    if let Some(tax) = v.tax_rate {
        out["tax_rate"] = json!(tax);
    }
    if let Some(d) = state.deals.values().find(|d| d.sku == v.sku && !d.ended && now < d.ends_at) {
        out["deal"] = deal(state, d, now);
    }
    // What the show's replay page sells it at, while a deal is kept on for replays.
    if state.deal_for(&v.sku, now, true).is_some_and(|d| d.is_replay_price(now)) {
        out["replay_price"] = json!(offered_price(state, buyer, &v.sku, now, true));
    }
    out
}

/// The unit price this buyer gets for one more unit of `sku` now: the deal price while the
/// deal runs (or, on a `replay`'s cart, while one is kept on for replays) and has units left for
/// them (and their guest device), otherwise the regular price.
pub fn offered_price(
    state: &ShopState,
    buyer: Option<&Identity>,
    sku: &Sku,
    now: Millis,
    replay: bool,
) -> Option<Money> {
    let v = state.variants.get(sku)?;
    let deal = state.deal_for(sku, now, replay).filter(|d| {
        d.remaining() > 0
            && buyer.is_none_or(|b| {
                state.buyer_deal_units(&b.subject, b.device.as_deref(), d.id) < d.per_buyer_cap
            })
    });
    match deal {
        Some(d) => d.discount.apply(v.price).ok(),
        None => Some(v.price),
    }
}

/// A deal with what the room shows: the countdown's end, the deal price, and the Omnibus "was"
/// price (fixed at the start; projected before it).
pub fn deal(state: &ShopState, d: &FlashDeal, now: Millis) -> Value {
    let v = state.variants.get(&d.sku);
    let regular = v.map(|v| v.price);
    let was = d.started.map(|s| s.was).or_else(|| {
        let others =
            state.deals.values().filter(|o| o.sku == d.sku && o.id != d.id).filter_map(|o| o.promotion());
        v.map(|v| v.omnibus_price(d.starts_at, others))
    });
    json!({
        "id": d.id,
        "sku": d.sku,
        "starts_at": d.starts_at,
        "ends_at": d.ends_at,
        "active": d.is_active(now),
        "ended": d.ended,
        "discount": d.discount,
        "regular_price": regular,
        "price": regular.and_then(|p| d.discount.apply(p).ok()),
        "was": was,
        "quantity_cap": d.quantity_cap,
        "remaining": d.remaining(),
        "per_buyer_cap": d.per_buyer_cap,
        "verified_buyers_only": d.verified_buyers_only,
        "replay_until": d.replay_until,
    })
}

/// A buyer's cart, priced now (for their guest `device`, when they look themselves). Lines whose
/// SKU is no longer sold are listed apart, unpriced.
pub fn cart(state: &ShopState, buyer: &str, device: Option<&str>, now: Millis) -> Result<Value, QuoteError> {
    let empty = Cart::default();
    let cart = state.carts.get(buyer).unwrap_or(&empty);
    let (lines, unavailable): (Vec<_>, Vec<_>) =
        cart.lines.iter().partition(|(sku, _)| state.variants.get(*sku).is_some_and(|v| v.sellable()));
    let lines = lines.into_iter().map(|(s, q)| (s.clone(), *q)).collect();
    let q = quote(state, buyer, device, &lines, cart, now)?;
    let unavailable: Vec<&Sku> = unavailable.into_iter().map(|(s, _)| s).collect();
    Ok(json!({
        "buyer": buyer,
        "now": now,
        "quote": q,
        "coupon": cart.coupon,
        "unavailable": unavailable,
    }))
}

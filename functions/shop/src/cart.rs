//! Carts and the one function that prices them, [`quote`].
//!
//! A cart holds SKUs and quantities, never prices: every price a buyer sees or pays is computed
//! here from the catalog, the deals running now and the buyer's own history. Pricing, in order:
//!
//! 1. Each cart line becomes one or two priced lines: the units a running flash deal still has
//!    for this buyer at the deal price, the rest at the regular price.
//! 2. A coupon's discount is computed once on the subtotal (rounded by the money rule) and
//!    split over the lines by largest remainder, in proportion to their subtotals.
//! 3. Tax is computed once per rate on the discounted amounts of the lines at that rate, and
//!    split over those lines the same way; it is part of the price when prices include tax and
//!    added on top when they do not.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::deals::Discount;
use crate::ids::{CouponCode, Millis, Sku};
use crate::money::{Currency, Money, MoneyError, allocate};
use crate::orders::OrderLine;
use crate::state::ShopState;

/// Most distinct SKUs in one cart.
pub const MAX_CART_LINES: usize = 50;
/// Most units of one SKU in one cart line; more is a typo or an attack, not a purchase.
pub const MAX_QUANTITY: u32 = 999;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cart {
    pub lines: BTreeMap<Sku, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<CouponCode>,
    /// Last filled on a show's replay ([`crate::state::ShopState::deal_for`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replay: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    pub code: CouponCode,
    pub discount: Discount,
    pub active: bool,
}

/// A priced cart: what the buyer sees, and what an order is created from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    pub currency: Currency,
    pub lines: Vec<OrderLine>,
    pub subtotal: Money,
    pub discount: Money,
    pub tax: Money,
    pub total: Money,
    pub prices_include_tax: bool,
    /// The coupon applied, if the cart names one that is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<(CouponCode, Discount)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("no such SKU {0}")]
    UnknownSku(Sku),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Prices `cart`'s `lines` for `buyer` at `now`. Pure: the same state, cart and time give the
/// same quote.
pub fn quote(
    state: &ShopState,
    buyer: &str,
    device: Option<&str>,
    lines: &BTreeMap<Sku, u32>,
    cart: &Cart,
    now: Millis,
) -> Result<Quote, QuoteError> {
    let coupon = cart.coupon.as_ref();
    let currency = state.settings.currency;
    let zero = Money::zero(currency);
    let mut out: Vec<OrderLine> = Vec::new();
    let mut rates: Vec<Decimal> = Vec::new();
    for (sku, &qty) in lines {
        let v = state
            .variants
            .get(sku)
            .filter(|v| v.sellable())
            .ok_or_else(|| QuoteError::UnknownSku(sku.clone()))?;
        zero.same_currency(v.price)?;
        let title = match state.products.get(&v.product) {
            Some(p) if !v.title.is_empty() => format!("{} ({})", p.title, v.title),
            Some(p) => p.title.clone(),
            None => v.title.clone(),
        };
        let rate = v.tax_rate.unwrap_or(state.settings.default_tax_rate);
        let mut line = |quantity: u32, unit_price: Money, deal| -> Result<(), QuoteError> {
            let subtotal = unit_price.checked_mul(i64::from(quantity))?;
            out.push(OrderLine {
                sku: sku.clone(),
                title: title.clone(),
                quantity,
                unit_price,
                regular_unit_price: v.price,
                deal,
                subtotal,
                discount: zero,
                tax: zero,
                total: subtotal,
            });
            rates.push(rate);
            Ok(())
        };
        let mut regular = qty;
        if let Some(d) = state.deal_for(sku, now, cart.replay) {
            let used = state.buyer_deal_units(buyer, device, d.id);
            let units = qty.min(d.per_buyer_cap.saturating_sub(used)).min(d.remaining());
            if units > 0 {
                line(units, d.discount.apply(v.price)?, Some(d.id))?;
                regular -= units;
            }
        }
        if regular > 0 {
            line(regular, v.price, None)?;
        }
    }
    let subtotal = Money::sum(currency, out.iter().map(|l| l.subtotal))?;
    let coupon =
        coupon.and_then(|c| state.coupons.get(c)).filter(|c| c.active).map(|c| (c.code.clone(), c.discount));
    if let Some((_, discount)) = &coupon {
        let off = discount.off(subtotal)?;
        let weights: Vec<Money> = out.iter().map(|l| l.subtotal).collect();
        for (l, part) in out.iter_mut().zip(allocate(off, &weights)?) {
            l.discount = part;
        }
    }
    let inclusive = state.settings.prices_include_tax;
    let mut by_rate: BTreeMap<Decimal, Vec<usize>> = BTreeMap::new();
    for (i, r) in rates.iter().enumerate() {
        by_rate.entry(*r).or_default().push(i);
    }
    for (rate, idx) in by_rate.into_iter().filter(|(r, _)| !r.is_zero()) {
        let nets = idx
            .iter()
            .map(|&i| out[i].subtotal.checked_sub(out[i].discount))
            .collect::<Result<Vec<_>, _>>()?;
        let net = Money::sum(currency, nets.iter().copied())?;
        let tax = if inclusive { net.included_tax(rate)? } else { net.percent(rate)? };
        for (&i, part) in idx.iter().zip(allocate(tax, &nets)?) {
            out[i].tax = part;
        }
    }
    for l in &mut out {
        l.total = l.subtotal.checked_sub(l.discount)?;
        if !inclusive {
            l.total = l.total.checked_add(l.tax)?;
        }
    }
    Ok(Quote {
        currency,
        subtotal,
        discount: Money::sum(currency, out.iter().map(|l| l.discount))?,
        tax: Money::sum(currency, out.iter().map(|l| l.tax))?,
        total: Money::sum(currency, out.iter().map(|l| l.total))?,
        lines: out,
        prices_include_tax: inclusive,
        coupon,
    })
}

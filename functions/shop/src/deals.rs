//! Flash deals and discounts.
//!
//! A flash deal takes a percentage or a fixed amount off one SKU for a time window, for at most
//! `quantity_cap` units in all and `per_buyer_cap` units per buyer. Units beyond either cap are
//! sold at the regular price (a cart line is split in two), so a cap is never exceeded and
//! nobody is refused a sale the stock allows. The room shows the countdown from `ends_at`; the
//! "was" price it shows is the Omnibus prior price ([`crate::catalog::Variant::omnibus_price`]),
//! fixed when the deal starts.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{DAY, DealId, Millis, Sku};
use crate::money::{Money, MoneyError};

/// Longest flash deal.
pub const MAX_DEAL_MS: Millis = 7 * DAY;

/// A reduction: `{"percent": "30"}` (a decimal string, 0 < p <= 100) or
/// `{"amount": {"minor": 500, "currency": "EUR"}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Discount {
    Percent(Decimal),
    Amount(Money),
}

impl Discount {
    /// What this discount takes off `amount`: never more than `amount`, never negative.
    pub fn off(&self, amount: Money) -> Result<Money, MoneyError> {
        let off = match self {
            Discount::Percent(p) => amount.percent(*p)?,
            Discount::Amount(a) => {
                amount.same_currency(*a)?;
                *a
            }
        };
        Ok(Money { minor: off.minor.clamp(0, amount.minor.max(0)), ..amount })
    }

    /// `price` after this discount.
    pub fn apply(&self, price: Money) -> Result<Money, MoneyError> {
        price.checked_sub(self.off(price)?)
    }
}

/// Fixed when the deal starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealStart {
    /// The Omnibus prior price: the lowest price of the 30 days before the start.
    pub was: Money,
    /// The deal price at the start (it follows the regular price if that changes).
    pub price: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlashDeal {
    pub id: DealId,
    pub sku: Sku,
    pub starts_at: Millis,
    /// The planned end, or the actual one once a merchant ended the deal early.
    pub ends_at: Millis,
    pub discount: Discount,
    pub quantity_cap: u32,
    pub per_buyer_cap: u32,
    /// Guests (tokens from `POST /guest`) may not put the deal's SKU in a cart or check it out
    /// while the deal runs: a flash sale's stock goes to buyers the platform knows.
    #[serde(default)]
    pub verified_buyers_only: bool,
    /// Units at the deal price in open and committed orders.
    pub taken: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<DealStart>,
    pub ended: bool,
    /// The show it was made for (on a show's route), whose report marks its start and end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub show: Option<String>,
    /// The merchant keeps the deal price on for the show's replay until then: carts filled on
    /// the replay page get it after the live deal ended, within the same caps. An early end
    /// takes it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_until: Option<Millis>,
}

impl FlashDeal {
    pub fn is_active(&self, now: Millis) -> bool {
        !self.ended && self.starts_at <= now && now < self.ends_at
    }

    /// Whether a replay's cart gets the deal price at `now`: the live deal ran and ended, and
    /// the merchant keeps it on for replays until later.
    pub fn is_replay_price(&self, now: Millis) -> bool {
        self.started.is_some() && self.ends_at <= now && self.replay_until.is_some_and(|until| now < until)
    }

    pub fn remaining(&self) -> u32 {
        self.quantity_cap.saturating_sub(self.taken)
    }

    /// The window and price this deal applied, for the Omnibus price of later deals.
    pub fn promotion(&self) -> Option<(Millis, Millis, Money)> {
        self.started.map(|s| (self.starts_at, self.ends_at, s.price))
    }

    /// Whether this deal's window overlaps `[from, until)`.
    pub fn overlaps(&self, from: Millis, until: Millis) -> bool {
        !self.ended && self.starts_at < until && from < self.ends_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    #[test]
    fn a_discount_never_takes_more_than_the_price() {
        let eur = |m| Money::new(m, Currency::Eur);
        assert_eq!(Discount::Percent("30".parse().unwrap()).apply(eur(1999)), Ok(eur(1399))); // 599.7 -> 600 off
        assert_eq!(Discount::Amount(eur(500)).apply(eur(1999)), Ok(eur(1499)));
        assert_eq!(Discount::Amount(eur(5000)).apply(eur(1999)), Ok(eur(0)));
        let yen = Discount::Amount(Money::new(5, Currency::Jpy));
        assert!(matches!(yen.apply(eur(100)), Err(MoneyError::CurrencyMismatch { .. })));
    }
}

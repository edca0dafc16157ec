//! The catalog: products, their variants (one [`Sku`] each) with price, stock and price history.
//!
//! Stock per SKU is two counters: `on_hand`, the units the merchant has and has not sold (the
//! merchant sets it; a committed order takes from it), and `reserved`, the units held for
//! checkouts not yet paid. What a buyer can still get is `on_hand - reserved`.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::ids::{DAY, Millis, ProductId, Sku};
use crate::money::Money;

/// How far back the "was" price of a reduction looks (EU Omnibus directive, 2019/2161 art. 2:
/// the prior price is the lowest applied in at least the 30 days before the reduction).
pub const OMNIBUS_WINDOW_MS: Millis = 30 * DAY;
/// Price history older than this is dropped (twice the window, so a deal that starts a little
/// after a price change still sees the whole window).
pub const PRICE_HISTORY_MS: Millis = 2 * OMNIBUS_WINDOW_MS;

/// Limits on what a merchant can put in the catalog.
pub mod limits {
    pub const MAX_TITLE_CHARS: usize = 200;
    pub const MAX_DESCRIPTION_CHARS: usize = 5_000;
    pub const MAX_IMAGES: usize = 10;
    pub const MAX_URL_BYTES: usize = 2_048;
    pub const MAX_VARIANTS: usize = 100;
    pub const MAX_OPTIONS: usize = 5;
    pub const MAX_OPTION_CHARS: usize = 50;
    /// Most units of one SKU the shop tracks; more is a typo, not a warehouse.
    pub const MAX_STOCK: u32 = 1_000_000_000;
}

/// A product as the merchant defines it: what `PUT /products/{id}` and the `product.upsert`
/// inbound update carry once validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductDef {
    pub id: ProductId,
    pub title: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<String>,
    pub variants: Vec<VariantDef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantDef {
    pub sku: Sku,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// Option name to value, e.g. `{"size": "M", "colour": "blue"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    pub price: Money,
    /// Percent; the shop's default rate when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_rate: Option<Decimal>,
    /// Most units one buyer may hold in open and paid orders together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_per_buyer: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Product {
    pub id: ProductId,
    pub title: String,
    pub description: String,
    pub images: Vec<String>,
    /// Variant order as the merchant gave it.
    pub skus: Vec<Sku>,
    pub archived: bool,
}

/// A regular price in effect from `from` until the next point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PricePoint {
    pub from: Millis,
    pub price: Money,
}

/// Where a SKU's available stock stands, so `inventory.low` and `inventory.sold_out` are sent
/// once per crossing rather than on every sale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockAlert {
    InStock,
    Low,
    SoldOut,
}

impl StockAlert {
    pub fn of(available: u32, low_threshold: u32) -> StockAlert {
        match available {
            0 => StockAlert::SoldOut,
            a if a <= low_threshold => StockAlert::Low,
            _ => StockAlert::InStock,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variant {
    pub sku: Sku,
    pub product: ProductId,
    pub title: String,
    pub options: BTreeMap<String, String>,
    /// The regular price now.
    pub price: Money,
    pub tax_rate: Option<Decimal>,
    pub max_per_buyer: Option<u32>,
    pub on_hand: u32,
    pub reserved: u32,
    /// Regular prices with when each took effect, oldest first.
    pub prices: Vec<PricePoint>,
    pub alert: StockAlert,
    pub archived: bool,
}

impl Variant {
    pub(crate) fn new(product: ProductId, def: &VariantDef, at: Millis) -> Variant {
        Variant {
            sku: def.sku.clone(),
            product,
            title: def.title.clone(),
            options: def.options.clone(),
            price: def.price,
            tax_rate: def.tax_rate,
            max_per_buyer: def.max_per_buyer,
            on_hand: 0,
            reserved: 0,
            prices: vec![PricePoint { from: at, price: def.price }],
            alert: StockAlert::SoldOut,
            archived: false,
        }
    }

    /// Units a buyer can still reserve.
    pub fn available(&self) -> u32 {
        self.on_hand.saturating_sub(self.reserved)
    }

    pub fn sellable(&self) -> bool {
        !self.archived
    }

    /// Changes the regular price, recording it in the history (a price change is an event with a
    /// timestamp, so the history replays exactly).
    pub(crate) fn set_price(&mut self, at: Millis, price: Money) {
        if price == self.price {
            return;
        }
        self.price = price;
        self.prices.push(PricePoint { from: at, price });
        // Keep everything from the cutoff on, plus the one point in effect at the cutoff.
        let cutoff = at.saturating_sub(PRICE_HISTORY_MS);
        let first_kept = self.prices.iter().rposition(|p| p.from <= cutoff).unwrap_or(0);
        self.prices.drain(..first_kept);
    }

    /// The lowest price applied in the [`OMNIBUS_WINDOW_MS`] before `start`: the regular prices
    /// in effect at any moment of `[start - 30 days, start)`, and `promotions` (other deals on
    /// this SKU, as `(from, until, price)`) that overlapped that window. A SKU that is younger
    /// than the window counts only its own life; one created at `start` has its current price.
    pub fn omnibus_price(
        &self,
        start: Millis,
        promotions: impl Iterator<Item = (Millis, Millis, Money)>,
    ) -> Money {
        let window = start.saturating_sub(OMNIBUS_WINDOW_MS);
        let regular = self.prices.iter().enumerate().filter_map(|(i, p)| {
            let until = self.prices.get(i + 1).map_or(Millis::MAX, |n| n.from);
            (p.from < start && until > window).then_some(p.price)
        });
        let promo = promotions.filter(|(from, until, _)| *from < start && *until > window).map(|(_, _, p)| p);
        regular
            .chain(promo)
            .filter(|p| p.currency == self.price.currency)
            .min_by_key(|p| p.minor)
            .unwrap_or(self.price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::DAY;
    use crate::money::Currency;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::Eur)
    }

    fn variant(at: Millis, price: i64) -> Variant {
        let def = VariantDef {
            sku: Sku::parse("S").unwrap(),
            title: String::new(),
            options: BTreeMap::new(),
            price: eur(price),
            tax_rate: None,
            max_per_buyer: None,
        };
        Variant::new(ProductId::parse("P").unwrap(), &def, at)
    }

    #[test]
    fn the_was_price_is_the_lowest_of_the_thirty_days_before_the_reduction() {
        let mut v = variant(0, 5000);
        v.set_price(10 * DAY, eur(3000)); // low for a while ...
        v.set_price(50 * DAY, eur(4000));
        v.set_price(69 * DAY, eur(6000)); // ... then raised just before the sale
        // A sale on day 70 looks back to day 40: 3000 was still in effect until day 50.
        assert_eq!(v.omnibus_price(70 * DAY, std::iter::empty()), eur(3000));
        // A sale on day 81 looks back to day 51: only 4000 and 6000 were applied.
        assert_eq!(v.omnibus_price(81 * DAY, std::iter::empty()), eur(4000));
        // An earlier flash deal in the window counts too.
        let promo = [(75 * DAY, 75 * DAY + 600_000, eur(2500))];
        assert_eq!(v.omnibus_price(81 * DAY, promo.into_iter()), eur(2500));
        // A deal that ended before the window does not.
        let old = [(20 * DAY, 21 * DAY, eur(100))];
        assert_eq!(v.omnibus_price(81 * DAY, old.into_iter()), eur(4000));
    }

    #[test]
    fn a_new_product_has_its_own_price_as_the_was_price() {
        let v = variant(100 * DAY, 5000);
        assert_eq!(v.omnibus_price(100 * DAY, std::iter::empty()), eur(5000));
        assert_eq!(v.omnibus_price(101 * DAY, std::iter::empty()), eur(5000));
    }

    #[test]
    fn price_history_is_pruned_but_keeps_the_point_in_effect_at_the_cutoff() {
        let mut v = variant(0, 100);
        for d in 1..200 {
            v.set_price(d * DAY, eur(100 + i64::try_from(d).unwrap()));
        }
        assert!(v.prices.len() <= 62, "{}", v.prices.len());
        assert!(v.prices[0].from <= 199 * DAY - PRICE_HISTORY_MS);
    }
}

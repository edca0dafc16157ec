//! The sales side of a show's measures, kept by the shop per show: add-to-carts, checkouts,
//! paid orders, units and revenue per product, per 10-second slot of wall-clock time (the
//! room's slots, so both sides join on the clock), plus the show's buyers, GMV and refunds.
//!
//! A request reaches the shop through a show's route (`/v1/shows/{show}/shop/...`) with the
//! show named by its host (the [`SHOW_HEADER`]); carts, orders and deals made there carry it, and
//! what happens to them later (payment, refund, a deal's end) counts for that show. Everything is
//! counters per slot and product: the size grows with the show's length and catalog, never with
//! its traffic (buyers are kept by name, one per paid order at most).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::ids::{DealId, Millis, ProductId};
use crate::money::{Currency, Money};
use crate::orders::Order;

/// The header a host sets on requests that came through a show's route; clients cannot send it.
pub const SHOW_HEADER: &str = "x-liveshop-show";
/// The grain of every series, as the room's (`liveshop_room::analytics::SLOT_MS`).
pub const SLOT_MS: Millis = 10_000;
/// Slots kept per show (a day); later activity adds to the last one, as in the room.
pub const MAX_SLOTS: usize = 8_640;

/// Deal starts and ends kept per show.
pub const MAX_DEAL_MOMENTS: usize = 500;

/// Amounts per currency, in minor units.
pub type Amounts = BTreeMap<Currency, i64>;

fn add(amounts: &mut Amounts, m: Money) {
    *amounts.entry(m.currency).or_default() += m.minor;
}

/// One product's sales in a slot (or in total).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sales {
    /// Times a buyer put (more of) it in a cart.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub add_to_carts: u64,
    /// Orders created with it (checkouts started).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub checkouts: u64,
    /// Orders with it whose payment settled.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub orders_paid: u64,
    /// Units paid for.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub units: u64,
    /// Its lines' totals in paid orders (after deal prices and coupons).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub revenue: Amounts,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A slot's sales: per product, and the paid orders' totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotSales {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub products: BTreeMap<ProductId, Sales>,
    /// Orders created (checkouts started), whatever they hold.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub checkouts: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub orders_paid: u64,
    /// What paid orders came to (GMV), per currency.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub gmv: Amounts,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub refunded: Amounts,
}

/// A deal's start or end during the show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DealMoment {
    pub at: Millis,
    pub deal_id: DealId,
    pub product_id: ProductId,
    pub started: bool,
}

/// Everything the shop measures about one show.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShowSales {
    /// By slot number (`at / SLOT_MS`).
    pub slots: BTreeMap<u64, SlotSales>,
    /// Buyers with at least one paid order.
    pub buyers: BTreeSet<String>,
    pub refunds: u64,
    pub deals: Vec<DealMoment>,
}

/// A show's sales in total.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesTotals {
    pub checkouts: u64,
    pub orders_paid: u64,
    pub units: u64,
    pub buyers: u64,
    pub refunds: u64,
    pub gmv: Vec<Money>,
    pub refunded: Vec<Money>,
}

/// Amounts as `Money`, one per currency, in currency order.
pub fn amounts(a: &Amounts) -> Vec<Money> {
    a.iter().map(|(&currency, &minor)| Money { minor, currency }).collect()
}

impl ShowSales {
    pub fn totals(&self) -> SalesTotals {
        let (mut gmv, mut refunded) = (Amounts::new(), Amounts::new());
        let (mut checkouts, mut orders_paid, mut units) = (0, 0, 0);
        for s in self.slots.values() {
            checkouts += s.checkouts;
            orders_paid += s.orders_paid;
            units += s.products.values().map(|p| p.units).sum::<u64>();
            for (&c, &m) in &s.gmv {
                *gmv.entry(c).or_default() += m;
            }
            for (&c, &m) in &s.refunded {
                *refunded.entry(c).or_default() += m;
            }
        }
        SalesTotals {
            checkouts,
            orders_paid,
            units,
            buyers: self.buyers.len() as u64,
            refunds: self.refunds,
            gmv: amounts(&gmv),
            refunded: amounts(&refunded),
        }
    }

    fn slot(&mut self, at: Millis) -> &mut SlotSales {
        let mut slot = at / SLOT_MS;
        if self.slots.len() >= MAX_SLOTS
            && !self.slots.contains_key(&slot)
            && let Some((&last, _)) = self.slots.last_key_value()
        {
            slot = last;
        }
        self.slots.entry(slot).or_default()
    }

    pub(crate) fn added_to_cart(&mut self, at: Millis, product: &ProductId) {
        self.slot(at).products.entry(product.clone()).or_default().add_to_carts += 1;
    }

    /// A checkout: every product on the order counts once.
    pub(crate) fn checkout(
        &mut self,
        order: &Order,
        product_of: impl Fn(&crate::ids::Sku) -> Option<ProductId>,
    ) {
        let products: BTreeSet<ProductId> =
            order.priced.lines.iter().filter_map(|l| product_of(&l.sku)).collect();
        let slot = self.slot(order.created_at);
        slot.checkouts += 1;
        for p in products {
            slot.products.entry(p).or_default().checkouts += 1;
        }
    }

    /// An order's payment settled at `at`.
    pub(crate) fn paid(
        &mut self,
        at: Millis,
        order: &Order,
        product_of: impl Fn(&crate::ids::Sku) -> Option<ProductId>,
    ) {
        self.buyers.insert(order.buyer.clone());
        let slot = self.slot(at);
        slot.orders_paid += 1;
        add(&mut slot.gmv, order.priced.total);
        let mut counted = BTreeSet::new();
        for line in &order.priced.lines {
            let Some(p) = product_of(&line.sku) else { continue };
            let sales = slot.products.entry(p.clone()).or_default();
            if counted.insert(p) {
                sales.orders_paid += 1;
            }
            sales.units += u64::from(line.quantity);
            add(&mut sales.revenue, line.total);
        }
    }

    pub(crate) fn refunded(&mut self, at: Millis, amount: Money) {
        self.refunds += 1;
        add(&mut self.slot(at).refunded, amount);
    }

    pub(crate) fn deal(&mut self, at: Millis, deal_id: DealId, product_id: ProductId, started: bool) {
        if self.deals.len() < MAX_DEAL_MOMENTS {
            self.deals.push(DealMoment { at, deal_id, product_id, started });
        }
    }
}

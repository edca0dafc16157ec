//! Request bodies and their validation. Bodies are decoded into these loose shapes (quantities
//! as any JSON number, currencies as strings) so that each way a value can be wrong gets its own
//! error code instead of a generic decoding error.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Number;

use crate::cart::MAX_QUANTITY;
use crate::catalog::{ProductDef, VariantDef, limits};
use crate::deals::Discount;
use crate::ids::{CouponCode, Millis, ProductId, Sku};
use crate::money::{Currency, MAX_AMOUNT, Money};
use crate::protocol::{ApiError, ErrorCode};
use crate::state::ShopState;

/// Decodes a JSON body; an empty body reads as `{}`. Syntax errors are `malformed_json`, a wrong
/// shape (missing or unknown fields, wrong types) `invalid_argument`.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| {
        use serde_json::error::Category;
        let code = match e.classify() {
            Category::Data => ErrorCode::InvalidArgument,
            Category::Syntax | Category::Eof | Category::Io => ErrorCode::MalformedJson,
        };
        ApiError::new(code, e.to_string())
    })
}

pub fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, msg)
}

/// An amount as a client sends it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoneyInput {
    pub minor: i64,
    pub currency: String,
}

impl MoneyInput {
    /// A non-negative amount in the shop's currency: `unknown_currency` for a code the shop does
    /// not know, `currency_mismatch` for another currency, `invalid_price` out of range.
    pub fn parse(&self, shop: Currency) -> Result<Money, ApiError> {
        let currency = Currency::parse(&self.currency)?;
        if currency != shop {
            return Err(ApiError::new(
                ErrorCode::CurrencyMismatch,
                format!("this shop prices in {shop}, not {currency}"),
            ));
        }
        if !(0..=MAX_AMOUNT).contains(&self.minor) {
            return Err(ApiError::new(
                ErrorCode::InvalidPrice,
                format!("amounts are 0 to {MAX_AMOUNT} minor units"),
            ));
        }
        Ok(Money::new(self.minor, currency))
    }
}

/// A quantity of 1 (or 0 when `zero_ok`) to [`MAX_QUANTITY`]; anything else, negative,
/// fractional or absurd, is `invalid_quantity`.
pub fn quantity(n: &Number, zero_ok: bool) -> Result<u32, ApiError> {
    let min = u64::from(!zero_ok);
    n.as_u64()
        .filter(|q| (min..=u64::from(MAX_QUANTITY)).contains(q))
        .and_then(|q| u32::try_from(q).ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidQuantity,
                format!("a quantity is a whole number from {min} to {MAX_QUANTITY}"),
            )
        })
}

pub fn stock(n: &Number) -> Result<u32, ApiError> {
    n.as_u64().filter(|s| *s <= u64::from(limits::MAX_STOCK)).and_then(|s| u32::try_from(s).ok()).ok_or_else(
        || {
            ApiError::new(
                ErrorCode::InvalidQuantity,
                format!("stock is a whole number from 0 to {}", limits::MAX_STOCK),
            )
        },
    )
}

pub fn stock_delta(n: &Number) -> Result<i64, ApiError> {
    let max = i64::from(limits::MAX_STOCK);
    n.as_i64().filter(|d| (-max..=max).contains(d)).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidQuantity,
            format!("a stock change is a whole number from -{max} to {max}"),
        )
    })
}

/// A SKU the shop sells now; any other is `unknown_sku`.
pub fn known_sku(state: &ShopState, s: &str) -> Result<Sku, ApiError> {
    Sku::parse(s)
        .filter(|sku| state.variants.get(sku).is_some_and(|v| v.sellable()))
        .ok_or_else(|| unknown_sku(s))
}

/// A SKU the shop has (or had) in its catalog, archived or not.
pub fn existing_sku(state: &ShopState, s: &str) -> Result<Sku, ApiError> {
    Sku::parse(s).filter(|sku| state.variants.contains_key(sku)).ok_or_else(|| unknown_sku(s))
}

fn unknown_sku(s: &str) -> ApiError {
    let shown: String = s.chars().take(64).collect();
    ApiError::new(ErrorCode::UnknownSku, format!("no such SKU {shown:?}")).with("sku", shown)
}

/// A percentage of a reduction: more than 0, at most 100, at most 4 decimals.
pub fn percent(p: Decimal) -> Result<Decimal, ApiError> {
    if p > Decimal::ZERO && p <= Decimal::ONE_HUNDRED && p.scale() <= 4 {
        Ok(p.normalize())
    } else {
        Err(invalid("a percentage is more than 0 and at most 100, with at most 4 decimals"))
    }
}

pub fn tax_rate(r: Decimal) -> Result<Decimal, ApiError> {
    if r >= Decimal::ZERO && r <= Decimal::ONE_HUNDRED && r.scale() <= 4 {
        Ok(r.normalize())
    } else {
        Err(invalid("a tax rate is a percentage from 0 to 100, with at most 4 decimals"))
    }
}

/// Trimmed text of 1 (or 0 when `empty_ok`) to `max` characters, without control characters
/// other than newlines.
pub fn text(s: &str, max: usize, what: &str, empty_ok: bool) -> Result<String, ApiError> {
    let t = s.trim();
    let ok = (empty_ok || !t.is_empty())
        && t.chars().count() <= max
        && !t.chars().any(|c| c.is_control() && c != '\n');
    if ok { Ok(t.to_string()) } else { Err(invalid(format!("{what} is 1 to {max} characters of text"))) }
}

/// An absolute `https://` (or, for development, `http://`) URL.
pub fn url(s: &str, what: &str) -> Result<String, ApiError> {
    let ok = (s.starts_with("https://") || s.starts_with("http://"))
        && s.len() > "https://".len()
        && s.len() <= limits::MAX_URL_BYTES
        && !s.chars().any(|c| c.is_whitespace() || c.is_control());
    if ok { Ok(s.to_string()) } else { Err(invalid(format!("{what} is an http(s) URL of at most 2 KiB"))) }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductInput {
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub images: Vec<String>,
    pub variants: Vec<VariantInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantInput {
    pub sku: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    pub price: MoneyInput,
    /// Sets the stock when given; leaves it as it is when absent.
    #[serde(default)]
    pub stock: Option<Number>,
    #[serde(default)]
    pub tax_rate: Option<Decimal>,
    #[serde(default)]
    pub max_per_buyer: Option<Number>,
}

impl ProductInput {
    /// The product definition, and the stock to set per SKU.
    pub fn validate(
        &self,
        state: &ShopState,
        id: &ProductId,
    ) -> Result<(ProductDef, Vec<(Sku, u32)>), ApiError> {
        let title = text(&self.title, limits::MAX_TITLE_CHARS, "title", false)?;
        let description = text(&self.description, limits::MAX_DESCRIPTION_CHARS, "description", true)?;
        if self.images.len() > limits::MAX_IMAGES {
            return Err(invalid(format!("at most {} images", limits::MAX_IMAGES)));
        }
        let images = self.images.iter().map(|u| url(u, "an image")).collect::<Result<Vec<_>, _>>()?;
        if self.variants.is_empty() || self.variants.len() > limits::MAX_VARIANTS {
            return Err(invalid(format!("a product has 1 to {} variants", limits::MAX_VARIANTS)));
        }
        let mut seen = BTreeSet::new();
        let mut variants = Vec::new();
        let mut stocks = Vec::new();
        for v in &self.variants {
            let sku =
                Sku::parse(&v.sku).ok_or_else(|| invalid("a SKU is 1 to 64 bytes of A-Z a-z 0-9 . _ -"))?;
            if !seen.insert(sku.clone()) {
                return Err(invalid(format!("SKU {sku} appears twice")));
            }
            if let Some(other) = state.variants.get(&sku).filter(|o| o.product != *id) {
                return Err(invalid(format!("SKU {sku} belongs to product {}", other.product)));
            }
            if v.options.len() > limits::MAX_OPTIONS {
                return Err(invalid(format!("at most {} options per variant", limits::MAX_OPTIONS)));
            }
            let mut options = BTreeMap::new();
            for (k, val) in &v.options {
                options.insert(
                    text(k, limits::MAX_OPTION_CHARS, "an option name", false)?,
                    text(val, limits::MAX_OPTION_CHARS, "an option value", false)?,
                );
            }
            let max_per_buyer = v.max_per_buyer.as_ref().map(|n| quantity(n, false)).transpose()?;
            variants.push(VariantDef {
                sku: sku.clone(),
                title: text(&v.title, limits::MAX_TITLE_CHARS, "a variant title", true)?,
                options,
                price: v.price.parse(state.settings.currency)?,
                tax_rate: v.tax_rate.map(tax_rate).transpose()?,
                max_per_buyer,
            });
            if let Some(n) = &v.stock {
                stocks.push((sku, stock(n)?));
            }
        }
        Ok((ProductDef { id: id.clone(), title, description, images, variants }, stocks))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockSetInput {
    pub on_hand: Number,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StockAdjustInput {
    pub delta: Number,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceInput {
    pub price: MoneyInput,
}

/// `{"percent": "30"}` or `{"amount": {"minor", "currency"}}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum DiscountInput {
    Percent(Decimal),
    Amount(MoneyInput),
}

impl DiscountInput {
    pub fn parse(&self, currency: Currency) -> Result<Discount, ApiError> {
        match self {
            DiscountInput::Percent(p) => Ok(Discount::Percent(percent(*p)?)),
            DiscountInput::Amount(m) => {
                let m = m.parse(currency)?;
                if m.is_zero() {
                    return Err(ApiError::new(
                        ErrorCode::InvalidPrice,
                        "a discount amount is more than zero",
                    ));
                }
                Ok(Discount::Amount(m))
            }
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DealInput {
    pub sku: String,
    /// Defaults to now; a time in the past means now.
    #[serde(default)]
    pub starts_at: Option<Millis>,
    /// Either this or `duration_secs`.
    #[serde(default)]
    pub ends_at: Option<Millis>,
    #[serde(default)]
    pub duration_secs: Option<u64>,
    pub discount: DiscountInput,
    pub quantity_cap: Number,
    pub per_buyer_cap: Number,
    /// Refuse guests (tokens from `POST /guest`) at this deal's price.
    #[serde(default)]
    pub verified_buyers_only: bool,
    /// Keep the deal price on for the show's replay this long after the deal ends (at most 7
    /// days).
    #[serde(default)]
    pub replay_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CartAddInput {
    pub sku: String,
    pub quantity: Number,
    /// The unit price the buyer was shown; refused with `price_mismatch` if it is not the price
    /// now. Never used to price anything.
    #[serde(default)]
    pub expected_unit_price: Option<MoneyInput>,
    /// Added on the show's replay page: deals kept on for replays price the cart.
    #[serde(default)]
    pub replay: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CartSetInput {
    pub quantity: Number,
    #[serde(default)]
    pub expected_unit_price: Option<MoneyInput>,
    #[serde(default)]
    pub replay: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponApplyInput {
    pub code: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutInput {
    /// The provider's payment token (in-stream checkout).
    #[serde(default)]
    pub payment_method: Option<String>,
    /// The total the buyer was shown; refused with `price_mismatch` if it is not the total now.
    #[serde(default)]
    pub expected_total: Option<MoneyInput>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonInput {
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundInput {
    /// Defaults to everything left to refund.
    #[serde(default)]
    pub amount: Option<MoneyInput>,
    #[serde(default)]
    pub reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsInput {
    #[serde(default)]
    pub currency: Option<String>,
    #[serde(default)]
    pub checkout: Option<crate::state::CheckoutMode>,
    #[serde(default)]
    pub handoff_url: Option<String>,
    #[serde(default)]
    pub reservation_ttl_secs: Option<u64>,
    #[serde(default)]
    pub low_stock_threshold: Option<u32>,
    #[serde(default)]
    pub prices_include_tax: Option<bool>,
    #[serde(default)]
    pub default_tax_rate: Option<Decimal>,
    #[serde(default)]
    pub capture: Option<crate::state::CaptureMode>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CouponInput {
    pub discount: DiscountInput,
    #[serde(default = "yes")]
    pub active: bool,
}

fn yes() -> bool {
    true
}

pub fn coupon_code(s: &str) -> Result<CouponCode, ApiError> {
    CouponCode::parse(s).ok_or_else(|| ApiError::new(ErrorCode::CouponInvalid, "no such coupon"))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointInput {
    pub url: String,
    pub secret_id: String,
    #[serde(default)]
    pub events: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointPatch {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub secret_id: Option<String>,
    #[serde(default)]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub enabled: Option<bool>,
}

pub fn event_types(events: &[String]) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if !crate::outbox::EVENT_TYPES.contains(&e.as_str()) {
            return Err(invalid(format!("unknown event type {:?}", e.chars().take(40).collect::<String>())));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

pub fn secret_id(s: &str) -> Result<String, ApiError> {
    let ok = s.starts_with("whsec_") && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    if ok { Ok(s.to_string()) } else { Err(invalid("secret_id names a whsec_ secret (at most 128 bytes)")) }
}

/// A merchant update, as forwarded by the host after it verified the merchant's signature.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundInput {
    /// The merchant system's event id; an id seen before is `duplicate_event`.
    pub event_id: String,
    pub update: InboundUpdate,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", deny_unknown_fields)]
pub enum InboundUpdate {
    #[serde(rename = "product.upsert")]
    ProductUpsert { product_id: String, product: ProductInput },
    #[serde(rename = "product.archive")]
    ProductArchive { product_id: String },
    #[serde(rename = "stock.set")]
    StockSet { sku: String, on_hand: Number },
    #[serde(rename = "stock.adjust")]
    StockAdjust { sku: String, delta: Number },
    #[serde(rename = "price.set")]
    PriceSet { sku: String, price: MoneyInput },
    /// A hand-off order was paid on the merchant's checkout.
    #[serde(rename = "order.paid")]
    OrderPaid { order_id: u64 },
}

pub fn event_id(s: &str) -> Result<String, ApiError> {
    let ok = !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
    if ok { Ok(s.to_string()) } else { Err(invalid("event_id is 1 to 128 bytes of visible ASCII")) }
}

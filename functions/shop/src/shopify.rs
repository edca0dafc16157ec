//! Shopify's product webhooks as the shop's own merchant updates (`POST /merchant/events`).
//!
//! The host verifies `X-Shopify-Hmac-Sha256` with the client secret of the merchant's
//! [`ShopifySettings`] (`liveshop_webhooks::shopify`), then hands the topic, the
//! `X-Shopify-Event-Id` and the body to [`merchant_event`]. The shop applies each event id once,
//! so Shopify's at-least-once retries are `duplicate_event`.
//!
//! | `X-Shopify-Topic`                      | update                                              |
//! |----------------------------------------|-----------------------------------------------------|
//! | `products/create`, `products/update`   | `product.upsert`: title, images, variants (SKU, title, price, stock) |
//! | `products/delete`                      | `product.archive`                                   |
//! | anything else                          | none: the host acknowledges it (Shopify retries anything else) |
//!
//! The product id is Shopify's product `id`, as a string: the one field every topic carries
//! (a delete carries nothing else) and never changes (a handle can be renamed). Shopify's prices are
//! decimal strings without a currency, so the settings name the store's currency and
//! [`Money::parse_major`] turns `"199.00"` into 19900 minor units exactly, refusing a price with
//! more decimals than the currency has. A negative `inventory_quantity` (oversold in Shopify) is 0.
//!
//! ```
//! use liveshop_shop::{Currency, shopify};
//! let product = br#"{"id": 632910392, "handle": "ipod-nano", "title": "IPod Nano",
//!     "variants": [{"sku": "IPOD-PINK", "price": "199.00", "inventory_quantity": 10}]}"#;
//! let event = shopify::merchant_event("products/update", "e-1", product, Currency::Eur).unwrap().unwrap();
//! let event: serde_json::Value = serde_json::from_slice(&event).unwrap();
//! assert_eq!(event["event_id"], "shopify:e-1");
//! assert_eq!(event["update"]["product"]["variants"][0]["price"]["minor"], 19900);
//! ```

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{Currency, Money};

/// A client secret shorter than this is not one Shopify issues; longer is not a secret.
const SECRET_LEN: std::ops::RangeInclusive<usize> = 16..=256;

/// `PUT /v1/shops/{shop}/inbound-secrets/shopify`: what the host keeps to check and read a
/// shop's Shopify webhooks.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShopifySettings {
    /// The app's client secret, which keys `X-Shopify-Hmac-Sha256`.
    pub secret: String,
    /// The store's currency: Shopify's product webhooks carry prices without one.
    pub currency: Currency,
}

impl std::fmt::Debug for ShopifySettings {
    /// Never prints the secret: settings end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopifySettings").field("currency", &self.currency).finish_non_exhaustive()
    }
}

impl ShopifySettings {
    /// The settings in a request body, checked.
    pub fn parse(body: &[u8]) -> Result<ShopifySettings, ShopifyError> {
        let settings: ShopifySettings =
            serde_json::from_slice(body).map_err(|e| ShopifyError::Invalid(e.to_string()))?;
        if !SECRET_LEN.contains(&settings.secret.len()) {
            return Err(ShopifyError::Invalid("a Shopify client secret is 16 to 256 bytes".into()));
        }
        Ok(settings)
    }
}

/// Why a Shopify request cannot be used. Every variant is the client's fault:
/// `400 invalid_argument`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShopifyError {
    #[error("{0}")]
    Invalid(String),
    #[error("Shopify {0}")]
    Product(String),
}

impl ShopifyError {
    pub fn code(&self) -> &'static str {
        "invalid_argument"
    }
}

/// The `/merchant/events` body for a verified webhook: `{event_id: "shopify:<id>", update}`, or
/// `None` for a topic the shop does not take.
pub fn merchant_event(
    topic: &str,
    event_id: &str,
    body: &[u8],
    currency: Currency,
) -> Result<Option<Vec<u8>>, ShopifyError> {
    let product: Value = serde_json::from_slice(body).map_err(|e| ShopifyError::Invalid(e.to_string()))?;
    let Some(update) = product_update(topic, &product, currency)? else { return Ok(None) };
    Ok(Some(json!({ "event_id": format!("shopify:{event_id}"), "update": update }).to_string().into_bytes()))
}

/// A Shopify product (the body of a `products/*` webhook) as the shop's `product.upsert` or
/// `product.archive` update; `None` for other topics.
pub fn product_update(topic: &str, p: &Value, currency: Currency) -> Result<Option<Value>, ShopifyError> {
    let bad = |what: &str| ShopifyError::Product(what.to_string());
    let product_id = p["id"].as_u64().ok_or_else(|| bad("product without an id"))?.to_string();
    match topic {
        "products/delete" => Ok(Some(json!({ "type": "product.archive", "product_id": product_id }))),
        "products/create" | "products/update" => {
            let variants = p["variants"].as_array().ok_or_else(|| bad("product without variants"))?;
            let variants = variants
                .iter()
                .map(|v| {
                    let price = v["price"].as_str().ok_or_else(|| bad("variant without a price"))?;
                    let price = Money::parse_major(price, currency).map_err(|e| bad(&e.to_string()))?;
                    let mut out = json!({
                        "sku": v["sku"].as_str().ok_or_else(|| bad("variant without a SKU"))?,
                        "title": v["title"].as_str().unwrap_or_default(),
                        "price": price,
                    });
                    if let Some(stock) = v["inventory_quantity"].as_i64() {
                        out["stock"] = json!(stock.max(0));
                    }
                    Ok(out)
                })
                .collect::<Result<Vec<_>, ShopifyError>>()?;
            let images: Vec<&str> =
                p["images"].as_array().into_iter().flatten().filter_map(|i| i["src"].as_str()).collect();
            let product = json!({
                "title": p["title"].as_str().unwrap_or_default(),
                "images": images,
                "variants": variants,
            });
            Ok(Some(json!({ "type": "product.upsert", "product_id": product_id, "product": product })))
        }
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn product(price: &str, stock: i64) -> Value {
        json!({ "id": 632910392, "title": "IPod Nano",
                "variants": [{ "sku": "IPOD-PINK", "title": "Pink", "price": price, "inventory_quantity": stock }] })
    }

    #[test]
    fn prices_are_parsed_exactly_in_the_stores_currency() {
        let update =
            product_update("products/create", &product("199.99", 3), Currency::Eur).unwrap().unwrap();
        assert_eq!(update["product_id"], "632910392");
        let variant = &update["product"]["variants"][0];
        assert_eq!(variant["price"], json!({ "minor": 19999, "currency": "EUR" }));
        assert_eq!(variant["stock"], 3);
        let yen = product_update("products/update", &product("1500", 1), Currency::Jpy).unwrap().unwrap();
        assert_eq!(yen["product"]["variants"][0]["price"]["minor"], 1500);
        // Oversold in Shopify: nothing left here.
        let oversold =
            product_update("products/update", &product("1.00", -2), Currency::Eur).unwrap().unwrap();
        assert_eq!(oversold["product"]["variants"][0]["stock"], 0);
    }

    #[test]
    fn a_price_the_currency_cannot_hold_or_a_product_without_variants_is_refused() {
        for (p, currency) in [
            (product("15.5", 1), Currency::Jpy),
            (product("19.999", 1), Currency::Eur),
            (product("free", 1), Currency::Eur),
            (json!({ "id": 1, "title": "No variants" }), Currency::Eur),
            (json!({ "handle": "no-id", "title": "No id", "variants": [] }), Currency::Eur),
        ] {
            let err = product_update("products/update", &p, currency).unwrap_err();
            assert_eq!(err.code(), "invalid_argument", "{p}");
        }
    }

    #[test]
    fn deletes_archive_and_other_topics_are_not_updates() {
        // What Shopify sends on a delete: the id and nothing else.
        let p = json!({ "id": 7 });
        assert_eq!(
            product_update("products/delete", &p, Currency::Eur).unwrap(),
            Some(json!({ "type": "product.archive", "product_id": "7" }))
        );
        assert_eq!(merchant_event("orders/create", "e-9", br#"{"id": 1}"#, Currency::Eur).unwrap(), None);
        assert!(merchant_event("products/update", "e-9", b"not json", Currency::Eur).is_err());
    }

    #[test]
    fn settings_need_a_plausible_secret_and_a_known_currency() {
        let ok =
            ShopifySettings::parse(br#"{"secret": "shpss_0123456789abcdef", "currency": "JPY"}"#).unwrap();
        assert_eq!(ok.currency, Currency::Jpy);
        for bad in [
            r#"{"secret": "short", "currency": "EUR"}"#,
            r#"{"secret": "shpss_0123456789abcdef", "currency": "XXX"}"#,
            r#"{"secret": "shpss_0123456789abcdef"}"#,
            r#"{"secret": "shpss_0123456789abcdef", "currency": "EUR", "extra": 1}"#,
        ] {
            assert_eq!(
                ShopifySettings::parse(bad.as_bytes()).unwrap_err().code(),
                "invalid_argument",
                "{bad}"
            );
        }
    }
}

//! Shows: the record `POST /v1/shows` creates and every room route checks, so nobody conjures
//! a room by naming it. One set of rules for every host (the edge node, the Cloudflare Worker);
//! each stores the record its own way.

use crate::protocol::Product;
use serde::{Deserialize, Serialize};

/// Most products a show's catalog lists (the room pins at most three at a time).
pub const MAX_PRODUCTS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Show {
    pub id: String,
    pub title: String,
    pub products: Vec<Product>,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    /// The shop whose products the show sells (absent: the shop named like the show).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shop: Option<String>,
}

/// The body of `POST /v1/shows`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewShow {
    /// Lower-case letters, digits and dashes, 1 to 64; made from the title when absent.
    pub id: Option<String>,
    pub title: String,
    #[serde(default)]
    pub products: Vec<Product>,
    /// The merchant's shop the show sells from; the show's own id when absent. Several shows
    /// may share one shop (its stock and orders).
    #[serde(default)]
    pub shop: Option<String>,
}

impl Show {
    pub fn shop_id(&self) -> &str {
        self.shop.as_deref().unwrap_or(&self.id)
    }

    /// A valid show from a request, or the message of a 400.
    pub fn new(new: NewShow, now: u64) -> Result<Show, String> {
        let title = crate::filter::normalize_whitespace(&new.title);
        if title.is_empty() || title.chars().count() > 200 {
            return Err("a title is 1 to 200 characters".into());
        }
        let id = new.id.unwrap_or_else(|| slug(&title));
        if !valid_id(&id) {
            return Err("a show id is 1 to 64 lower-case letters, digits and dashes".into());
        }
        if new.shop.as_deref().is_some_and(|s| !valid_id(s)) {
            return Err("a shop id is 1 to 64 lower-case letters, digits and dashes".into());
        }
        if new.products.len() > MAX_PRODUCTS {
            return Err(format!("at most {MAX_PRODUCTS} products"));
        }
        for p in &new.products {
            p.validate().map_err(|e| e.message)?;
        }
        Ok(Show { id, title, products: new.products, created_at: now, shop: new.shop })
    }
}

/// Show and shop ids: they appear in URLs and storage names.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_come_from_titles_and_bad_ones_are_refused() {
        let new = |id: Option<&str>, title: &str, shop: Option<&str>| NewShow {
            id: id.map(Into::into),
            title: title.into(),
            products: vec![],
            shop: shop.map(Into::into),
        };
        let show = Show::new(new(None, "Spring Drop: Linen!", None), 5).unwrap();
        assert_eq!(
            (show.id.as_str(), show.shop_id(), show.created_at),
            ("spring-drop-linen", "spring-drop-linen", 5)
        );
        assert_eq!(Show::new(new(None, "x", Some("acme")), 1).unwrap().shop_id(), "acme");
        assert!(Show::new(new(Some("Bad Id"), "x", None), 1).is_err());
        assert!(Show::new(new(None, "x", Some("ACME")), 1).is_err());
        assert!(Show::new(new(None, "   ", None), 1).is_err());
    }
}

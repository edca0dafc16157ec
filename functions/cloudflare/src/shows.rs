//! Shows: what `POST /v1/shows` creates and every room route checks, so nobody conjures a room
//! by naming it. The same record and rules as the edge node's `edge/src/shows.rs` (which should
//! move into a core both hosts share); here the show's own room object stores it.

use liveshop_room::protocol::Product;
use serde::{Deserialize, Serialize};

/// Most products a show's catalog lists.
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
    pub id: Option<String>,
    pub title: String,
    #[serde(default)]
    pub products: Vec<Product>,
    #[serde(default)]
    pub shop: Option<String>,
}

impl Show {
    pub fn shop_id(&self) -> &str {
        self.shop.as_deref().unwrap_or(&self.id)
    }

    /// A valid show from a request, or the message of a 400.
    pub fn new(new: NewShow, now: u64) -> Result<Show, String> {
        let title = liveshop_room::filter::normalize_whitespace(&new.title);
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

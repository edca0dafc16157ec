//! Shows: what `POST /v1/shows` creates and every room route checks, so nobody can conjure a
//! room by naming it. Stored as records in the node's database, cached in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use liveshop_room::protocol::Product;
use serde::{Deserialize, Serialize};

use crate::sqlite::Db;
use crate::storage::StorageError;

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

impl Show {
    pub fn shop_id(&self) -> &str {
        self.shop.as_deref().unwrap_or(&self.id)
    }
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

#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    #[error("a show {0:?} exists already")]
    Exists(String),
    #[error("no show {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub struct Shows {
    db: Db,
    cache: Mutex<HashMap<String, Show>>,
}

impl Shows {
    pub fn new(db: Db) -> Shows {
        Shows { db, cache: Mutex::new(HashMap::new()) }
    }

    pub fn create(&self, new: NewShow, now: u64) -> Result<Show, ShowError> {
        let title = liveshop_room::filter::normalize_whitespace(&new.title);
        if title.is_empty() || title.chars().count() > 200 {
            return Err(ShowError::Invalid("a title is 1 to 200 characters".into()));
        }
        let id = new.id.unwrap_or_else(|| slug(&title));
        if !valid_id(&id) {
            return Err(ShowError::Invalid(
                "a show id is 1 to 64 lower-case letters, digits and dashes".into(),
            ));
        }
        if new.shop.as_deref().is_some_and(|s| !valid_id(s)) {
            return Err(ShowError::Invalid(
                "a shop id is 1 to 64 lower-case letters, digits and dashes".into(),
            ));
        }
        if new.products.len() > MAX_PRODUCTS {
            return Err(ShowError::Invalid(format!("at most {MAX_PRODUCTS} products")));
        }
        for p in &new.products {
            p.validate().map_err(|e| ShowError::Invalid(e.message))?;
        }
        let show = Show { id, title, products: new.products, created_at: now, shop: new.shop };
        let body = serde_json::to_string(&show).expect("shows serialize");
        if !self.db.insert_record("show", &show.id, &body)? {
            return Err(ShowError::Exists(show.id));
        }
        // A shop exists once a show sells from it: shop routes refuse ids nobody created.
        self.db.insert_record("shop", show.shop_id(), "{}")?;
        Ok(show)
    }

    /// Whether some show sells from shop `id`.
    pub fn shop_exists(&self, id: &str) -> Result<bool, ShowError> {
        Ok(self.db.record("shop", id)?.is_some())
    }

    pub fn get(&self, id: &str) -> Result<Show, ShowError> {
        if let Some(s) = self.lock().get(id) {
            return Ok(s.clone());
        }
        let body =
            self.db.record("show", id)?.ok_or_else(|| ShowError::NotFound(id.chars().take(64).collect()))?;
        let show: Show = serde_json::from_str(&body)
            .map_err(|e| ShowError::Storage(StorageError::Backend(Box::new(e))))?;
        self.lock().insert(id.to_string(), show.clone());
        Ok(show)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Show>> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Show and shop ids: they appear in URLs and storage names.
fn valid_id(id: &str) -> bool {
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
    fn shows_are_created_once_and_found_again() {
        let shows = Shows::new(Db::in_memory().unwrap());
        let new = NewShow { id: None, title: "Spring Drop: Linen!".into(), products: vec![], shop: None };
        let show = shows.create(new.clone(), 5).unwrap();
        assert_eq!(show.id, "spring-drop-linen");
        assert!(matches!(shows.create(new, 6), Err(ShowError::Exists(_))));
        assert_eq!(shows.get("spring-drop-linen").unwrap(), show);
        assert!(matches!(shows.get("nope"), Err(ShowError::NotFound(_))));
        assert!(shows.shop_exists("spring-drop-linen").unwrap(), "a show sells from its own shop by default");
        assert!(!shows.shop_exists("acme").unwrap());
        let bad = NewShow { id: Some("Bad Id".into()), title: "x".into(), products: vec![], shop: None };
        assert!(matches!(shows.create(bad, 1), Err(ShowError::Invalid(_))));
        let bad = NewShow { id: None, title: "x".into(), products: vec![], shop: Some("ACME".into()) };
        assert!(matches!(shows.create(bad, 1), Err(ShowError::Invalid(_))));
    }
}

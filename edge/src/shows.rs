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
        let valid_id = !id.is_empty()
            && id.len() <= 64
            && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_id {
            return Err(ShowError::Invalid(
                "a show id is 1 to 64 lower-case letters, digits and dashes".into(),
            ));
        }
        if new.products.len() > MAX_PRODUCTS {
            return Err(ShowError::Invalid(format!("at most {MAX_PRODUCTS} products")));
        }
        for p in &new.products {
            p.validate().map_err(|e| ShowError::Invalid(e.message))?;
        }
        let show = Show { id, title, products: new.products, created_at: now };
        let body = serde_json::to_string(&show).expect("shows serialize");
        if !self.db.insert_record("show", &show.id, &body)? {
            return Err(ShowError::Exists(show.id));
        }
        Ok(show)
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
        let new = NewShow { id: None, title: "Spring Drop: Linen!".into(), products: vec![] };
        let show = shows.create(new.clone(), 5).unwrap();
        assert_eq!(show.id, "spring-drop-linen");
        assert!(matches!(shows.create(new, 6), Err(ShowError::Exists(_))));
        assert_eq!(shows.get("spring-drop-linen").unwrap(), show);
        assert!(matches!(shows.get("nope"), Err(ShowError::NotFound(_))));
        let bad = NewShow { id: Some("Bad Id".into()), title: "x".into(), products: vec![] };
        assert!(matches!(shows.create(bad, 1), Err(ShowError::Invalid(_))));
    }
}

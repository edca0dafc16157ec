//! Shows: what `POST /v1/shows` creates and every room route checks, so nobody can conjure a
//! room by naming it. Stored as records in the node's database, cached in memory.

use std::collections::HashMap;
use std::sync::Mutex;

pub use liveshop_room::show::{MAX_PRODUCTS, NewShow, Show};

use crate::sqlite::Db;
use crate::storage::StorageError;

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
        let show = Show::new(new, now).map_err(ShowError::Invalid)?;
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

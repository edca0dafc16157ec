//! Shows: what `POST /v1/shows` creates and every room route checks, so nobody can conjure a
//! room by naming it. Stored as records in the node's database, cached in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use liveshop_identity::Identity;
pub use liveshop_room::show::{ClaimError, Credential, MAX_PRODUCTS, NewShow, ShopRecord, Show};

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
    Claim(#[from] ClaimError),
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
        self.insert(Show::new(new, now).map_err(ShowError::Invalid)?)
    }

    /// Stores a new show (and its shop, if new, without an owner).
    pub fn insert(&self, show: Show) -> Result<Show, ShowError> {
        let body = serde_json::to_string(&show).expect("shows serialize");
        if !self.db.insert_record("show", &show.id, &body)? {
            return Err(ShowError::Exists(show.id));
        }
        // A shop exists once a show sells from it: shop routes refuse ids nobody created.
        self.db.insert_record("shop", show.shop_id(), "{}")?;
        Ok(show)
    }

    /// Lets `who` sell from shop `id` if the shop's owner allows it
    /// ([`liveshop_room::show::claim_shop`]), recording the owner of a shop it creates or claims.
    pub fn claim_shop(
        &self,
        id: &str,
        who: &Identity,
        credential: Credential,
        operator: bool,
    ) -> Result<(), ShowError> {
        let stored = self.db.record("shop", id)?;
        let record: Option<ShopRecord> = stored.map(|b| serde_json::from_str(&b).unwrap_or_default());
        let Some(claimed) = liveshop_room::show::claim_shop(who, credential, operator, record.as_ref())?
        else {
            return Ok(());
        };
        let body = serde_json::to_string(&claimed).expect("records serialize");
        if record.is_some() {
            self.db.put_record("shop", id, &body)?;
        } else if !self.db.insert_record("shop", id, &body)? {
            // Someone created the shop meanwhile: judge again against what they stored.
            return self.claim_shop(id, who, credential, operator);
        }
        Ok(())
    }

    /// Whether some show sells from shop `id`.
    pub fn shop_exists(&self, id: &str) -> Result<bool, ShowError> {
        Ok(self.db.record("shop", id)?.is_some())
    }

    /// Every show selling from shop `shop`.
    pub fn of_shop(&self, shop: &str) -> Result<Vec<Show>, ShowError> {
        let all = self
            .db
            .records("show")?
            .into_iter()
            .filter_map(|(_, body)| serde_json::from_str::<Show>(&body).ok());
        Ok(all.filter(|s| s.shop_id() == shop).collect())
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

    /// Bumps the show's stream key version (the old key stops opening WHIP) and stores it.
    pub fn rotate_stream_key(&self, id: &str) -> Result<Show, ShowError> {
        let mut show = self.get(id)?;
        // Held from read to write: two rotations at once never hand out the same version.
        let mut cache = self.lock();
        if let Some(cached) = cache.get(id) {
            show = cached.clone();
        }
        show.stream_key_version = show
            .stream_key_version
            .checked_add(1)
            .ok_or_else(|| ShowError::Invalid("this show's stream key was rotated too often".into()))?;
        self.db.put_record("show", id, &serde_json::to_string(&show).expect("shows serialize"))?;
        cache.insert(id.to_string(), show.clone());
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
        let new = NewShow {
            id: None,
            title: "Spring Drop: Linen!".into(),
            products: vec![],
            shop: None,
            embed_origins: vec![],
        };
        let show = shows.create(new.clone(), 5).unwrap();
        assert_eq!(show.id, "spring-drop-linen");
        assert!(matches!(shows.create(new, 6), Err(ShowError::Exists(_))));
        assert_eq!(shows.get("spring-drop-linen").unwrap(), show);
        assert!(matches!(shows.get("nope"), Err(ShowError::NotFound(_))));
        assert!(shows.shop_exists("spring-drop-linen").unwrap(), "a show sells from its own shop by default");
        assert!(!shows.shop_exists("acme").unwrap());
        let bad = NewShow {
            id: Some("Bad Id".into()),
            title: "x".into(),
            products: vec![],
            shop: None,
            embed_origins: vec![],
        };
        assert!(matches!(shows.create(bad, 1), Err(ShowError::Invalid(_))));
        let bad = NewShow {
            id: None,
            title: "x".into(),
            products: vec![],
            shop: Some("ACME".into()),
            embed_origins: vec![],
        };
        assert!(matches!(shows.create(bad, 1), Err(ShowError::Invalid(_))));
    }
}

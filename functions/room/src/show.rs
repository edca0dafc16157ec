//! Shows: the record `POST /v1/shows` creates and every room route checks, so nobody conjures
//! a room by naming it. One set of rules for every host (the edge node, the Cloudflare Worker);
//! each stores the record its own way.

use crate::protocol::Product;
use liveshop_identity::{Identity, Role};
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
    /// Origins (`https://host[:port]`) whose pages may frame the viewer page; none by default.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub embed_origins: Vec<String>,
    /// Which stream key the show takes (see `liveshop_identity::StreamKeys`): the host rotates
    /// it to revoke a leaked key. Records from before rotation read as 0, today's key.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub stream_key_version: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
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
    /// Origins allowed to frame the viewer page, at most [`MAX_EMBED_ORIGINS`].
    #[serde(default)]
    pub embed_origins: Vec<String>,
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
        if new.embed_origins.len() > MAX_EMBED_ORIGINS {
            return Err(format!("at most {MAX_EMBED_ORIGINS} embed origins"));
        }
        if let Some(bad) = new.embed_origins.iter().find(|o| !valid_embed_origin(o)) {
            return Err(format!(
                "embed origin {:?} is not https://host[:port] in lower case",
                bad.chars().take(80).collect::<String>()
            ));
        }
        Ok(Show {
            id,
            title,
            products: new.products,
            created_at: now,
            shop: new.shop,
            embed_origins: new.embed_origins,
            stream_key_version: 0,
        })
    }
}

/// Most origins a show lets frame its viewer page: a few sites, not a way around the policy.
pub const MAX_EMBED_ORIGINS: usize = 8;

/// `https://host[:port]`, as a browser serializes an origin: it goes verbatim into the viewer
/// page's `Content-Security-Policy` (`frame-ancestors`), so nothing else may pass (no spaces,
/// `;`, quotes, paths or wildcards).
fn valid_embed_origin(origin: &str) -> bool {
    let Some(rest) = origin.strip_prefix("https://") else { return false };
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (rest, None),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    host.len() <= 253
        && host.split('.').all(label_ok)
        && port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// How the caller of `POST /v1/shows` holds its token: platform-wide (`room: "*"`), or for the
/// shop the show would sell from (`room: <shop>`, a merchant token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Platform,
    Shop,
}

/// What a host stores about a shop: who owns it. A shop is owned by the subject that first
/// sold from it with a platform-wide token, or by a merchant token's subject for that shop;
/// shops made before owners were recorded (and the demo's) have none.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShopRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Why a show may not sell from a shop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClaimError {
    #[error("only hosts and merchants create shows, and a shop's token must be a merchant's")]
    Forbidden,
    #[error("the shop belongs to someone else: use a merchant token for that shop")]
    NotOwned,
}

impl ClaimError {
    pub fn code(self) -> &'static str {
        match self {
            ClaimError::Forbidden => "forbidden",
            ClaimError::NotOwned => "shop_not_owned",
        }
    }
}

/// Whether `who`'s role may create shows at all with this credential: a host or merchant with a
/// platform-wide token, a merchant with a shop's token. Checked before anything is looked up.
pub fn may_create(who: &Identity, credential: Credential) -> Result<(), ClaimError> {
    let allowed = match credential {
        Credential::Shop => who.role == Role::Merchant,
        Credential::Platform => matches!(who.role, Role::Host | Role::Merchant),
    };
    if allowed { Ok(()) } else { Err(ClaimError::Forbidden) }
}

/// Whether `who` may create a show that sells from a shop, given the shop's record (`None`: no
/// such shop yet) and whether the node's config names `who` a platform operator. `Ok(Some(owner))`
/// is the record to store (a new shop, or an ownerless one its merchant now claims); `Ok(None)`
/// leaves the record as it is.
pub fn claim_shop(
    who: &Identity,
    credential: Credential,
    operator: bool,
    shop: Option<&ShopRecord>,
) -> Result<Option<ShopRecord>, ClaimError> {
    may_create(who, credential)?;
    let owner = shop.and_then(|s| s.owner.as_deref());
    let mine = || Some(ShopRecord { owner: Some(who.subject.clone()) });
    match credential {
        Credential::Shop => Ok(owner.is_none().then(mine).flatten()),
        Credential::Platform => match (shop, owner) {
            (None, _) => Ok(mine()),
            (Some(_), Some(o)) if o == who.subject => Ok(None),
            _ if operator => Ok(None),
            _ => Err(ClaimError::NotOwned),
        },
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
            embed_origins: vec![],
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

    #[test]
    fn a_show_sells_only_from_a_shop_its_creator_owns() {
        use Credential::{Platform, Shop};
        let (studio, mallory) =
            (Identity::new("studio", Role::Host), Identity::new("mallory", Role::Merchant));
        let owned = ShopRecord { owner: Some("studio".into()) };
        let unowned = ShopRecord::default();
        // A new shop belongs to whoever first sells from it.
        assert_eq!(claim_shop(&studio, Platform, false, None), Ok(Some(owned.clone())));
        assert_eq!(claim_shop(&studio, Platform, false, Some(&owned)), Ok(None));
        assert_eq!(claim_shop(&mallory, Platform, false, Some(&owned)), Err(ClaimError::NotOwned));
        assert_eq!(claim_shop(&mallory, Platform, false, Some(&unowned)), Err(ClaimError::NotOwned));
        // Operators the node names, and the shop's own merchant tokens, may.
        assert_eq!(claim_shop(&mallory, Platform, true, Some(&owned)), Ok(None));
        assert_eq!(claim_shop(&mallory, Shop, false, Some(&owned)), Ok(None));
        let claimed = ShopRecord { owner: Some("mallory".into()) };
        assert_eq!(claim_shop(&mallory, Shop, false, Some(&unowned)), Ok(Some(claimed)));
        // Viewers and moderators create nothing; a shop's token must be a merchant's.
        assert_eq!(
            claim_shop(&Identity::new("v", Role::Viewer), Platform, true, None),
            Err(ClaimError::Forbidden)
        );
        assert_eq!(claim_shop(&studio, Shop, false, Some(&owned)), Err(ClaimError::Forbidden));
    }

    #[test]
    fn embed_origins_are_https_origins_and_nothing_that_could_bend_the_policy() {
        let with = |origins: &[&str]| NewShow {
            id: None,
            title: "x".into(),
            products: vec![],
            shop: None,
            embed_origins: origins.iter().map(|o| o.to_string()).collect(),
        };
        assert!(Show::new(with(&["https://shop.example", "https://a.b-c.example:8443"]), 1).is_ok());
        for bad in [
            "http://shop.example",
            "https://shop.example/",
            "https://*.example",
            "https://shop.example; script-src *",
            "https://shop.example 'unsafe-inline'",
            "https://SHOP.example",
            "https://",
            "https://shop.example:",
            "'self'",
        ] {
            assert!(Show::new(with(&[bad]), 1).is_err(), "{bad}");
        }
        let many = vec!["https://a.example"; MAX_EMBED_ORIGINS + 1];
        assert!(Show::new(with(&many), 1).is_err());
    }
}

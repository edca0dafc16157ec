//! Identifiers and units: newtypes so a sequence number is never mistaken for a message count.

use serde::{Deserialize, Serialize};

pub use liveshop_journal::Millis;

/// A connection the host holds open for this room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ConnId(pub u64);

pub use liveshop_journal::{Epoch, Seq};

/// A chat message is named by the seq of the event that first carried it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub u64);

/// A poll is named by the seq of the event that opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PollId(pub u64);

/// A question is named by the seq of the event that asked it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct QuestionId(pub u64);

/// A product as the merchant's catalog names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProductId(pub String);

/// An amount in integer minor units of an ISO 4217 currency (cents for EUR, yen for JPY).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    pub minor: i64,
    pub currency: String,
}

//! Identifiers and units: newtypes so an order id is never mistaken for a quantity, and a SKU is
//! always one the shop could have stored.

use std::fmt;

use serde::{Deserialize, Serialize};

pub use liveshop_journal::{Epoch, Millis, Seq};

pub const SECOND: Millis = 1_000;
pub const MINUTE: Millis = 60 * SECOND;
pub const HOUR: Millis = 60 * MINUTE;
pub const DAY: Millis = 24 * HOUR;

/// Longest SKU, product id or coupon code, in bytes.
pub const MAX_CODE_BYTES: usize = 64;

/// A code the shop stores and routes on: 1 to 64 bytes of `A-Z a-z 0-9 . _ -`, so it is safe in
/// a path segment, a storage key and a log line without escaping.
fn is_code(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_CODE_BYTES
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A string that is not a valid [`Sku`], [`ProductId`] or [`CouponCode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a code is 1 to 64 bytes of A-Z a-z 0-9 . _ -")]
pub struct InvalidCode;

macro_rules! code_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// `None` unless `s` is 1 to 64 bytes of `A-Z a-z 0-9 . _ -`.
            pub fn parse(s: &str) -> Option<$name> {
                is_code(s).then(|| $name(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = InvalidCode;
            fn from_str(s: &str) -> Result<$name, InvalidCode> {
                $name::parse(s).ok_or(InvalidCode)
            }
        }
    };
}

code_newtype!(
    /// A stock-keeping unit: one buyable variant (size M, blue) of a product.
    Sku
);
code_newtype!(
    /// A product as the merchant's catalog names it; its variants are [`Sku`]s.
    ProductId
);
code_newtype!(
    /// A discount code a buyer can put on their cart.
    CouponCode
);

macro_rules! number_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

number_newtype!(
    /// An order is named by the seq of the event that created it.
    OrderId
);
number_newtype!(
    /// A flash deal is named by the seq of the event that created it.
    DealId
);
number_newtype!(
    /// A webhook endpoint is named by the seq of the event that added it.
    EndpointId
);
number_newtype!(
    /// One webhook event on its way to one endpoint.
    DeliveryId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_short_and_path_safe() {
        assert!(Sku::parse("TEE-M.blue_2").is_some());
        assert!(Sku::parse("").is_none());
        assert!(Sku::parse("a/b").is_none());
        assert!(Sku::parse("tee m").is_none());
        assert!(Sku::parse(&"x".repeat(65)).is_none());
    }
}

//! Money: integer minor units of an ISO 4217 currency, checked arithmetic, one rounding rule,
//! and the largest-remainder split.
//!
//! # The rounding rule
//!
//! Amounts are never fractional: a [`Money`] is a whole number of minor units (cents for EUR,
//! yen for JPY, fils for KWD). Only when a *rate* (a percentage discount, a tax rate, both
//! [`Decimal`]) turns an amount into a fraction of a minor unit is anything rounded, and then
//! **once, to the nearest minor unit, halves away from zero** ([`round_half_away`]): 0.5 ct
//! becomes 1 ct, −0.5 ct becomes −1 ct. That is "commercial rounding", the rule buyers and
//! bookkeepers expect and the one the euro conversion regulation (EC 1103/97, art. 5) uses.
//! Half-even exists to cancel the upward bias of rounding many parts and summing them; the
//! shop never does that. It rounds a whole (the discount of a cart, the tax of all lines at one
//! rate) once and then [`allocate`]s it over the parts, so the parts always add up exactly.

use std::fmt;

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// Largest amount the shop accepts from anyone, in minor units (10^12: ten billion euros).
/// Sums of many such amounts still fit an `i64` by a wide margin.
pub const MAX_AMOUNT: i64 = 1_000_000_000_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("unknown or unsupported currency {0:?}")]
    UnknownCurrency(String),
    #[error("currency mismatch: {expected} and {found}")]
    CurrencyMismatch { expected: Currency, found: Currency },
    #[error("amount out of range")]
    Overflow,
    #[error("nothing to split {0} over")]
    NothingToSplit(Money),
    #[error("cannot split a negative amount or over negative weights")]
    Negative,
    #[error("{0:?} is not an amount in major units with at most the currency's decimals")]
    BadAmount(String),
}

/// The ISO 4217 currencies the shop prices in, each with its minor-unit exponent. Any other code
/// is refused rather than guessed: a wrong exponent would be off by a factor of 100.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "UPPERCASE")]
#[strum(serialize_all = "UPPERCASE")]
pub enum Currency {
    // Two decimals.
    Eur,
    Usd,
    Gbp,
    Chf,
    Sek,
    Nok,
    Dkk,
    Pln,
    Czk,
    Huf,
    Ron,
    Cad,
    Aud,
    Nzd,
    Sgd,
    Hkd,
    Cny,
    Inr,
    Brl,
    Mxn,
    Zar,
    Try,
    Ils,
    Aed,
    Sar,
    Thb,
    Myr,
    Php,
    Idr,
    Twd,
    // Zero decimals.
    Jpy,
    Krw,
    Vnd,
    Clp,
    Isk,
    Xof,
    Xaf,
    Pyg,
    Ugx,
    // Three decimals.
    Kwd,
    Bhd,
    Omr,
    Jod,
    Tnd,
    Lyd,
    Iqd,
}

impl Currency {
    /// Parses an ISO 4217 code (upper case, as ISO writes it).
    pub fn parse(code: &str) -> Result<Currency, MoneyError> {
        code.parse().map_err(|_| MoneyError::UnknownCurrency(code.chars().take(8).collect()))
    }

    pub fn code(self) -> &'static str {
        self.into()
    }

    /// Digits after the decimal point: one major unit is `10^exponent` minor units.
    pub fn exponent(self) -> u32 {
        use Currency::*;
        match self {
            Jpy | Krw | Vnd | Clp | Isk | Xof | Xaf | Pyg | Ugx => 0,
            Kwd | Bhd | Omr | Jod | Tnd | Lyd | Iqd => 3,
            _ => 2,
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An amount in integer minor units of a currency. Arithmetic is checked: it fails on overflow
/// and on mixing currencies, never wraps or converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Money {
    pub minor: i64,
    pub currency: Currency,
}

impl Money {
    pub const fn new(minor: i64, currency: Currency) -> Money {
        Money { minor, currency }
    }

    /// Reads an amount in major units as merchants' systems write it (`"19.99"` EUR is 1999
    /// minor units). More decimals than the currency has are refused, not rounded: a price is
    /// taken as given or not at all.
    pub fn parse_major(text: &str, currency: Currency) -> Result<Money, MoneyError> {
        let bad = || MoneyError::BadAmount(text.chars().take(32).collect());
        let amount: Decimal = text.trim().parse().map_err(|_| bad())?;
        if amount.normalize().scale() > currency.exponent() {
            return Err(bad());
        }
        let minor =
            amount.checked_mul(Decimal::from(10i64.pow(currency.exponent()))).ok_or(MoneyError::Overflow)?;
        Ok(Money::new(minor.to_i64().ok_or(MoneyError::Overflow)?, currency))
    }

    pub const fn zero(currency: Currency) -> Money {
        Money { minor: 0, currency }
    }

    pub fn is_zero(self) -> bool {
        self.minor == 0
    }

    pub fn same_currency(self, other: Money) -> Result<(), MoneyError> {
        if self.currency == other.currency {
            Ok(())
        } else {
            Err(MoneyError::CurrencyMismatch { expected: self.currency, found: other.currency })
        }
    }

    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self.minor.checked_add(other.minor).ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, ..self })
    }

    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        self.same_currency(other)?;
        let minor = self.minor.checked_sub(other.minor).ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, ..self })
    }

    pub fn checked_mul(self, n: i64) -> Result<Money, MoneyError> {
        let minor = self.minor.checked_mul(n).ok_or(MoneyError::Overflow)?;
        Ok(Money { minor, ..self })
    }

    /// `pct` percent of this amount, rounded by the rule (halves away from zero).
    pub fn percent(self, pct: Decimal) -> Result<Money, MoneyError> {
        let exact =
            Decimal::from(self.minor).checked_mul(pct).ok_or(MoneyError::Overflow)? / Decimal::ONE_HUNDRED;
        Ok(Money { minor: round_half_away(exact)?, ..self })
    }

    /// The tax included in this gross amount at `rate` percent: `gross × rate / (100 + rate)`,
    /// rounded by the rule.
    pub fn included_tax(self, rate: Decimal) -> Result<Money, MoneyError> {
        let exact = Decimal::from(self.minor).checked_mul(rate).ok_or(MoneyError::Overflow)?
            / (Decimal::ONE_HUNDRED + rate);
        Ok(Money { minor: round_half_away(exact)?, ..self })
    }

    /// The sum of `items`, all in `currency`.
    pub fn sum(currency: Currency, items: impl IntoIterator<Item = Money>) -> Result<Money, MoneyError> {
        items.into_iter().try_fold(Money::zero(currency), Money::checked_add)
    }
}

impl Money {
    /// The amount in major units, exactly: `19.99` for 1999 EUR cents, `1500` for 1500 JPY.
    pub fn major(self) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(self.minor), self.currency.exponent())
    }
}

impl fmt::Display for Money {
    /// `19.99 EUR`, `1500 JPY`, `1.250 KWD`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.major(), self.currency)
    }
}

/// The one rounding rule: to the nearest whole minor unit, halves away from zero.
pub fn round_half_away(exact: Decimal) -> Result<i64, MoneyError> {
    exact
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
        .to_i64()
        .ok_or(MoneyError::Overflow)
}

/// Splits `total` over parts in proportion to `weights` by the largest-remainder method: every
/// part gets the floor of its exact share, and the minor units left over go one each to the parts
/// with the largest remainders (ties to the earlier part). The parts always sum to `total`, no
/// part differs from its exact share by a whole unit, and when `total` is at most the sum of the
/// weights no part exceeds its weight. Weights that are all zero count as equal.
pub fn allocate(total: Money, weights: &[Money]) -> Result<Vec<Money>, MoneyError> {
    for w in weights {
        total.same_currency(*w)?;
    }
    if total.minor < 0 || weights.iter().any(|w| w.minor < 0) {
        return Err(MoneyError::Negative);
    }
    if weights.is_empty() {
        return if total.is_zero() { Ok(Vec::new()) } else { Err(MoneyError::NothingToSplit(total)) };
    }
    let mut w: Vec<i128> = weights.iter().map(|m| i128::from(m.minor)).collect();
    if w.iter().all(|&x| x == 0) {
        w.iter_mut().for_each(|x| *x = 1);
    }
    let sum: i128 = w.iter().sum();
    let t = i128::from(total.minor);
    let mut parts: Vec<i128> = w.iter().map(|&x| t * x / sum).collect();
    let mut by_remainder: Vec<(usize, i128)> = w.iter().enumerate().map(|(i, &x)| (i, t * x % sum)).collect();
    // Largest remainder first; the stable sort keeps earlier parts first among equals.
    by_remainder.sort_by_key(|&(_, r)| std::cmp::Reverse(r));
    let left = t - parts.iter().sum::<i128>();
    for (i, _) in by_remainder.into_iter().take(usize::try_from(left).map_err(|_| MoneyError::Overflow)?) {
        parts[i] += 1;
    }
    parts
        .into_iter()
        .map(|p| i64::try_from(p).map(|minor| Money { minor, ..total }).map_err(|_| MoneyError::Overflow))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(minor: i64) -> Money {
        Money::new(minor, Currency::Eur)
    }

    #[test]
    fn major_amounts_are_read_exactly_per_currency() {
        assert_eq!(Money::parse_major("19.99", Currency::Eur), Ok(eur(1999)));
        assert_eq!(Money::parse_major("19.90", Currency::Eur), Ok(eur(1990)));
        assert_eq!(Money::parse_major("1500", Currency::Jpy), Ok(Money::new(1500, Currency::Jpy)));
        assert_eq!(Money::parse_major("1.234", Currency::Kwd), Ok(Money::new(1234, Currency::Kwd)));
        for bad in ["19.999", "abc", "", "15.5"] {
            let currency = if bad == "15.5" { Currency::Jpy } else { Currency::Eur };
            assert!(matches!(Money::parse_major(bad, currency), Err(MoneyError::BadAmount(_))), "{bad}");
        }
    }

    #[test]
    fn currencies_know_their_exponent_and_unknown_ones_are_refused() {
        assert_eq!(Currency::parse("EUR").unwrap().exponent(), 2);
        assert_eq!(Currency::parse("JPY").unwrap().exponent(), 0);
        assert_eq!(Currency::parse("KWD").unwrap().exponent(), 3);
        assert_eq!(Currency::parse("XXX"), Err(MoneyError::UnknownCurrency("XXX".into())));
        assert!(Currency::parse("eur").is_err());
        assert_eq!(serde_json::to_string(&Currency::Jpy).unwrap(), "\"JPY\"");
    }

    #[test]
    fn amounts_display_in_major_units() {
        assert_eq!(eur(1999).to_string(), "19.99 EUR");
        assert_eq!(Money::new(1500, Currency::Jpy).to_string(), "1500 JPY");
        assert_eq!(Money::new(1250, Currency::Kwd).to_string(), "1.250 KWD");
    }

    #[test]
    fn arithmetic_is_checked() {
        let jpy = Money::new(100, Currency::Jpy);
        assert!(matches!(eur(1).checked_add(jpy), Err(MoneyError::CurrencyMismatch { .. })));
        assert_eq!(eur(i64::MAX).checked_add(eur(1)), Err(MoneyError::Overflow));
        assert_eq!(eur(i64::MAX).checked_mul(2), Err(MoneyError::Overflow));
        assert_eq!(eur(250).checked_mul(3), Ok(eur(750)));
    }

    #[test]
    fn halves_round_away_from_zero_once() {
        let pct = |s: &str| s.parse::<Decimal>().unwrap();
        assert_eq!(eur(5).percent(pct("10")), Ok(eur(1))); // 0.5 -> 1
        assert_eq!(eur(15).percent(pct("10")), Ok(eur(2))); // 1.5 -> 2 (half-even would say 2 too)
        assert_eq!(eur(25).percent(pct("10")), Ok(eur(3))); // 2.5 -> 3 (half-even would say 2)
        assert_eq!(eur(-25).percent(pct("10")), Ok(eur(-3)));
        assert_eq!(eur(1999).percent(pct("12.5")), Ok(eur(250))); // 249.875
        // 19 % VAT included in 11.90: 1.90.
        assert_eq!(eur(1190).included_tax(pct("19")), Ok(eur(190)));
    }

    #[test]
    fn largest_remainder_gives_leftover_units_to_the_largest_remainders() {
        let parts = allocate(eur(100), &[eur(1), eur(1), eur(1)]).unwrap();
        assert_eq!(parts, [eur(34), eur(33), eur(33)]);
        let parts = allocate(eur(10), &[eur(500), eur(300), eur(200)]).unwrap();
        assert_eq!(parts, [eur(5), eur(3), eur(2)]);
        let parts = allocate(eur(7), &[eur(0), eur(0)]).unwrap();
        assert_eq!(parts, [eur(4), eur(3)]);
        assert!(allocate(eur(1), &[]).is_err());
        assert!(allocate(eur(1), &[Money::new(1, Currency::Usd)]).is_err());
    }
}

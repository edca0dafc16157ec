//! Percentiles and the number formats the report uses.

use std::time::Duration;

/// Latency percentiles of a set of samples, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

impl Summary {
    /// Nearest-rank percentiles; `None` without samples. Sorts `samples`.
    pub fn of(samples: &mut [u32]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let n = samples.len();
        let rank = |p: f64| samples[((p * n as f64).ceil() as usize).clamp(1, n) - 1] as f64;
        let mean = samples.iter().map(|&s| s as f64).sum::<f64>() / n as f64;
        Some(Summary { n, p50: rank(0.50), p99: rank(0.99), max: samples[n - 1] as f64, mean })
    }

    /// The same, from durations (rounded to whole microseconds).
    pub fn of_durations(samples: &[Duration]) -> Option<Summary> {
        let mut us: Vec<u32> = samples.iter().map(|d| d.as_micros().min(u32::MAX as u128) as u32).collect();
        Summary::of(&mut us)
    }
}

/// A duration given in microseconds, in the unit that reads best.
pub fn us(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.2} s", v / 1e6)
    } else if v >= 1_000.0 {
        format!("{:.2} ms", v / 1e3)
    } else {
        format!("{v:.0} µs")
    }
}

/// A count with thousands separators.
pub fn count(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `a / b` as `1.23x`, or `n/a` when either side is missing or zero.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut v: Vec<u32> = (1..=100).rev().collect();
        let s = Summary::of(&mut v).unwrap();
        assert_eq!((s.p50, s.p99, s.max, s.mean), (50.0, 99.0, 100.0, 50.5));
        assert!(Summary::of(&mut []).is_none());
        let one = Summary::of(&mut [7]).unwrap();
        assert_eq!((one.p50, one.p99), (7.0, 7.0));
    }

    #[test]
    fn formats() {
        assert_eq!(count(1234567.0), "1,234,567");
        assert_eq!(count(999.0), "999");
        assert_eq!(us(1500.0), "1.50 ms");
        assert_eq!(ratio(Some(3.0), Some(2.0)), "1.50x");
        assert_eq!(ratio(Some(3.0), Some(0.0)), "n/a");
    }
}

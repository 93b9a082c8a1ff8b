//! Kubernetes quantities, the weights of v1alpha1 TrafficSplits, and how a list of them
//! becomes whole-number weights.
//!
//! Reading follows k8s.io/apimachinery pkg/api/resource/quantity.go (`parseQuantityString`,
//! `ParseQuantity`) and suffix.go (`newSuffixer`, `suffixHandler.interpret`): an optional
//! sign, digits with an optional fraction, then a decimal SI suffix (`n u m k M G T P E`), a
//! binary one (`Ki Mi Gi Ti Pi Ei`) or a decimal exponent (`e3`, `E-2`). As in
//! `ParseQuantity`, a value finer than 1n rounds up to 1n, so a positive quantity is never 0.
//! Unlike it, at least one digit is required (`"."` and `"+"` read as 0 there; the API
//! server's pattern for quantities refuses them), and a value is kept to 38 significant
//! digits, rounded up beyond (a relative change below 10^-37).

/// Whole-number weights of one split add up to at most this, since Envoy adds the weights
/// of a route up in 32 bits.
pub const MAX_TOTAL: u64 = u32::MAX as u64;

/// A parsed quantity: `mantissa × 10^exponent`, with `exponent >= -9` and no trailing zero
/// in `mantissa` (zero is `0 × 10^0`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quantity {
    pub negative: bool,
    pub mantissa: u128,
    pub exponent: i32,
}

/// Why a quantity could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    #[error("is not a valid quantity")]
    Format,
    #[error("has an unknown suffix {0:?}")]
    Suffix(String),
    #[error("is too large")]
    TooLarge,
}

/// The binary suffixes and the power of two each stands for.
const BINARY: [(&str, u32); 6] = [
    ("Ki", 10),
    ("Mi", 20),
    ("Gi", 30),
    ("Ti", 40),
    ("Pi", 50),
    ("Ei", 60),
];

/// The decimal SI suffixes and the power of ten each stands for.
const DECIMAL: [(&str, i32); 10] = [
    ("n", -9),
    ("u", -6),
    ("m", -3),
    ("", 0),
    ("k", 3),
    ("M", 6),
    ("G", 9),
    ("T", 12),
    ("P", 15),
    ("E", 18),
];

impl Quantity {
    pub const ZERO: Quantity = Quantity {
        negative: false,
        mantissa: 0,
        exponent: 0,
    };

    /// A whole number.
    pub fn from_int(value: i128) -> Result<Quantity, QuantityError> {
        normalize(value < 0, value.unsigned_abs(), 0)
    }

    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// The same quantity without its sign.
    pub fn magnitude(self) -> Quantity {
        Quantity {
            negative: false,
            ..self
        }
    }
}

impl std::str::FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(text: &str) -> Result<Quantity, QuantityError> {
        let (negative, rest) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int, rest) = rest.split_at(int_len);
        let (frac, suffix) = match rest.strip_prefix('.') {
            Some(after) => {
                let n = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                after.split_at(n)
            }
            None => ("", rest),
        };
        if int.is_empty() && frac.is_empty() {
            return Err(QuantityError::Format);
        }
        let (exp10, exp2) = interpret_suffix(suffix)?;
        let frac_len = i32::try_from(frac.len()).map_err(|_| QuantityError::Format)?;
        let exponent = exp10.checked_sub(frac_len).ok_or(QuantityError::TooLarge)?;
        let (mantissa, dropped) = leading_digits(int.bytes().chain(frac.bytes()));
        let exponent = exponent
            .checked_add(dropped)
            .ok_or(QuantityError::TooLarge)?;
        let (mantissa, exponent) = times_power_of_two(mantissa, exponent, exp2)?;
        normalize(negative, mantissa, exponent)
    }
}

/// Suffix to (power of ten, power of two), as suffix.go's `interpret`.
fn interpret_suffix(suffix: &str) -> Result<(i32, u32), QuantityError> {
    if let Some(&(_, e)) = DECIMAL.iter().find(|(s, _)| *s == suffix) {
        return Ok((e, 0));
    }
    if let Some(&(_, p)) = BINARY.iter().find(|(s, _)| *s == suffix) {
        return Ok((0, p));
    }
    let unknown = || QuantityError::Suffix(suffix.to_string());
    let exponent = suffix
        .strip_prefix(['e', 'E'])
        .filter(|rest| !rest.is_empty())
        .ok_or_else(unknown)?;
    let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(unknown());
    }
    let e: i32 = exponent.parse().map_err(|_| QuantityError::TooLarge)?;
    Ok((e, 0))
}

/// The first 38 significant digits as a number (rounded up when a dropped digit is not 0),
/// and how many digits were dropped.
fn leading_digits(digits: impl Iterator<Item = u8>) -> (u128, i32) {
    let mut mantissa: u128 = 0;
    let mut kept = 0;
    let mut dropped: i32 = 0;
    let mut round_up = false;
    for d in digits.skip_while(|&d| d == b'0') {
        if kept < 38 {
            mantissa = mantissa * 10 + u128::from(d - b'0');
            kept += 1;
        } else {
            dropped = dropped.saturating_add(1);
            round_up |= d != b'0';
        }
    }
    (mantissa + u128::from(round_up), dropped)
}

/// `mantissa × 10^exponent × 2^exp2` as a mantissa and a power of ten, giving up the last
/// digits (rounded up) when the product does not fit.
fn times_power_of_two(
    mut mantissa: u128,
    mut exponent: i32,
    exp2: u32,
) -> Result<(u128, i32), QuantityError> {
    let factor = 1u128 << exp2;
    loop {
        if let Some(product) = mantissa.checked_mul(factor) {
            return Ok((product, exponent));
        }
        mantissa = mantissa.div_ceil(10);
        exponent = exponent.checked_add(1).ok_or(QuantityError::TooLarge)?;
    }
}

/// Rounds up to 1n as `ParseQuantity` does and strips trailing zeros.
fn normalize(
    negative: bool,
    mut mantissa: u128,
    mut exponent: i32,
) -> Result<Quantity, QuantityError> {
    if mantissa == 0 {
        return Ok(Quantity::ZERO);
    }
    if exponent < -9 {
        let shift = u32::try_from(-9i64 - i64::from(exponent)).unwrap_or(u32::MAX);
        mantissa = match 10u128.checked_pow(shift) {
            Some(divisor) => mantissa.div_ceil(divisor),
            None => 1,
        };
        exponent = -9;
    }
    while mantissa.is_multiple_of(10) {
        mantissa /= 10;
        exponent = exponent.checked_add(1).ok_or(QuantityError::TooLarge)?;
    }
    Ok(Quantity {
        negative,
        mantissa,
        exponent,
    })
}

/// The canonical text of a whole number, as `Quantity.String()` writes it in the decimal SI
/// format: trailing groups of three zeros become a suffix (`1000` is `"1k"`, `1500` stays
/// `"1500"`, `2000000` is `"2M"`).
pub fn canonical(value: i64) -> String {
    let sign = if value < 0 { "-" } else { "" };
    let mut magnitude = value.unsigned_abs();
    let mut group = 0;
    while magnitude != 0 && magnitude.is_multiple_of(1000) && group < 6 {
        magnitude /= 1000;
        group += 1;
    }
    let suffix = ["", "k", "M", "G", "T", "P", "E"][group];
    format!("{sign}{magnitude}{suffix}")
}

/// Whole-number weights in the ratio of the magnitudes of `quantities`, adding up to at most
/// [`MAX_TOTAL`]; 0 stays 0 and nothing else becomes 0.
///
/// The unit is the largest power of ten, 1 at most, that every quantity is a whole multiple
/// of (`"500m"` and `"1"` are 5 and 10; `"90"` and `"10"` stay 90 and 10), so the ratio
/// is exact. When the total does not fit, the weights are divided by their greatest common
/// divisor, and when it still does not fit, scaled down proportionally: each is rounded
/// down, and a positive weight is at least 1, so a share smaller than 1 in 2^32 grows to
/// that. Only the ratio has a meaning, so the unit is not recorded anywhere.
pub fn whole_weights(quantities: &[Quantity]) -> Vec<u64> {
    let positive = || quantities.iter().filter(|q| !q.is_zero());
    let Some(finest) = positive().map(|q| q.exponent).min() else {
        return vec![0; quantities.len()];
    };
    if let Some(exact) = scaled(quantities, finest.min(0)).filter(|w| fits(w)) {
        return narrow(&exact);
    }
    if let Some(mut exact) = scaled(quantities, finest) {
        let divisor = exact.iter().copied().fold(0, gcd);
        exact.iter_mut().for_each(|w| *w /= divisor.max(1));
        if fits(&exact) {
            return narrow(&exact);
        }
    }
    // Approximate: shares as fractions of the largest, in floating point, since the exact
    // values do not fit in 128 bits or their total in 32.
    let log = |q: &Quantity| (q.mantissa as f64).log10() + f64::from(q.exponent);
    let largest = positive().map(log).fold(f64::NEG_INFINITY, f64::max);
    let relative: Vec<f64> = quantities
        .iter()
        .map(|q| {
            if q.is_zero() {
                0.0
            } else {
                10f64.powf(log(q) - largest)
            }
        })
        .collect();
    let sum: f64 = relative.iter().sum();
    let count = positive().count() as u64;
    let budget = (MAX_TOTAL - count) as f64;
    quantities
        .iter()
        .zip(relative)
        .map(|(q, r)| {
            if q.is_zero() {
                0
            } else {
                // `as` saturates; the value is below `budget` anyway.
                ((r / sum * budget).floor() as u64).max(1)
            }
        })
        .collect()
}

/// Each magnitude as a whole number of `10^unit`, if they all fit.
fn scaled(quantities: &[Quantity], unit: i32) -> Option<Vec<u128>> {
    quantities
        .iter()
        .map(|q| {
            if q.is_zero() {
                return Some(0);
            }
            let shift = u32::try_from(i64::from(q.exponent) - i64::from(unit)).ok()?;
            q.mantissa.checked_mul(10u128.checked_pow(shift)?)
        })
        .collect()
}

fn fits(weights: &[u128]) -> bool {
    weights
        .iter()
        .try_fold(0u128, |sum, &w| sum.checked_add(w))
        .is_some_and(|total| total <= u128::from(MAX_TOTAL))
}

fn narrow(weights: &[u128]) -> Vec<u64> {
    weights
        .iter()
        .map(|&w| u64::try_from(w).unwrap_or(MAX_TOTAL))
        .collect()
}

fn gcd(a: u128, b: u128) -> u128 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Whether two lists of weights have the same ratio (and the same zeros).
pub fn same_ratio(a: &[u64], b: &[u64]) -> bool {
    if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| (*x == 0) != (*y == 0)) {
        return false;
    }
    let Some(pivot) = a.iter().position(|&x| x != 0) else {
        return true;
    };
    let (ap, bp) = (u128::from(a[pivot]), u128::from(b[pivot]));
    a.iter()
        .zip(b)
        .all(|(&x, &y)| u128::from(x) * bp == u128::from(y) * ap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(text: &str) -> Quantity {
        text.parse().unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn value(mantissa: u128, exponent: i32) -> Quantity {
        Quantity {
            negative: false,
            mantissa,
            exponent,
        }
    }

    #[test]
    fn every_suffix_reads() {
        for (text, m, e) in [
            ("1n", 1, -9),
            ("1500u", 15, -4),
            ("500m", 5, -1),
            ("1", 1, 0),
            ("2k", 2, 3),
            ("3M", 3, 6),
            ("4G", 4, 9),
            ("2T", 2, 12),
            ("5P", 5, 15),
            ("6E", 6, 18),
            ("1Ki", 1024, 0),
            ("1Mi", 1_048_576, 0),
            ("1Gi", 1 << 30, 0),
            ("1Ti", 1 << 40, 0),
            ("1Pi", 1 << 50, 0),
            ("1Ei", 1 << 60, 0),
            ("1.5Ki", 1536, 0),
            ("1e3", 1, 3),
            ("1E3", 1, 3),
            ("25e-1", 25, -1),
            ("1e+2", 1, 2),
            ("0.5", 5, -1),
            (".5", 5, -1),
            ("5.", 5, 0),
            ("+7", 7, 0),
            ("007.100", 71, -1),
            ("1e100", 1, 100),
        ] {
            assert_eq!(q(text), value(m, e), "{text}");
        }
        assert_eq!(q("0"), Quantity::ZERO);
        assert_eq!(q("0.000Ki"), Quantity::ZERO);
        assert_eq!(q("-0"), Quantity::ZERO);
        let minus = q("-10m");
        assert!(minus.negative);
        assert_eq!(minus.magnitude(), value(1, -2));
    }

    #[test]
    fn values_finer_than_a_nano_round_up_to_one() {
        assert_eq!(q("0.1n"), value(1, -9));
        assert_eq!(q("1.0000000001"), value(1_000_000_001, -9));
        assert_eq!(q("1e-30"), value(1, -9));
        assert_eq!(q("1e-2000000000"), value(1, -9));
    }

    #[test]
    fn long_mantissas_keep_38_digits_rounded_up() {
        let long = format!("1{}1", "0".repeat(40));
        assert_eq!(q(&long), value(10u128.pow(37) + 1, 4));
        let tail_zeros = format!("1{}", "0".repeat(60));
        assert_eq!(q(&tail_zeros), value(1, 60));
        assert_eq!(q(&format!("{}Ei", "9".repeat(38))), value(1 << 60, 38));
    }

    #[test]
    fn malformed_quantities_are_errors() {
        for text in [
            "", "+", "-", ".", "m", "1K", "1k1", "1 k", "1e", "1e1.5", "1ee3", "1Ki1", "abc",
            "1,5", " 1", "1e+", "0x10",
        ] {
            assert!(text.parse::<Quantity>().is_err(), "{text:?}");
        }
        assert_eq!(
            "1Q".parse::<Quantity>(),
            Err(QuantityError::Suffix("Q".into()))
        );
        assert_eq!(
            "1e99999999999".parse::<Quantity>(),
            Err(QuantityError::TooLarge)
        );
    }

    #[test]
    fn canonical_whole_numbers() {
        assert_eq!(canonical(0), "0");
        assert_eq!(canonical(1), "1");
        assert_eq!(canonical(1000), "1k");
        assert_eq!(canonical(1500), "1500");
        assert_eq!(canonical(2_000_000), "2M");
        assert_eq!(canonical(-10_000), "-10k");
        assert_eq!(canonical(9_000_000_000_000_000_000), "9E");
        assert_eq!(canonical(i64::MIN), "-9223372036854775808");
        for n in [0, 1, 999, 1000, 1500, 2_000_000, 7_000_000_000_000] {
            assert_eq!(
                whole_weights(&[q(&canonical(n))]),
                whole_weights(&[Quantity::from_int(n.into()).unwrap()])
            );
        }
    }

    fn weights(texts: &[&str]) -> Vec<u64> {
        whole_weights(&texts.iter().map(|t| q(t)).collect::<Vec<_>>())
    }

    #[test]
    fn weights_keep_the_ratio_in_the_coarsest_unit_up_to_one() {
        assert_eq!(weights(&["500m", "1"]), vec![5, 10]);
        assert_eq!(weights(&["250m", "1"]), vec![25, 100]);
        assert_eq!(weights(&["90", "10"]), vec![90, 10]);
        assert_eq!(weights(&["1500u", "1"]), vec![15, 10000]);
        assert_eq!(weights(&["1n", "2n"]), vec![1, 2]);
        assert_eq!(weights(&["1Ki", "1k"]), vec![1024, 1000]);
        assert_eq!(weights(&["1e3", "0"]), vec![1000, 0]);
        assert_eq!(weights(&["0", "0"]), vec![0, 0]);
        assert_eq!(weights(&[]), Vec::<u64>::new());
    }

    #[test]
    fn large_weights_are_reduced_by_their_common_divisor() {
        assert_eq!(weights(&["2T", "1T"]), vec![2, 1]);
        assert_eq!(weights(&["1Ti", "1Gi"]), vec![1024, 1]);
        assert_eq!(weights(&["1e100", "3e100"]), vec![1, 3]);
        assert_eq!(weights(&["1Ei", "1Ei"]), vec![1, 1]);
    }

    #[test]
    fn weights_beyond_32_bits_are_scaled_and_never_reach_zero() {
        let w = weights(&["1E", "1", "0"]);
        assert_eq!(w[2], 0);
        assert_eq!(w[1], 1, "a tiny positive share stays positive");
        assert!(w.iter().sum::<u64>() <= MAX_TOTAL, "{w:?}");
        assert!(w[0] > 4_000_000_000, "{w:?}");
        let w = weights(&["3e100", "1e100", "1n"]);
        assert!(w.iter().sum::<u64>() <= MAX_TOTAL, "{w:?}");
        assert_eq!(w[2], 1);
        // Three to one within one part in 10^9.
        let ratio = w[0] as f64 / w[1] as f64;
        assert!((ratio - 3.0).abs() < 1e-8, "{w:?}");
        let w = weights(&["4294967295", "4294967295"]);
        assert_eq!(w, vec![1, 1]);
        let w = weights(&["4294967295", "4294967294"]);
        assert!(w.iter().sum::<u64>() <= MAX_TOTAL, "{w:?}");
        assert!(w[0] >= w[1] && w[1] > 2_000_000_000, "{w:?}");
    }

    #[test]
    fn ratios_compare_by_cross_multiplication() {
        assert!(same_ratio(&[90, 10], &[9, 1]));
        assert!(same_ratio(&[0, 3], &[0, 1]));
        assert!(same_ratio(&[0, 0], &[0, 0]));
        assert!(!same_ratio(&[1, 2], &[2, 1]));
        assert!(!same_ratio(&[1, 0], &[1, 1]));
        assert!(!same_ratio(&[1], &[1, 1]));
    }
}

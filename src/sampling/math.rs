//! The little floating-point the sampler needs, without `std` or libm: the natural logarithm
//! (to draw exponential intervals) and `exp` (to turn a sample into the count and bytes it
//! stands for). Accurate to about 1e-7 relative, far below the sampling noise.
//!
//! Layer: `sampling`; calls nothing.

const LN_2: f64 = core::f64::consts::LN_2;

/// `ln(x)` for a finite `x > 0`.
pub(crate) fn ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_finite());
    let bits = x.to_bits();
    let mut exponent = ((bits >> 52) & 0x7ff) as i64 - 1023;
    // The mantissa as a number in [1, 2) (subnormals: scaled up first).
    let mut mantissa = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if exponent == -1023 {
        return ln(x * (1u64 << 54) as f64) - 54.0 * LN_2;
    }
    // Centre on 1: ln over [1/sqrt 2, sqrt 2) converges fastest.
    if mantissa > core::f64::consts::SQRT_2 {
        mantissa /= 2.0;
        exponent += 1;
    }
    // ln(m) = 2 atanh(t), t = (m - 1) / (m + 1), |t| < 0.172.
    let t = (mantissa - 1.0) / (mantissa + 1.0);
    let t2 = t * t;
    let series = 1.0 + t2 * (1.0 / 3.0 + t2 * (1.0 / 5.0 + t2 * (1.0 / 7.0 + t2 / 9.0)));
    2.0 * t * series + exponent as f64 * LN_2
}

/// `exp(-x)` for `x >= 0`.
pub(crate) fn exp_neg(x: f64) -> f64 {
    debug_assert!(x >= 0.0);
    if x > 745.0 {
        return 0.0;
    }
    // x = k ln 2 + r, 0 <= r < ln 2: exp(-x) = 2^-k exp(-r).
    let k = (x / LN_2) as i32;
    let r = x - k as f64 * LN_2;
    // The Taylor series to the 12th term, multiplying by 1/n (a division per term would
    // cost the sample more than the rest of the series).
    const INVERSES: [f64; 12] = {
        let mut inverses = [0.0; 12];
        let mut n = 0;
        while n < 12 {
            inverses[n] = 1.0 / (n + 1) as f64;
            n += 1;
        }
        inverses
    };
    let mut term = 1.0;
    let mut sum = 1.0;
    for inverse in INVERSES {
        term *= -r * inverse;
        sum += term;
    }
    sum * f64::from_bits(((1023 - k as i64).max(1) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_agrees_with_std() {
        for x in [
            1e-300, 1e-20, 1e-9, 0.001, 0.3, 0.5, 0.7, 0.9999, 1.0, 1.5, 2.0, 1e9,
        ] {
            let (ours, std) = (ln(x), x.ln());
            assert!(
                (ours - std).abs() <= 1e-7 * std.abs().max(1.0),
                "ln({x}): {ours} vs {std}"
            );
        }
    }

    #[test]
    fn exp_neg_agrees_with_std() {
        for x in [0.0, 1e-9, 1e-3, 0.25, 0.69, 1.0, 3.7, 20.0, 700.0] {
            let (ours, std) = (exp_neg(x), (-x).exp());
            assert!(
                (ours - std).abs() <= 1e-9 * std.max(1e-300),
                "exp(-{x}): {ours} vs {std}"
            );
        }
        assert_eq!(exp_neg(1000.0), 0.0);
    }
}

//! Exact angles: `π·(pi_num/pi_den) + rad_num/rad_den`.
//!
//! Invariants (held by every constructor, checked again by the decoder):
//! - both denominators are nonzero;
//! - both fractions are reduced (`gcd(|num|, den) == 1`), and a zero numerator has
//!   denominator 1, so equal values have equal representations and equal bytes.
//!
//! Arithmetic runs in `i128` and fails with [`JobError::AngleOverflow`] when a result
//! does not fit back into `i64`/`u64`. A product of two angles that both carry a π
//! part would need a π² term, which this form cannot hold: that is
//! [`JobError::AngleNotExact`]. There is no floating point in this crate; the device
//! simulator converts to `f64`.

use super::JobError;

/// A reduced fraction `num/den`, `den > 0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Ratio {
    num: i64,
    den: u64,
}

const fn gcd_u128(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        let t = a % b;
        a = b;
        b = t;
    }
    a
}

impl Ratio {
    const ZERO: Ratio = Ratio { num: 0, den: 1 };

    /// Reduces `num/den` (`den != 0`, either sign) and fits it into `i64/u64`.
    fn from_i128(num: i128, den: i128) -> Result<Ratio, JobError> {
        if den == 0 {
            return Err(JobError::AngleZeroDenominator);
        }
        if num == 0 {
            return Ok(Ratio::ZERO);
        }
        let negative = (num < 0) != (den < 0);
        let n = num.unsigned_abs();
        let d = den.unsigned_abs();
        let g = gcd_u128(n, d);
        let (n, d) = (n / g, d / g);
        let den = u64::try_from(d).map_err(|_| JobError::AngleOverflow)?;
        let num = if negative {
            // -(2^63) is representable; anything larger in magnitude is not.
            0i128
                .checked_sub(i128::try_from(n).map_err(|_| JobError::AngleOverflow)?)
                .and_then(|v| i64::try_from(v).ok())
                .ok_or(JobError::AngleOverflow)?
        } else {
            i64::try_from(n).map_err(|_| JobError::AngleOverflow)?
        };
        debug_assert!(den > 0);
        Ok(Ratio { num, den })
    }

    fn new(num: i64, den: u64) -> Result<Ratio, JobError> {
        Ratio::from_i128(i128::from(num), i128::from(den))
    }

    fn is_reduced(num: i64, den: u64) -> bool {
        den != 0
            && if num == 0 {
                den == 1
            } else {
                gcd_u128(u128::from(num.unsigned_abs()), u128::from(den)) == 1
            }
    }

    fn add(self, o: Ratio) -> Result<Ratio, JobError> {
        let a = i128::from(self.num)
            .checked_mul(i128::from(o.den))
            .ok_or(JobError::AngleOverflow)?;
        let b = i128::from(o.num)
            .checked_mul(i128::from(self.den))
            .ok_or(JobError::AngleOverflow)?;
        let n = a.checked_add(b).ok_or(JobError::AngleOverflow)?;
        let d = i128::from(self.den)
            .checked_mul(i128::from(o.den))
            .ok_or(JobError::AngleOverflow)?;
        Ratio::from_i128(n, d)
    }

    fn mul(self, o: Ratio) -> Result<Ratio, JobError> {
        let n = i128::from(self.num)
            .checked_mul(i128::from(o.num))
            .ok_or(JobError::AngleOverflow)?;
        let d = i128::from(self.den)
            .checked_mul(i128::from(o.den))
            .ok_or(JobError::AngleOverflow)?;
        Ratio::from_i128(n, d)
    }

    fn recip(self) -> Result<Ratio, JobError> {
        if self.num == 0 {
            return Err(JobError::AngleDivisionByZero);
        }
        Ratio::from_i128(i128::from(self.den), i128::from(self.num))
    }

    fn neg(self) -> Result<Ratio, JobError> {
        Ratio::from_i128(-i128::from(self.num), i128::from(self.den))
    }
}

/// An exact angle `π·(pi_num/pi_den) + rad_num/rad_den` radians.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Angle {
    pi: Ratio,
    rad: Ratio,
}

impl Default for Angle {
    fn default() -> Angle {
        Angle::ZERO
    }
}

impl Angle {
    /// Zero radians.
    pub const ZERO: Angle = Angle {
        pi: Ratio::ZERO,
        rad: Ratio::ZERO,
    };
    /// π radians.
    pub const PI: Angle = Angle {
        pi: Ratio { num: 1, den: 1 },
        rad: Ratio::ZERO,
    };

    /// `π·(pi_num/pi_den) + rad_num/rad_den`, reduced. Fails on a zero denominator.
    pub fn new(pi_num: i64, pi_den: u64, rad_num: i64, rad_den: u64) -> Result<Angle, JobError> {
        Ok(Angle {
            pi: Ratio::new(pi_num, pi_den)?,
            rad: Ratio::new(rad_num, rad_den)?,
        })
    }

    /// `π·num/den`.
    pub fn pi_frac(num: i64, den: u64) -> Result<Angle, JobError> {
        Angle::new(num, den, 0, 1)
    }

    /// `num/den` radians (no π part).
    pub fn rational(num: i64, den: u64) -> Result<Angle, JobError> {
        Angle::new(0, 1, num, den)
    }

    /// The exact form of a decimal literal `digits · 10^exp10` radians, e.g. `0.25`
    /// is `(25, -2)`. Fails with [`JobError::AngleOverflow`] when it does not fit.
    pub fn decimal(digits: u64, exp10: i32) -> Result<Angle, JobError> {
        let num = i64::try_from(digits).map_err(|_| JobError::AngleOverflow)?;
        let mut pow: u64 = 1;
        for _ in 0..exp10.unsigned_abs() {
            pow = pow.checked_mul(10).ok_or(JobError::AngleOverflow)?;
        }
        if exp10 >= 0 {
            let n = num
                .checked_mul(i64::try_from(pow).map_err(|_| JobError::AngleOverflow)?)
                .ok_or(JobError::AngleOverflow)?;
            Angle::rational(n, 1)
        } else {
            Angle::rational(num, pow)
        }
    }

    /// Numerator of the π part.
    pub fn pi_num(&self) -> i64 {
        self.pi.num
    }
    /// Denominator of the π part (nonzero).
    pub fn pi_den(&self) -> u64 {
        self.pi.den
    }
    /// Numerator of the rational-radian part.
    pub fn rad_num(&self) -> i64 {
        self.rad.num
    }
    /// Denominator of the rational-radian part (nonzero).
    pub fn rad_den(&self) -> u64 {
        self.rad.den
    }

    /// True when the angle has no π part (a plain rational number).
    pub fn is_rational(&self) -> bool {
        self.pi.num == 0
    }

    /// `self + o`.
    pub fn checked_add(self, o: Angle) -> Result<Angle, JobError> {
        Ok(Angle {
            pi: self.pi.add(o.pi)?,
            rad: self.rad.add(o.rad)?,
        })
    }

    /// `-self`.
    pub fn checked_neg(self) -> Result<Angle, JobError> {
        Ok(Angle {
            pi: self.pi.neg()?,
            rad: self.rad.neg()?,
        })
    }

    /// `self - o`.
    pub fn checked_sub(self, o: Angle) -> Result<Angle, JobError> {
        self.checked_add(o.checked_neg()?)
    }

    /// `self · o`; one side must be rational (no π part), else the π² term makes
    /// the product inexact.
    pub fn checked_mul(self, o: Angle) -> Result<Angle, JobError> {
        let (scalar, a) = if o.is_rational() {
            (o.rad, self)
        } else if self.is_rational() {
            (self.rad, o)
        } else {
            return Err(JobError::AngleNotExact);
        };
        Ok(Angle {
            pi: a.pi.mul(scalar)?,
            rad: a.rad.mul(scalar)?,
        })
    }

    /// `self / o`; the divisor must be a nonzero rational.
    pub fn checked_div(self, o: Angle) -> Result<Angle, JobError> {
        if !o.is_rational() {
            return Err(JobError::AngleNotExact);
        }
        let r = o.rad.recip()?;
        Ok(Angle {
            pi: self.pi.mul(r)?,
            rad: self.rad.mul(r)?,
        })
    }

    /// The decoder's check: both denominators nonzero and both fractions reduced.
    pub(crate) fn from_raw(
        pi_num: i64,
        pi_den: u64,
        rad_num: i64,
        rad_den: u64,
    ) -> Result<Angle, JobError> {
        if pi_den == 0 || rad_den == 0 {
            return Err(JobError::AngleZeroDenominator);
        }
        if !Ratio::is_reduced(pi_num, pi_den) || !Ratio::is_reduced(rad_num, rad_den) {
            return Err(JobError::AngleNotReduced);
        }
        Ok(Angle {
            pi: Ratio {
                num: pi_num,
                den: pi_den,
            },
            rad: Ratio {
                num: rad_num,
                den: rad_den,
            },
        })
    }
}

impl core::fmt::Display for Angle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // QASM-compatible text: `pi*(a)/(b) + (c)/(d)`; `(a)` keeps signs valid.
        write!(
            f,
            "pi*({})/{} + ({})/{}",
            self.pi.num, self.pi.den, self.rad.num, self.rad.den
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_reduce() {
        let a = Angle::new(2, 4, -6, 8).unwrap();
        assert_eq!(
            (a.pi_num(), a.pi_den(), a.rad_num(), a.rad_den()),
            (1, 2, -3, 4)
        );
        let z = Angle::new(0, 7, 0, 9).unwrap();
        assert_eq!(z, Angle::ZERO);
        assert_eq!(Angle::new(1, 0, 0, 1), Err(JobError::AngleZeroDenominator));
    }

    #[test]
    fn arithmetic_is_exact() {
        let quarter = Angle::pi_frac(1, 4).unwrap();
        let half = quarter.checked_add(quarter).unwrap();
        assert_eq!(half, Angle::pi_frac(1, 2).unwrap());
        let two = Angle::rational(2, 1).unwrap();
        assert_eq!(half.checked_div(two).unwrap(), quarter);
        assert_eq!(quarter.checked_mul(two).unwrap(), half);
        assert_eq!(half.checked_mul(half), Err(JobError::AngleNotExact));
        assert_eq!(half.checked_div(half), Err(JobError::AngleNotExact));
        assert_eq!(
            half.checked_div(Angle::ZERO),
            Err(JobError::AngleDivisionByZero)
        );
        assert_eq!(half.checked_sub(half).unwrap(), Angle::ZERO);
        assert_eq!(
            Angle::decimal(25, -2).unwrap(),
            Angle::rational(1, 4).unwrap()
        );
        assert_eq!(
            Angle::decimal(1, 3).unwrap(),
            Angle::rational(1000, 1).unwrap()
        );
    }

    #[test]
    fn overflow_is_reported() {
        let big = Angle::rational(i64::MAX, 1).unwrap();
        assert_eq!(big.checked_add(big), Err(JobError::AngleOverflow));
        let tiny = Angle::rational(1, u64::MAX).unwrap();
        assert_eq!(
            tiny.checked_mul(Angle::rational(1, 3).unwrap()),
            Err(JobError::AngleOverflow)
        );
        assert_eq!(Angle::decimal(1, 40), Err(JobError::AngleOverflow));
        // -(2^63) is representable, its negation is not.
        let min = Angle::rational(i64::MIN, 1).unwrap();
        assert_eq!(min.checked_neg(), Err(JobError::AngleOverflow));
    }

    #[test]
    fn raw_form_must_be_reduced() {
        assert_eq!(Angle::from_raw(2, 4, 0, 1), Err(JobError::AngleNotReduced));
        assert_eq!(Angle::from_raw(0, 2, 0, 1), Err(JobError::AngleNotReduced));
        assert_eq!(
            Angle::from_raw(0, 1, 0, 0),
            Err(JobError::AngleZeroDenominator)
        );
        assert_eq!(
            Angle::from_raw(1, 2, -3, 4).unwrap(),
            Angle::new(1, 2, -3, 4).unwrap()
        );
    }
}

//! PostgreSQL `numeric` (what `sum(bigint)` and `avg` return) read from its
//! binary form: base-10000 digits with a weight and a display scale.

use std::error::Error;

use tokio_postgres::types::{FromSql, Type};

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Numeric {
    pub value: f64,
    /// The exact value when it is a whole number that fits in 64 bits.
    pub integer: Option<i64>,
}

impl<'a> FromSql<'a> for Numeric {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let word = |index: usize| -> Result<i16, Box<dyn Error + Sync + Send>> {
            raw.get(index * 2..index * 2 + 2)
                .map(|b| i16::from_be_bytes([b[0], b[1]]))
                .ok_or_else(|| "truncated numeric".into())
        };
        let digits = usize::try_from(word(0)?).map_err(|_| "negative digit count")?;
        let weight = i32::from(word(1)?);
        let sign = word(2)? as u16;
        let scale = word(3)?;
        match sign {
            0xC000 => {
                return Ok(Self {
                    value: f64::NAN,
                    integer: None,
                })
            }
            0xD000 => {
                return Ok(Self {
                    value: f64::INFINITY,
                    integer: None,
                })
            }
            0xF000 => {
                return Ok(Self {
                    value: f64::NEG_INFINITY,
                    integer: None,
                })
            }
            _ => {}
        }
        let negative = sign == 0x4000;
        let mut value = 0.0_f64;
        let mut exact: Option<i128> = Some(0);
        for index in 0..digits {
            let digit = word(4 + index)?;
            let power = weight - i32::try_from(index).unwrap_or(i32::MAX);
            value += f64::from(digit) * 10_000_f64.powi(power);
            exact = match exact {
                Some(so_far) if power >= 0 => 10_000_i128
                    .checked_pow(u32::try_from(power).unwrap_or(u32::MAX))
                    .and_then(|p| p.checked_mul(i128::from(digit)))
                    .and_then(|term| so_far.checked_add(term)),
                Some(so_far) if digit == 0 => Some(so_far),
                _ => None,
            };
        }
        if negative {
            value = -value;
            exact = exact.map(|v| -v);
        }
        let integer = if scale == 0 {
            exact.and_then(|v| i64::try_from(v).ok())
        } else {
            None
        };
        Ok(Self { value, integer })
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(digits: &[i16], weight: i16, negative: bool, scale: i16) -> Vec<u8> {
        let mut out = Vec::new();
        for word in [
            digits.len() as i16,
            weight,
            if negative { 0x4000 } else { 0 },
            scale,
        ] {
            out.extend_from_slice(&word.to_be_bytes());
        }
        for digit in digits {
            out.extend_from_slice(&digit.to_be_bytes());
        }
        out
    }

    #[test]
    fn reads_integers_and_fractions() {
        let big = Numeric::from_sql(&Type::NUMERIC, &encode(&[12, 3456, 7890], 2, false, 0))
            .expect("numeric");
        assert_eq!(big.integer, Some(12_3456_7890));
        let half =
            Numeric::from_sql(&Type::NUMERIC, &encode(&[1, 5000], 0, true, 1)).expect("numeric");
        assert_eq!((half.value, half.integer), (-1.5, None));
        let round = Numeric::from_sql(&Type::NUMERIC, &encode(&[2], 1, false, 0)).expect("numeric");
        assert_eq!(round.integer, Some(20_000));
        let zero = Numeric::from_sql(&Type::NUMERIC, &encode(&[], 0, false, 0)).expect("numeric");
        assert_eq!(zero.integer, Some(0));
    }
}

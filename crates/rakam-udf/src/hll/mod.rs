//! A mergeable HyperLogLog sketch for approximate distinct counts that are
//! kept between queries (continuous queries store one per group and merge
//! them at read time). DataFusion's own `approx_distinct` cannot be stored:
//! its hash is seeded per build and its state is not a value.
//!
//! - `rakam_hll_sketch(x)` → the sketch (binary) of the non-null values;
//! - `rakam_hll_merge(sketch)` → the union of sketches;
//! - `rakam_hll_estimate(sketch)` → the estimated distinct count (UInt64).
//!
//! Precision 12 (4,096 registers, a standard error of about 1.6 %). The
//! hash (XXH64 of a canonical encoding) is fixed, so sketches written by
//! one version or process merge with those of another; an integral float
//! hashes as the integer, so a column widened from BIGINT to DOUBLE keeps
//! counting the same values once. The estimate depends only on the
//! register values, never on how or in which order sketches were merged.

mod groups;
mod hash;
mod udf;

use std::collections::BTreeMap;

use datafusion::arrow::array::ArrayRef;
use datafusion::common::{exec_err, Result};

pub use udf::{sketch_array, udfs, EstimateUdf, SketchUdaf};

const PRECISION: u32 = 12;
const REGISTERS: usize = 1 << PRECISION;
/// Beyond this many set registers the dense form (one byte each) is smaller.
const SPARSE_MAX: usize = REGISTERS / 3;
const SPARSE_TAG: u8 = 1;
const DENSE_TAG: u8 = 2;

type Registers = [u8; REGISTERS];

/// The register a hash falls in, and the rank it sets there.
fn position(hash: u64) -> (usize, u8) {
    let index = (hash >> (64 - PRECISION)) as usize;
    let rest = (hash << PRECISION) | (1 << (PRECISION - 1));
    (index, rest.leading_zeros() as u8 + 1)
}

/// The largest rank a register can hold.
const MAX_RANK: u8 = 64 - PRECISION as u8 + 1;

/// A sketch's bytes from its registers: sparse while few are set.
fn registers_to_bytes(registers: &Registers) -> Vec<u8> {
    let set = registers.iter().filter(|rank| **rank > 0).count();
    if set > SPARSE_MAX {
        let mut bytes = Vec::with_capacity(1 + REGISTERS);
        bytes.push(DENSE_TAG);
        bytes.extend_from_slice(registers);
        return bytes;
    }
    let mut bytes = Vec::with_capacity(1 + set * 3);
    bytes.push(SPARSE_TAG);
    for (index, rank) in registers.iter().enumerate() {
        if *rank > 0 {
            bytes.extend_from_slice(&(index as u16).to_le_bytes());
            bytes.push(*rank);
        }
    }
    bytes
}

/// Merges a sketch's bytes into `registers` (the larger rank wins).
fn merge_bytes_into(bytes: &[u8], registers: &mut Registers) -> Result<()> {
    match bytes.split_first() {
        Some((&SPARSE_TAG, rest)) if rest.len() % 3 == 0 => {
            for entry in rest.chunks_exact(3) {
                let index = usize::from(u16::from_le_bytes([entry[0], entry[1]]));
                let (Some(slot), true) = (registers.get_mut(index), entry[2] <= MAX_RANK) else {
                    return exec_err!("not a Rakam HLL sketch: register out of range");
                };
                *slot = (*slot).max(entry[2]);
            }
            Ok(())
        }
        Some((&DENSE_TAG, rest)) if rest.len() == REGISTERS => {
            if rest.iter().any(|rank| *rank > MAX_RANK) {
                return exec_err!("not a Rakam HLL sketch: register out of range");
            }
            for (slot, rank) in registers.iter_mut().zip(rest) {
                *slot = (*slot).max(*rank);
            }
            Ok(())
        }
        _ => exec_err!("not a Rakam HLL sketch ({} bytes)", bytes.len()),
    }
}

/// The registers of one sketch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sketch {
    /// Only the set registers, by index.
    Sparse(BTreeMap<u16, u8>),
    Dense(Box<[u8; REGISTERS]>),
}

impl Default for Sketch {
    fn default() -> Self {
        Self::Sparse(BTreeMap::new())
    }
}

impl Sketch {
    pub fn add_hash(&mut self, hash: u64) {
        let (index, rank) = position(hash);
        self.set(index as u16, rank);
    }

    fn set(&mut self, index: u16, rank: u8) {
        match self {
            Self::Dense(registers) => {
                let slot = &mut registers[usize::from(index)];
                *slot = (*slot).max(rank);
            }
            Self::Sparse(set) => {
                let slot = set.entry(index).or_insert(0);
                *slot = (*slot).max(rank);
                if set.len() > SPARSE_MAX {
                    let mut dense = Box::new([0_u8; REGISTERS]);
                    for (index, rank) in set.iter() {
                        dense[usize::from(*index)] = *rank;
                    }
                    *self = Self::Dense(dense);
                }
            }
        }
    }

    pub fn merge(&mut self, other: &Sketch) {
        match other {
            Self::Sparse(set) => {
                for (index, rank) in set {
                    self.set(*index, *rank);
                }
            }
            Self::Dense(registers) => {
                for (index, rank) in registers.iter().enumerate() {
                    if *rank > 0 {
                        self.set(index as u16, *rank);
                    }
                }
            }
        }
    }

    /// The estimated number of distinct values added: Ertl's improved
    /// estimator ("New cardinality estimation algorithms for HyperLogLog
    /// sketches", 2017), without the bias of the classic one between small
    /// and large counts; DataFusion's `approx_distinct` uses it too.
    pub fn estimate(&self) -> u64 {
        const Q: usize = 64 - PRECISION as usize;
        let mut histogram = [0_u32; Q + 2];
        match self {
            Self::Dense(registers) => {
                for rank in registers.iter() {
                    histogram[usize::from(*rank).min(Q + 1)] += 1;
                }
            }
            Self::Sparse(set) => {
                let mut set_registers = 0;
                for rank in set.values() {
                    histogram[usize::from(*rank).min(Q + 1)] += 1;
                    set_registers += 1;
                }
                histogram[0] += (REGISTERS - set_registers) as u32;
            }
        }
        let m = REGISTERS as f64;
        let mut z = m * tau((m - f64::from(histogram[Q + 1])) / m);
        for count in histogram[1..=Q].iter().rev() {
            z += f64::from(*count);
            z *= 0.5;
        }
        z += m * sigma(f64::from(histogram[0]) / m);
        (0.5 / std::f64::consts::LN_2 * m * m / z).round() as u64
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        match self {
            Self::Sparse(set) => {
                let mut bytes = Vec::with_capacity(1 + set.len() * 3);
                bytes.push(SPARSE_TAG);
                for (index, rank) in set {
                    bytes.extend_from_slice(&index.to_le_bytes());
                    bytes.push(*rank);
                }
                bytes
            }
            Self::Dense(registers) => {
                let mut bytes = Vec::with_capacity(1 + REGISTERS);
                bytes.push(DENSE_TAG);
                bytes.extend_from_slice(&registers[..]);
                bytes
            }
        }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let too_high = |rank: u8| rank > MAX_RANK;
        match bytes.split_first() {
            Some((&SPARSE_TAG, rest)) if rest.len() % 3 == 0 => {
                let mut set = BTreeMap::new();
                for entry in rest.chunks_exact(3) {
                    let index = u16::from_le_bytes([entry[0], entry[1]]);
                    if usize::from(index) >= REGISTERS || too_high(entry[2]) {
                        return exec_err!("not a Rakam HLL sketch: register out of range");
                    }
                    set.insert(index, entry[2]);
                }
                let mut sketch = Self::Sparse(BTreeMap::new());
                sketch.merge(&Self::Sparse(set));
                Ok(sketch)
            }
            Some((&DENSE_TAG, rest)) if rest.len() == REGISTERS => {
                if rest.iter().any(|rank| too_high(*rank)) {
                    return exec_err!("not a Rakam HLL sketch: register out of range");
                }
                let mut registers = Box::new([0_u8; REGISTERS]);
                registers.copy_from_slice(rest);
                Ok(Self::Dense(registers))
            }
            _ => exec_err!("not a Rakam HLL sketch ({} bytes)", bytes.len()),
        }
    }

    /// Adds every non-null value of `values`.
    pub fn add_array(&mut self, values: &ArrayRef) -> Result<()> {
        hash::each_hash(values, |_, hash| self.add_hash(hash))
    }
}

/// Ertl's σ: the correction for registers still at zero.
fn sigma(x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut x, mut y, mut z) = (x, 1.0, x);
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

/// Ertl's τ: the correction for registers at their largest rank.
fn tau(x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut x, mut y, mut z) = (x, 1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array};

    use super::*;

    fn sketch_of(values: ArrayRef) -> Sketch {
        let mut sketch = Sketch::default();
        sketch.add_array(&values).expect("add");
        sketch
    }

    #[test]
    fn estimates_within_a_few_percent() {
        for n in [0_i64, 1, 10, 1_000, 5_000, 12_000, 20_000, 50_000, 400_000] {
            let sketch = sketch_of(Arc::new(Int64Array::from_iter_values(0..n)));
            let estimate = sketch.estimate() as f64;
            let error = (estimate - n as f64).abs() / (n.max(1) as f64);
            assert!(error < 0.05, "n={n}: estimate {estimate}");
        }
    }

    #[test]
    fn merging_in_any_order_gives_the_same_registers_and_estimate() {
        let parts: Vec<Sketch> = (0..6)
            .map(|part| {
                sketch_of(Arc::new(Int64Array::from_iter_values(
                    (part * 700)..(part * 700 + 1_500),
                )))
            })
            .collect();
        let whole = sketch_of(Arc::new(Int64Array::from_iter_values(0..(5 * 700 + 1_500))));
        let mut forward = Sketch::default();
        parts.iter().for_each(|p| forward.merge(p));
        let mut backward = Sketch::default();
        parts.iter().rev().for_each(|p| backward.merge(p));
        assert_eq!(forward.estimate(), whole.estimate());
        assert_eq!(backward.estimate(), whole.estimate());
        let reread = Sketch::from_bytes(&forward.to_bytes()).expect("bytes");
        assert_eq!(reread.estimate(), whole.estimate());
    }

    #[test]
    fn integral_floats_count_as_their_integers() {
        let ints = sketch_of(Arc::new(Int64Array::from_iter_values(0..100)));
        let floats = sketch_of(Arc::new(Float64Array::from_iter_values(
            (0..100).map(|v| v as f64),
        )));
        assert_eq!(ints, floats);
    }

    #[test]
    fn damaged_sketches_are_errors_not_panics() {
        for bytes in [&[][..], &[1, 0], &[2, 1, 2], &[1, 0xff, 0xff, 3], &[9]] {
            assert!(Sketch::from_bytes(bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn grouped_sketches_equal_one_sketch_per_group() {
        use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
        let values: ArrayRef = Arc::new(Int64Array::from_iter_values(0..3_000));
        let groups: Vec<usize> = (0..3_000).map(|v| v % 3).collect();
        let mut grouped = groups::SketchGroups::new(false);
        grouped
            .update_batch(&[values], &groups, None, 3)
            .expect("update");
        let states = grouped.state(EmitTo::All).expect("state");
        let mut merged = groups::SketchGroups::new(true);
        merged.merge_batch(&states, &[0, 1, 2], 3).expect("merge");
        let out = merged.evaluate(EmitTo::All).expect("evaluate");
        let out = out
            .as_any()
            .downcast_ref::<datafusion::arrow::array::BinaryArray>()
            .expect("binary");
        for group in 0..3_i64 {
            let alone = sketch_of(Arc::new(Int64Array::from_iter_values(
                (0..3_000).filter(|v| v % 3 == group),
            )));
            let read = Sketch::from_bytes(out.value(group as usize)).expect("bytes");
            assert_eq!(read.estimate(), alone.estimate(), "group {group}");
        }
    }
}

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

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BinaryBuilder, StringArray, UInt64Array,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, ColumnarValue, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, TypeSignature, Volatility,
};
use twox_hash::XxHash64;

const PRECISION: u32 = 12;
const REGISTERS: usize = 1 << PRECISION;
/// Beyond this many set registers the dense form (one byte each) is smaller.
const SPARSE_MAX: usize = REGISTERS / 3;
const SPARSE_TAG: u8 = 1;
const DENSE_TAG: u8 = 2;
const SEED: u64 = 0x5241_4b41_4d48_4c4c;

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
        let index = (hash >> (64 - PRECISION)) as u16;
        let rest = (hash << PRECISION) | (1 << (PRECISION - 1));
        let rank = rest.leading_zeros() as u8 + 1;
        self.set(index, rank);
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
        let too_high = |rank: u8| rank > 64 - PRECISION as u8 + 1;
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
        let mut buffer = Vec::with_capacity(32);
        macro_rules! integers {
            ($type:ty) => {
                for value in values.as_primitive::<$type>().iter().flatten() {
                    self.add_hash(hash_integer(i128::from(value), &mut buffer));
                }
            };
        }
        macro_rules! floats {
            ($type:ty) => {
                for value in values.as_primitive::<$type>().iter().flatten() {
                    self.add_hash(hash_float(f64::from(value), &mut buffer));
                }
            };
        }
        match values.data_type() {
            DataType::Int8 => integers!(Int8Type),
            DataType::Int16 => integers!(Int16Type),
            DataType::Int32 => integers!(Int32Type),
            DataType::Int64 => integers!(Int64Type),
            DataType::UInt8 => integers!(UInt8Type),
            DataType::UInt16 => integers!(UInt16Type),
            DataType::UInt32 => integers!(UInt32Type),
            DataType::UInt64 => integers!(UInt64Type),
            DataType::Float32 => floats!(Float32Type),
            DataType::Float64 => floats!(Float64Type),
            DataType::Boolean => {
                for value in values.as_boolean().iter().flatten() {
                    self.add_hash(hash_tagged(TAG_BOOL, &[u8::from(value)], &mut buffer));
                }
            }
            DataType::Null => {}
            _ => {
                let text = cast(values, &DataType::Utf8)?;
                let text: &StringArray = text.as_string();
                for value in text.iter().flatten() {
                    self.add_hash(hash_tagged(TAG_TEXT, value.as_bytes(), &mut buffer));
                }
            }
        }
        Ok(())
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

const TAG_INTEGER: u8 = 1;
const TAG_FLOAT: u8 = 2;
const TAG_TEXT: u8 = 3;
const TAG_BOOL: u8 = 4;

fn hash_tagged(tag: u8, bytes: &[u8], buffer: &mut Vec<u8>) -> u64 {
    buffer.clear();
    buffer.push(tag);
    buffer.extend_from_slice(bytes);
    XxHash64::oneshot(SEED, buffer)
}

fn hash_integer(value: i128, buffer: &mut Vec<u8>) -> u64 {
    hash_tagged(TAG_INTEGER, &value.to_le_bytes(), buffer)
}

fn hash_float(value: f64, buffer: &mut Vec<u8>) -> u64 {
    if value.is_finite() && value.fract() == 0.0 && value.abs() < 1e38 {
        return hash_integer(value as i128, buffer);
    }
    let canonical = if value.is_nan() { f64::NAN } else { value };
    hash_tagged(TAG_FLOAT, &canonical.to_bits().to_le_bytes(), buffer)
}

fn sketches(values: &ArrayRef) -> Result<impl Iterator<Item = Result<Sketch>> + '_> {
    let Some(binary) = values.as_any().downcast_ref::<BinaryArray>() else {
        return exec_err!("a Rakam HLL sketch is binary, not {}", values.data_type());
    };
    Ok(binary.iter().flatten().map(Sketch::from_bytes))
}

fn sketch_field(name: &str) -> Vec<FieldRef> {
    vec![Arc::new(Field::new(
        format!("{name}[sketch]"),
        DataType::Binary,
        true,
    ))]
}

#[derive(Debug)]
struct SketchAccumulator {
    sketch: Sketch,
    /// `rakam_hll_sketch` hashes values; `rakam_hll_merge` unions sketches.
    input_is_sketch: bool,
}

impl Accumulator for SketchAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let Some(values) = values.first() else {
            return Ok(());
        };
        if self.input_is_sketch {
            return self.merge_batch(std::slice::from_ref(values));
        }
        self.sketch.add_array(values)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let Some(states) = states.first() else {
            return Ok(());
        };
        for sketch in sketches(states)? {
            self.sketch.merge(&sketch?);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![self.evaluate()?])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Binary(Some(self.sketch.to_bytes())))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + match &self.sketch {
                Sketch::Sparse(set) => set.len() * 8,
                Sketch::Dense(_) => REGISTERS,
            }
    }
}

/// `rakam_hll_sketch(x)` and `rakam_hll_merge(sketch)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SketchUdaf {
    name: &'static str,
    signature: Signature,
    input_is_sketch: bool,
}

impl SketchUdaf {
    pub fn sketch() -> Self {
        Self {
            name: "rakam_hll_sketch",
            signature: Signature::any(1, Volatility::Immutable),
            input_is_sketch: false,
        }
    }

    pub fn merge() -> Self {
        Self {
            name: "rakam_hll_merge",
            signature: Signature::exact(vec![DataType::Binary], Volatility::Immutable),
            input_is_sketch: true,
        }
    }
}

impl AggregateUDFImpl for SketchUdaf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Binary)
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(SketchAccumulator {
            sketch: Sketch::default(),
            input_is_sketch: self.input_is_sketch,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(sketch_field(args.name))
    }
}

/// `rakam_hll_estimate(sketch)`.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct EstimateUdf {
    signature: Signature,
}

impl Default for EstimateUdf {
    fn default() -> Self {
        Self {
            signature: Signature::new(
                TypeSignature::Exact(vec![DataType::Binary]),
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for EstimateUdf {
    fn name(&self) -> &str {
        "rakam_hll_estimate"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::UInt64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let Some(argument) = args.args.first() else {
            return exec_err!("rakam_hll_estimate takes one sketch");
        };
        let array = argument.to_array(args.number_rows)?;
        let Some(binary) = array.as_any().downcast_ref::<BinaryArray>() else {
            return exec_err!("a Rakam HLL sketch is binary, not {}", array.data_type());
        };
        let estimates = binary
            .iter()
            .map(|sketch| {
                sketch
                    .map(|bytes| Sketch::from_bytes(bytes).map(|s| s.estimate()))
                    .transpose()
            })
            .collect::<Result<UInt64Array>>()?;
        Ok(ColumnarValue::Array(Arc::new(estimates)))
    }
}

pub fn udafs() -> Vec<AggregateUDF> {
    vec![
        AggregateUDF::from(SketchUdaf::sketch()),
        AggregateUDF::from(SketchUdaf::merge()),
    ]
}

pub fn udfs() -> Vec<ScalarUDF> {
    vec![ScalarUDF::from(EstimateUdf::default())]
}

/// The binary array of `sketch`es, for tests and callers building states.
pub fn sketch_array(sketches: &[Sketch]) -> ArrayRef {
    let mut builder = BinaryBuilder::new();
    for sketch in sketches {
        builder.append_value(sketch.to_bytes());
    }
    Arc::new(builder.finish())
}

#[cfg(test)]
mod tests {
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
}

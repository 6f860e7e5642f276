//! The SQL functions over sketches.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, BinaryBuilder, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, ColumnarValue, GroupsAccumulator, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

use super::groups::SketchGroups;
use super::{Sketch, REGISTERS};

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

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(SketchGroups::new(self.input_is_sketch)))
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

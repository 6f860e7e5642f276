//! `rakam_hll_sketch` and `rakam_hll_merge` over many groups at once: one
//! register array per group, allocated at the group's first value, instead
//! of an accumulator object per group (the grouped case is what continuous
//! queries run at every refresh).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BinaryArray, BinaryBuilder, BooleanArray};
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};

use super::{hash, merge_bytes_into, position, registers_to_bytes, Registers, REGISTERS};

#[derive(Debug, Default)]
pub(super) struct SketchGroups {
    groups: Vec<Option<Box<Registers>>>,
    /// `rakam_hll_sketch` hashes values; `rakam_hll_merge` unions sketches.
    input_is_sketch: bool,
    allocated: usize,
}

impl SketchGroups {
    pub(super) fn new(input_is_sketch: bool) -> Self {
        Self {
            input_is_sketch,
            ..Self::default()
        }
    }

    fn registers(&mut self, group: usize) -> &mut Registers {
        let allocated = &mut self.allocated;
        self.groups[group].get_or_insert_with(|| {
            *allocated += 1;
            Box::new([0; REGISTERS])
        })
    }

    fn merge_sketches(
        &mut self,
        values: &ArrayRef,
        group_indices: &[usize],
        filter: Option<&BooleanArray>,
    ) -> Result<()> {
        let Some(sketches) = values.as_any().downcast_ref::<BinaryArray>() else {
            return exec_err!("a Rakam HLL sketch is binary, not {}", values.data_type());
        };
        for (row, group) in group_indices.iter().enumerate() {
            if sketches.is_null(row) || filter.is_some_and(|f| f.is_null(row) || !f.value(row)) {
                continue;
            }
            merge_bytes_into(sketches.value(row), self.registers(*group))?;
        }
        Ok(())
    }

    fn emit(&mut self, emit_to: EmitTo) -> ArrayRef {
        let taken = emit_to.take_needed(&mut self.groups);
        let mut builder = BinaryBuilder::new();
        for registers in taken {
            match registers {
                Some(registers) => {
                    self.allocated -= 1;
                    builder.append_value(registers_to_bytes(&registers));
                }
                None => builder.append_value(registers_to_bytes(&[0; REGISTERS])),
            }
        }
        Arc::new(builder.finish())
    }
}

impl GroupsAccumulator for SketchGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, || None);
        let Some(values) = values.first() else {
            return Ok(());
        };
        if self.input_is_sketch {
            return self.merge_sketches(values, group_indices, opt_filter);
        }
        hash::each_hash(values, |row, hash| {
            if opt_filter.is_some_and(|f| f.is_null(row) || !f.value(row)) {
                return;
            }
            let (index, rank) = position(hash);
            let slot = &mut self.registers(group_indices[row])[index];
            *slot = (*slot).max(rank);
        })
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.groups.resize_with(total_num_groups, || None);
        match values.first() {
            Some(values) => self.merge_sketches(values, group_indices, None),
            None => Ok(()),
        }
    }

    /// Each row as a state of its own: the sketch of its one value (an
    /// empty one for a null or filtered-out row).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let Some(values) = values.first() else {
            return exec_err!("rakam_hll takes one argument");
        };
        let empty = registers_to_bytes(&[0; REGISTERS]);
        let kept = |row: usize| opt_filter.is_none_or(|f| f.is_valid(row) && f.value(row));
        let mut builder = BinaryBuilder::new();
        if self.input_is_sketch {
            let Some(sketches) = values.as_any().downcast_ref::<BinaryArray>() else {
                return exec_err!("a Rakam HLL sketch is binary, not {}", values.data_type());
            };
            for row in 0..sketches.len() {
                match kept(row) && sketches.is_valid(row) {
                    true => builder.append_value(sketches.value(row)),
                    false => builder.append_value(&empty),
                }
            }
        } else {
            let mut hashes = vec![None; values.len()];
            hash::each_hash(values, |row, hash| hashes[row] = Some(hash))?;
            for (row, hash) in hashes.into_iter().enumerate() {
                match hash.filter(|_| kept(row)) {
                    Some(hash) => {
                        let (index, rank) = position(hash);
                        let mut bytes = vec![super::SPARSE_TAG];
                        bytes.extend_from_slice(&(index as u16).to_le_bytes());
                        bytes.push(rank);
                        builder.append_value(bytes);
                    }
                    None => builder.append_value(&empty),
                }
            }
        }
        Ok(vec![Arc::new(builder.finish())])
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.emit(emit_to))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.emit(emit_to)])
    }

    fn size(&self) -> usize {
        self.groups.capacity() * std::mem::size_of::<Option<Box<Registers>>>()
            + self.allocated * REGISTERS
    }
}

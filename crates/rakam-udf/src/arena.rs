//! The rows of many groups in one flat arena, tagged with their group, the
//! way ClickHouse keeps aggregate states in an arena: one allocation grows
//! for all people of a query instead of one vector per person (hundreds of
//! thousands of small allocations, each reallocated as it grows). At the end
//! a counting sort by group lays every group's rows out contiguously in two
//! passes, without comparing anything.

use datafusion::common::{exec_err, Result};

use crate::event_rows::Row;

#[derive(Debug, Default)]
pub struct GroupedRows {
    rows: Vec<Row>,
    groups: Vec<u32>,
    /// Groups known so far (some may have no rows).
    num_groups: usize,
}

/// The rows of the groups taken out of an arena, group after group:
/// group `g`'s rows are `rows[offsets[g]..offsets[g + 1]]`.
#[derive(Debug, Default)]
pub struct Laid {
    pub rows: Vec<Row>,
    pub offsets: Vec<usize>,
}

impl Laid {
    pub fn groups(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    pub fn group_mut(&mut self, group: usize) -> &mut [Row] {
        let (start, end) = (self.offsets[group], self.offsets[group + 1]);
        &mut self.rows[start..end]
    }
}

impl GroupedRows {
    /// Makes room for groups `0..total` (DataFusion's `total_num_groups`).
    pub fn ensure_groups(&mut self, total: usize) -> Result<()> {
        if total > u32::MAX as usize {
            return exec_err!("more than {} groups in one aggregation", u32::MAX);
        }
        self.num_groups = self.num_groups.max(total);
        Ok(())
    }

    /// Adds a row of `group`, which `ensure_groups` has made room for.
    pub fn push(&mut self, group: usize, row: Row) {
        if group < self.num_groups {
            // `ensure_groups` bounded `num_groups` by `u32::MAX`.
            self.groups.push(group as u32);
            self.rows.push(row);
        }
    }

    /// Takes the first `n` groups out, laid out group after group; the
    /// groups after them are renumbered from 0 (DataFusion's `EmitTo`).
    pub fn take_first(&mut self, n: usize) -> Laid {
        let n = n.min(self.num_groups);
        let mut offsets = vec![0usize; n + 1];
        for &group in &self.groups {
            if let Some(count) = offsets.get_mut(group as usize + 1) {
                *count += 1;
            }
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let taken = offsets[n];
        let mut laid = vec![Row::default(); taken];
        let mut cursor = offsets.clone();
        let mut kept = 0;
        for i in 0..self.rows.len() {
            let (group, row) = (self.groups[i] as usize, self.rows[i]);
            if group < n {
                laid[cursor[group]] = row;
                cursor[group] += 1;
            } else {
                self.groups[kept] = (group - n) as u32;
                self.rows[kept] = row;
                kept += 1;
            }
        }
        self.rows.truncate(kept);
        self.groups.truncate(kept);
        self.num_groups -= n;
        if self.rows.is_empty() {
            // Give the memory back once everything is emitted.
            self.rows = Vec::new();
            self.groups = Vec::new();
        }
        Laid {
            rows: laid,
            offsets,
        }
    }

    pub fn num_groups(&self) -> usize {
        self.num_groups
    }

    pub fn size(&self) -> usize {
        self.rows.capacity() * std::mem::size_of::<Row>()
            + self.groups.capacity() * std::mem::size_of::<u32>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(t: i64) -> Row {
        Row { t, a: 0, b: 0 }
    }

    #[test]
    fn groups_come_out_contiguous_in_arrival_order_and_the_rest_is_renumbered() {
        let mut arena = GroupedRows::default();
        arena.ensure_groups(3).expect("groups");
        for (group, t) in [(2, 1), (0, 2), (1, 3), (0, 4), (2, 5), (1, 6)] {
            arena.push(group, row(t));
        }
        let mut first = arena.take_first(2);
        assert_eq!(first.groups(), 2);
        assert_eq!(first.group_mut(0), &[row(2), row(4)]);
        assert_eq!(first.group_mut(1), &[row(3), row(6)]);
        assert_eq!(arena.num_groups(), 1);
        arena.ensure_groups(2).expect("groups");
        arena.push(1, row(7));
        let mut rest = arena.take_first(usize::MAX);
        assert_eq!(rest.groups(), 2);
        assert_eq!(rest.group_mut(0), &[row(1), row(5)]);
        assert_eq!(rest.group_mut(1), &[row(7)]);
        assert_eq!(arena.num_groups(), 0);
        assert_eq!(arena.size(), 0);
    }

    #[test]
    fn groups_without_rows_are_empty_slices() {
        let mut arena = GroupedRows::default();
        arena.ensure_groups(3).expect("groups");
        arena.push(1, row(9));
        let mut laid = arena.take_first(3);
        assert_eq!(laid.group_mut(0), &[] as &[Row]);
        assert_eq!(laid.group_mut(1), &[row(9)]);
        assert_eq!(laid.group_mut(2), &[] as &[Row]);
    }
}

//! The rows of one collection, appended straight into Arrow builders. Each
//! value either fits its column exactly as the general path would store it
//! (`rakam_model::coerce`), or the request is declined and goes down the
//! general path, which evolves the schema or keeps the value in
//! `_unmapped`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, TimestampMillisecondArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::record_batch::RecordBatch;
use rakam_model::{
    is_normal_field_name, is_supported_time, normalize_field_name, parse_date,
    parse_timestamp_millis, CollectionSchema, RESERVED_FIELD_NAMES, TIME_COLUMN,
};

use super::scan::{Fields, RawScalar};
use super::Decline;
use crate::build::EVENTS_PER_BUILD;
use crate::column_builder::ColumnBuilder;
use crate::context::{IP_FIELD, REFERRER_FIELD, USER_AGENT_FIELD};
use crate::IngestLimits;

/// Integers a double holds exactly.
const EXACT_IN_DOUBLE: u64 = 1 << 53;

/// Rows a column's builder is first sized for; it grows as needed, so a
/// collection with a few events in a large request reserves little.
const INITIAL_ROWS: usize = 1024;

pub(crate) struct CollectionRows<'s> {
    schema: &'s CollectionSchema,
    /// Whether each column's name is what the general path makes of it
    /// (`$browser` is, `pageUrl` would not be).
    kept_names: Vec<bool>,
    positions: HashMap<&'s str, usize, foldhash::fast::RandomState>,
    /// Created when a column first gets a value (or a null) in a batch: a
    /// batch carries only the columns its events use.
    builders: Vec<Option<ColumnBuilder>>,
    /// Rows each builder holds so far; the gap to the current row is nulls.
    lengths: Vec<usize>,
    /// The event that last set each column, to catch a repeated key.
    last_event: Vec<u64>,
    /// The column of the n-th field of the previous event: events of a
    /// collection mostly list their fields in the same order, so a name
    /// comparison usually replaces a hash lookup.
    guesses: Vec<usize>,
    times: Vec<i64>,
    events: u64,
    capacity: usize,
    server_time_ms: i64,
    finished: Vec<RecordBatch>,
}

impl<'s> CollectionRows<'s> {
    pub(crate) fn new(schema: &'s CollectionSchema, server_time_ms: i64) -> Self {
        let columns = schema.columns.len();
        Self {
            schema,
            kept_names: schema
                .columns
                .iter()
                .map(|column| {
                    is_normal_field_name(&column.name)
                        || normalize_field_name(&column.name).is_ok_and(|n| n == column.name)
                })
                .collect(),
            positions: schema
                .columns
                .iter()
                .enumerate()
                .map(|(position, column)| (column.name.as_str(), position))
                .collect(),
            builders: (0..columns).map(|_| None).collect(),
            lengths: vec![0; columns],
            last_event: vec![0; columns],
            guesses: Vec::new(),
            times: Vec::with_capacity(INITIAL_ROWS),
            events: 0,
            capacity: INITIAL_ROWS,
            server_time_ms,
            finished: Vec::new(),
        }
    }

    /// Appends one event's properties, or says why the general path must
    /// take the request.
    pub(crate) fn append(
        &mut self,
        fields: &Fields<'_>,
        line: &[u8],
        limits: &IngestLimits,
    ) -> Result<(), Decline> {
        if fields.len() > limits.max_properties_per_event {
            return Err(Decline::Limit);
        }
        self.events += 1;
        let row = self.times.len();
        let mut time = None;
        for (index, (name, value)) in fields.iter().enumerate() {
            let name: &str = name;
            if name == TIME_COLUMN {
                if time.is_some() {
                    return Err(Decline::Duplicate);
                }
                time = Some(self.event_time(value)?);
                continue;
            }
            let position = self.position(index, name)?;
            if self.last_event[position] == self.events {
                return Err(Decline::Duplicate);
            }
            self.last_event[position] = self.events;
            let field_type = &self.schema.columns[position].field_type;
            let builder = match &mut self.builders[position] {
                Some(builder) => builder,
                slot => slot.insert(ColumnBuilder::new(field_type, self.capacity)),
            };
            builder.append_nulls(row - self.lengths[position]);
            append_value(builder, value, line, limits)?;
            self.lengths[position] = row + 1;
        }
        self.times.push(time.unwrap_or(self.server_time_ms));
        if self.times.len() >= EVENTS_PER_BUILD {
            self.finish_batch()?;
        }
        Ok(())
    }

    /// The batches of every event appended, in order.
    pub(crate) fn finish(mut self) -> Result<Vec<RecordBatch>, Decline> {
        if !self.times.is_empty() {
            self.finish_batch()?;
        }
        Ok(self.finished)
    }

    fn position(&mut self, index: usize, name: &str) -> Result<usize, Decline> {
        if let Some(&guess) = self.guesses.get(index) {
            if self.schema.columns[guess].name == name {
                return Ok(guess);
            }
        }
        let position = match self.positions.get(name) {
            Some(&position) => position,
            // A new field, a reserved or instruction name (`_ip`), or one
            // the general path renames: its rules apply.
            None => return Err(Decline::Field),
        };
        if name.starts_with('_')
            && (RESERVED_FIELD_NAMES.contains(&name)
                || [IP_FIELD, USER_AGENT_FIELD, REFERRER_FIELD].contains(&name))
        {
            return Err(Decline::Field);
        }
        if !self.kept_names[position] {
            return Err(Decline::Field);
        }
        if index < self.guesses.len() {
            self.guesses[index] = position;
        } else if index == self.guesses.len() {
            self.guesses.push(position);
        }
        Ok(position)
    }

    /// `_time` as the general path reads it (`prepare::parse_event_time`).
    fn event_time(&self, value: &RawScalar<'_>) -> Result<i64, Decline> {
        let millis = match value {
            RawScalar::Null => return Ok(self.server_time_ms),
            RawScalar::Int(millis) => *millis,
            RawScalar::Float(float) if float.is_finite() && float.abs() < 9.2e18 => {
                float.round() as i64
            }
            RawScalar::Str(text) => parse_timestamp_millis(text)
                .or_else(|| text.trim().parse::<i64>().ok())
                .ok_or(Decline::Time)?,
            _ => return Err(Decline::Time),
        };
        if is_supported_time(millis) {
            Ok(millis)
        } else {
            Err(Decline::Time)
        }
    }

    fn finish_batch(&mut self) -> Result<(), Decline> {
        let rows = self.times.len();
        let mut columns = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.builders.len() + 3);
        let times = std::mem::replace(&mut self.times, Vec::with_capacity(self.capacity));
        arrays.push(Arc::new(
            TimestampMillisecondArray::from(times).with_timezone("UTC"),
        ));
        arrays.push(Arc::new(
            TimestampMillisecondArray::from_value(self.server_time_ms, rows).with_timezone("UTC"),
        ));
        for (position, slot) in self.builders.iter_mut().enumerate() {
            if let Some(mut builder) = slot.take() {
                builder.append_nulls(rows - self.lengths[position]);
                arrays.push(builder.finish().map_err(|_| Decline::Value)?);
                columns.push(self.schema.columns[position].clone());
            }
            self.lengths[position] = 0;
        }
        arrays.push(new_null_array(&DataType::Utf8, rows));
        let schema = CollectionSchema { columns }.arrow_schema();
        let batch = RecordBatch::try_new(schema, arrays).map_err(|_| Decline::Value)?;
        self.finished.push(batch);
        Ok(())
    }
}

/// One value into its column, exactly as `rakam_model::coerce` converts
/// it; anything `coerce` would widen, refuse or turn into text by a rule of
/// its own declines.
fn append_value(
    builder: &mut ColumnBuilder,
    value: &RawScalar<'_>,
    line: &[u8],
    limits: &IngestLimits,
) -> Result<(), Decline> {
    match value {
        RawScalar::Null => {
            builder.append_nulls(1);
            return Ok(());
        }
        RawScalar::Str(text) if text.len() > limits.max_string_bytes => return Err(Decline::Limit),
        _ => {}
    }
    match (builder, value) {
        (ColumnBuilder::String(b), RawScalar::Str(text)) => b.append_value(text),
        (ColumnBuilder::String(b), RawScalar::Int(integer)) => {
            write!(b, "{integer}").map_err(|_| Decline::Value)?;
            b.append_value("");
        }
        (ColumnBuilder::String(b), RawScalar::Bool(flag)) => {
            b.append_value(if *flag { "true" } else { "false" })
        }
        (ColumnBuilder::Long(b), RawScalar::Int(integer)) => b.append_value(*integer),
        (ColumnBuilder::Long(b), RawScalar::Float(float))
            if float.fract() == 0.0 && float.abs() < 9.0e15 =>
        {
            b.append_value(*float as i64)
        }
        (ColumnBuilder::Double(b), RawScalar::Int(integer))
            if integer.unsigned_abs() <= EXACT_IN_DOUBLE =>
        {
            b.append_value(*integer as f64)
        }
        // A literal too large for i64 is text on the general path, and a
        // parser cannot tell `1e19` from nineteen digits: decline both.
        // The parser reads `-0` and `-0.0` as +0.0; the general path keeps
        // the sign. A zero on a line with a `-0` anywhere declines.
        (ColumnBuilder::Double(_), RawScalar::Float(float))
            if *float == 0.0 && line.windows(2).any(|pair| pair == b"-0") =>
        {
            return Err(Decline::Value)
        }
        (ColumnBuilder::Double(b), RawScalar::Float(float)) if float.abs() < 9.2e18 => {
            b.append_value(*float)
        }
        (ColumnBuilder::Boolean(b), RawScalar::Bool(flag)) => b.append_value(*flag),
        (ColumnBuilder::Date(b), RawScalar::Str(text)) => {
            b.append_value(parse_date(text).ok_or(Decline::Value)?)
        }
        (ColumnBuilder::Timestamp(b), RawScalar::Str(text)) => {
            b.append_value(parse_timestamp_millis(text).ok_or(Decline::Value)?)
        }
        (ColumnBuilder::Timestamp(b), RawScalar::Int(millis)) if is_supported_time(*millis) => {
            b.append_value(*millis)
        }
        _ => return Err(Decline::Value),
    }
    Ok(())
}

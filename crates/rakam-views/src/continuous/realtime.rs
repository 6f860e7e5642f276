//! Rakam's real-time reports (`/realtime/*`) as continuous queries: the
//! measures per dimension values and per 10-second slide of arrival time
//! (`_server_time`), so `/realtime/get` merges any range of slides, with or
//! without the slide, exactly as a query from scratch would count them.
//! Rakam kept them in the memory of one node, lost at a restart.

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime};
use datafusion::common::TableReference;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use rakam_store_api::{ProjectId, ProjectSnapshot};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::compile::group_column;
use super::{check_name, hidden_name, merge_sql, spec_of, split_checked, ContinuousSpec};
use crate::refresh::now_ms;
use crate::{Result, ViewError, Views};

/// Rakam's slide and default window.
const SLIDE_SECS: i64 = 10;
const WINDOW_SECS: i64 = 120;
/// Slides one `/realtime/get` may span: a week.
const MAX_SLIDES: i64 = 7 * 86_400 / SLIDE_SECS;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measure {
    #[serde(default)]
    pub column: Option<String>,
    pub aggregation: String,
}

/// Rakam's `RealTimeReport`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RealTimeReport {
    pub name: Option<String>,
    pub table_name: Option<String>,
    #[serde(default)]
    pub collections: Vec<String>,
    #[serde(default)]
    pub filter: Option<String>,
    #[serde(default)]
    pub measures: Vec<Measure>,
    #[serde(default)]
    pub dimensions: Vec<String>,
}

/// `/realtime/get`.
#[derive(Debug, Deserialize)]
struct RealTimeQuery {
    table_name: Option<String>,
    measure: Option<Measure>,
    #[serde(default)]
    dimensions: Option<Vec<String>>,
    #[serde(default)]
    aggregate: Option<bool>,
    #[serde(default)]
    date_start: Option<Value>,
    #[serde(default)]
    date_end: Option<Value>,
    #[serde(default)]
    filter: Option<String>,
}

fn invalid(message: impl Into<String>) -> ViewError {
    ViewError::InvalidContinuous(message.into())
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

fn aggregate_sql(measure: &Measure) -> Result<String> {
    let column = measure.column.as_deref().filter(|c| !c.is_empty());
    let argument = column.map_or_else(|| "*".to_string(), quote);
    let function = match measure.aggregation.to_ascii_uppercase().as_str() {
        "COUNT" => "count",
        "SUM" => "sum",
        "MINIMUM" => "min",
        "MAXIMUM" => "max",
        "AVERAGE" => "avg",
        "COUNT_UNIQUE" | "APPROXIMATE_UNIQUE" => "approx_distinct",
        other => {
            return Err(invalid(format!(
                "aggregation {other:?} is not one of COUNT, COUNT_UNIQUE, SUM, MINIMUM, MAXIMUM, AVERAGE, APPROXIMATE_UNIQUE"
            )))
        }
    };
    if column.is_none() && function != "count" {
        return Err(invalid(format!("{} needs a column", measure.aggregation)));
    }
    Ok(format!("{function}({argument})"))
}

impl RealTimeReport {
    /// The continuous query that keeps the report: the measures per slide
    /// of arrival time and dimension values.
    fn query(&self) -> Result<String> {
        if self.measures.is_empty() {
            return Err(invalid("There must be at least one measure"));
        }
        if self.collections.is_empty() {
            return Err(invalid("collections is empty"));
        }
        for measure in &self.measures {
            if self
                .dimensions
                .iter()
                .any(|d| Some(d) == measure.column.as_ref())
            {
                return Err(invalid(format!(
                    "Column {} in dimension cannot be also in measures",
                    measure.column.as_deref().unwrap_or_default()
                )));
            }
        }
        let mut items = vec![format!(
            "CAST(_server_time AS BIGINT) / {} AS _slide",
            SLIDE_SECS * 1000
        )];
        items.extend(self.dimensions.iter().map(|d| quote(d)));
        for (index, measure) in self.measures.iter().enumerate() {
            items.push(format!("{} AS _measure_{index}", aggregate_sql(measure)?));
        }
        let (from, mut conditions) = match self.collections.as_slice() {
            [one] => (quote(&one.to_lowercase()), Vec::new()),
            many => {
                let names: Vec<String> = many.iter().map(|c| literal(&c.to_lowercase())).collect();
                (
                    "_all".to_string(),
                    vec![format!("_collection IN ({})", names.join(", "))],
                )
            }
        };
        if let Some(filter) = self.filter.as_deref().filter(|f| !f.trim().is_empty()) {
            conditions.push(format!("({})", one_expression(filter)?));
        }
        let mut sql = format!("SELECT {} FROM {from}", items.join(", "));
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        let groups: Vec<String> = (1..=self.dimensions.len() + 1)
            .map(|i| i.to_string())
            .collect();
        sql.push_str(&format!(" GROUP BY {}", groups.join(", ")));
        Ok(sql)
    }
}

/// The filter as one SQL expression, printed back: text after it (a
/// closing parenthesis, a GROUP BY, a comment) is refused, not pasted.
fn one_expression(filter: &str) -> Result<String> {
    let bad = |e: String| invalid(format!("filter is not one SQL expression: {e}"));
    let mut parser = Parser::new(&GenericDialect {})
        .try_with_sql(filter)
        .map_err(|e| bad(e.to_string()))?;
    let expr = parser.parse_expr().map_err(|e| bad(e.to_string()))?;
    if parser.peek_token().token != Token::EOF {
        return Err(bad(format!("unexpected {} after it", parser.peek_token())));
    }
    Ok(expr.to_string())
}

/// A time of `/realtime/get`: ISO 8601 text (UTC without an offset), or
/// epoch seconds (milliseconds when larger than any date in seconds).
fn epoch_seconds(value: &Value, field: &str) -> Result<i64> {
    let bad = || invalid(format!("{field} must be an ISO 8601 time or epoch seconds"));
    match value {
        Value::Number(number) => {
            let n = number.as_f64().ok_or_else(bad)?;
            Ok(if n.abs() > 1e11 {
                (n / 1000.0) as i64
            } else {
                n as i64
            })
        }
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|t| t.timestamp())
            .or_else(|_| {
                // A time without an offset (as some clients send) is UTC.
                NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                    .map(|t| t.and_utc().timestamp())
            })
            .map_err(|_| bad()),
        _ => Err(bad()),
    }
}

impl Views {
    pub async fn create_realtime(
        &self,
        project: &Arc<ProjectSnapshot>,
        request: Value,
    ) -> Result<()> {
        let report: RealTimeReport = serde_json::from_value(request)
            .map_err(|e| invalid(format!("invalid real-time report: {e}")))?;
        let table_name = report
            .table_name
            .clone()
            .ok_or_else(|| invalid("table_name is required"))?;
        let name = report
            .name
            .clone()
            .ok_or_else(|| invalid("name is required"))?;
        let query = report.query()?;
        let described = serde_json::to_value(&report)
            .map_err(|e| invalid(format!("invalid real-time report: {e}")))?;
        self.create_continuous_with(
            project,
            json!({"continuous_query": {"table_name": table_name, "name": name, "query": query}, "replay": false}),
            Some(described),
        )
        .await
    }

    /// The project's real-time reports, as Rakam lists them.
    pub async fn list_realtime(&self, project: &ProjectId) -> Result<Vec<Value>> {
        let views = self.inner.store.list(project).await?;
        Ok(views
            .iter()
            .filter_map(|view| spec_of(&view.definition))
            .filter_map(|spec| spec.realtime)
            .collect())
    }

    async fn realtime_spec(
        &self,
        project: &ProjectId,
        table_name: &str,
    ) -> Result<(ContinuousSpec, RealTimeReport)> {
        let view = self.continuous_view(project, table_name).await?;
        let spec = spec_of(&view.definition)
            .ok_or_else(|| ViewError::ContinuousNotFound(table_name.to_string()))?;
        let report = spec
            .realtime
            .clone()
            .and_then(|r| serde_json::from_value::<RealTimeReport>(r).ok())
            .ok_or_else(|| ViewError::ContinuousNotFound(table_name.to_string()))?;
        Ok((spec, report))
    }

    pub async fn delete_realtime(&self, project: &ProjectId, table_name: &str) -> Result<()> {
        self.realtime_spec(project, table_name).await?;
        self.delete_continuous(project, table_name).await
    }

    /// `/realtime/get`: one measure over the slides in `(date_start,
    /// date_end]`, per slide (`aggregate: false`) or merged, per the asked
    /// dimensions; `{start, end, slideInterval, result}`.
    pub async fn query_realtime(
        &self,
        project: &Arc<ProjectSnapshot>,
        request: Value,
    ) -> Result<Value> {
        let request: RealTimeQuery = serde_json::from_value(request)
            .map_err(|e| invalid(format!("invalid real-time query: {e}")))?;
        let table_name = check_name(
            request
                .table_name
                .as_deref()
                .ok_or_else(|| invalid("table_name is required"))?,
        )?;
        if request
            .filter
            .as_deref()
            .is_some_and(|f| !f.trim().is_empty())
        {
            return Err(invalid(
                "filter applies when a report is created: create a report with it",
            ));
        }
        let (spec, report) = self.realtime_spec(project.id(), &table_name).await?;
        let measure = request
            .measure
            .ok_or_else(|| invalid("measure is required"))?;
        let measure_index = report
            .measures
            .iter()
            .position(|m| {
                m.aggregation.eq_ignore_ascii_case(&measure.aggregation)
                    && m.column.as_deref().unwrap_or_default()
                        == measure.column.as_deref().unwrap_or_default()
            })
            .ok_or_else(|| invalid("the report has no such measure"))?;
        let dimensions = request.dimensions.unwrap_or_default();
        let mut dimension_groups = Vec::with_capacity(dimensions.len());
        for dimension in &dimensions {
            let index = report
                .dimensions
                .iter()
                .position(|d| d == dimension)
                .ok_or_else(|| invalid(format!("Dimension {dimension:?} doesn't exist")))?;
            dimension_groups.push(group_column(index + 1));
        }
        let aggregate = request.aggregate.unwrap_or(false);
        let end = match &request.date_end {
            Some(value) if !value.is_null() => epoch_seconds(value, "date_end")?,
            _ => (now_ms() / 1000 / SLIDE_SECS) * SLIDE_SECS - SLIDE_SECS,
        };
        let start = match &request.date_start {
            Some(value) if !value.is_null() => epoch_seconds(value, "date_start")?,
            _ => end.saturating_sub(WINDOW_SECS),
        };
        let (first, last) = (start.div_euclid(SLIDE_SECS), end.div_euclid(SLIDE_SECS));
        if last < first || last - first > MAX_SLIDES {
            return Err(invalid(format!(
                "date_start must be before date_end, at most {} days apart",
                MAX_SLIDES * SLIDE_SECS / 86_400
            )));
        }
        let (owned, snapshot) = (spec.query.clone(), project.clone());
        let split = tokio::task::spawn_blocking(move || split_checked(&snapshot, &owned))
            .await
            .map_err(|e| invalid(format!("reading the report failed: {e}")))??;
        let value = split
            .final_items
            .get(1 + report.dimensions.len() + measure_index)
            .ok_or_else(|| invalid("the report's query has changed"))?;
        let slide = group_column(0);
        let mut items = Vec::new();
        let mut groups = dimension_groups.clone();
        if !aggregate {
            items.push(format!("{slide} * {SLIDE_SECS} AS \"time\""));
            groups.insert(0, slide.clone());
        }
        items.extend(dimension_groups.iter().cloned());
        items.push(format!("{value} AS \"value\""));
        let mut sql = format!(
            "SELECT {} FROM {} WHERE {slide} > {first} AND {slide} <= {last}",
            items.join(", "),
            super::PARTIALS
        );
        if !groups.is_empty() {
            sql.push_str(&format!(" GROUP BY {}", groups.join(", ")));
            let order: Vec<String> = (1..=groups.len()).map(|i| i.to_string()).collect();
            sql.push_str(&format!(" ORDER BY {}", order.join(", ")));
        }
        let partials = self
            .stored_table(project, &hidden_name(&table_name))
            .await?
            .ok_or_else(|| ViewError::ContinuousNotFound(table_name.clone()))?;
        let context = self.bounded_merge_session()?;
        let failed = |e: datafusion::error::DataFusionError| {
            invalid(format!("reading real-time report {table_name}: {e}"))
        };
        context
            .register_table(TableReference::bare("$partials"), partials)
            .map_err(failed)?;
        let batches = merge_sql(&context, &sql)
            .await
            .map_err(failed)?
            .collect()
            .await
            .map_err(failed)?;
        let rows = rakam_query::rows_as_json(&batches)
            .map_err(|e| invalid(format!("reading real-time report {table_name}: {e}")))?;
        let skip = usize::from(!aggregate);
        let result: Vec<Value> = rows
            .into_iter()
            .map(|mut row| {
                for cell in row.iter_mut().skip(skip).take(dimensions.len()) {
                    if cell.is_null() {
                        *cell = json!("(not set)");
                    }
                }
                Value::Array(row)
            })
            .collect();
        Ok(json!({
            "start": start,
            "end": end,
            "slideInterval": SLIDE_SECS,
            "result": result,
        }))
    }
}

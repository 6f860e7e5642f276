//! `/funnel/analyze`: Rakam's funnel request and response, plus ordering
//! modes, exclusion steps, time to convert and a conversion time series.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::Project;
use rakam_udf::funnel::{Exclusion, FunnelMode, FunnelSpec, MAX_STEPS};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{AnalysisError, Result};
use crate::result::{as_i64, as_label, Table};
use crate::scope::{DateRange, PeriodUnit, Span, TimeScope};
use crate::sql::{ident, optional_filter, string_literal, TimeReference};
use crate::{Analyzer, ProjectView};

/// Dimension values shown one by one; the rest are summed as "Others".
pub const TOP_DIMENSIONS: usize = 15;

#[derive(Debug, Clone, Deserialize)]
pub struct FunnelStep {
    pub collection: String,
    #[serde(default, alias = "filter_expression", alias = "filter")]
    #[serde(rename = "filterExpression")]
    pub filter_expression: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunnelExclusion {
    pub collection: String,
    #[serde(default, rename = "filterExpression", alias = "filter")]
    pub filter_expression: Option<String>,
    /// The exclusion applies after this step (1-based) ...
    #[serde(default = "one", rename = "fromStep", alias = "from_step")]
    pub from_step: usize,
    /// ... and before this one; the last step when absent.
    #[serde(default, rename = "toStep", alias = "to_step")]
    pub to_step: Option<usize>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunnelRequest {
    pub steps: Vec<FunnelStep>,
    #[serde(flatten)]
    pub range: DateRange,
    #[serde(default)]
    pub dimension: Option<String>,
    #[serde(default)]
    pub segment: Option<String>,
    #[serde(default)]
    pub window: Option<Span>,
    #[serde(default)]
    pub connectors: Option<Vec<String>>,
    #[serde(default, rename = "strictOrdering")]
    pub strict_ordering: Option<bool>,
    /// Rakam's flag for estimated counts; accepted and ignored, because
    /// the one-pass functions count people exactly at no extra cost.
    #[serde(default)]
    pub approximate: Option<bool>,
    #[serde(default, rename = "funnelType")]
    pub funnel_type: Option<String>,
    /// `ordered` (default), `strict` or `any`; wins over `funnelType`.
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub exclusions: Vec<FunnelExclusion>,
    /// `DAY`, `WEEK` or `MONTH`: conversion per period of the attempt's start.
    #[serde(default, rename = "timeSeries", alias = "time_series")]
    pub time_series: Option<String>,
}

impl FunnelRequest {
    fn mode(&self) -> Result<FunnelMode> {
        if let Some(mode) = &self.mode {
            return FunnelMode::parse(mode).ok_or_else(|| {
                AnalysisError::invalid(format!("mode {mode:?} is not ordered, strict or any"))
            });
        }
        // Rakam's ORDERED type (and strictOrdering) forbid other funnel
        // events between steps; NORMAL and APPROXIMATE only need the order.
        match self.funnel_type.as_deref().map(str::to_ascii_uppercase) {
            Some(t) if t == "ORDERED" => Ok(FunnelMode::Strict),
            Some(t) if t == "NORMAL" || t == "APPROXIMATE" => Ok(FunnelMode::Ordered),
            Some(t) => Err(AnalysisError::invalid(format!(
                "funnelType {t:?} is not NORMAL, APPROXIMATE or ORDERED"
            ))),
            None if self.strict_ordering == Some(true) => Ok(FunnelMode::Strict),
            None => Ok(FunnelMode::Ordered),
        }
    }

    fn window_ms(&self) -> Result<Option<i64>> {
        self.window.as_ref().map(|w| w.to_ms("window")).transpose()
    }
}

/// One collection's share of the funnel's events: which filters set which bits.
#[derive(Default)]
struct CollectionBits {
    steps: Vec<(usize, String)>,
    exclusions: Vec<(usize, String)>,
}

fn mask_sql(bits: &[(usize, String)]) -> String {
    if bits.is_empty() {
        return "CAST(0 AS BIGINT)".into();
    }
    bits.iter()
        .map(|(bit, filter)| format!("(CASE WHEN {filter} THEN {} ELSE 0 END)", 1i64 << bit))
        .collect::<Vec<_>>()
        .join(" + ")
}

struct Compiled {
    users_sql: String,
    steps: usize,
    has_dimension: bool,
}

fn compile(view: &ProjectView, request: &FunnelRequest, scope: &TimeScope) -> Result<Compiled> {
    let steps = request.steps.len();
    if steps == 0 {
        return Err(AnalysisError::invalid("steps must name at least one step"));
    }
    if steps > MAX_STEPS || request.exclusions.len() > MAX_STEPS {
        return Err(AnalysisError::invalid(format!(
            "a funnel has at most {MAX_STEPS} steps and {MAX_STEPS} exclusions"
        )));
    }
    let mode = request.mode()?;
    let window = request.window_ms()?;
    let mut by_collection: BTreeMap<String, CollectionBits> = BTreeMap::new();
    for (i, step) in request.steps.iter().enumerate() {
        view.schema(&step.collection)?;
        let filter = optional_filter(
            &format!("steps[{i}].filterExpression"),
            step.filter_expression.as_deref(),
        )?;
        by_collection
            .entry(step.collection.clone())
            .or_default()
            .steps
            .push((i, filter));
    }
    let mut exclusions = Vec::new();
    for (j, exclusion) in request.exclusions.iter().enumerate() {
        view.schema(&exclusion.collection)?;
        let to = exclusion.to_step.unwrap_or(steps);
        if exclusion.from_step < 1 || exclusion.from_step >= to || to > steps {
            return Err(AnalysisError::invalid(format!(
                "exclusions[{j}] must have 1 <= fromStep < toStep <= {steps}"
            )));
        }
        exclusions.push(Exclusion {
            from: exclusion.from_step,
            to,
        });
        let filter = optional_filter(
            &format!("exclusions[{j}].filterExpression"),
            exclusion.filter_expression.as_deref(),
        )?;
        by_collection
            .entry(exclusion.collection.clone())
            .or_default()
            .exclusions
            .push((j, filter));
    }
    let collections: Vec<String> = by_collection.keys().cloned().collect();
    let connectors = view.connectors(
        &collections,
        request.connectors.as_deref(),
        Some(&request.steps[0].collection),
    )?;
    let dimension = dimension_sql(view, request, scope, &collections)?;
    let spec = FunnelSpec {
        steps,
        window_ms: window.unwrap_or(i64::MAX / 4),
        mode,
        start_from: scope.start_ms,
        start_to: scope.end_ms,
        exclusions,
    };
    let time = scope.time_predicate(window.unwrap_or(0));
    let mut selects = Vec::new();
    for (collection, bits) in &by_collection {
        let any_filter: Vec<&str> = bits
            .steps
            .iter()
            .chain(&bits.exclusions)
            .map(|(_, f)| f.as_str())
            .collect();
        let dimension_column = dimension
            .as_ref()
            .map(|d| {
                format!(
                    ", {} AS d",
                    d.get(collection).map_or("NULL", String::as_str)
                )
            })
            .unwrap_or_default();
        selects.push(format!(
            "SELECT {conn} AS c, CAST(_time AS BIGINT) AS t, {steps} AS m, {excl} AS x{dimension_column} FROM {table} WHERE {time} AND ({any})",
            conn = connectors.get(collection).map_or("NULL", String::as_str),
            steps = mask_sql(&bits.steps),
            excl = mask_sql(&bits.exclusions),
            table = ident(collection),
            any = any_filter.join(" OR "),
        ));
    }
    let group = if dimension.is_some() { "c, d" } else { "c" };
    let users_sql = format!(
        "WITH funnel_events AS ({events}), funnel_users AS (SELECT {group}, rakam_funnel(t, m, x, {spec}) AS s FROM funnel_events WHERE c IS NOT NULL GROUP BY {group})",
        events = selects.join(" UNION ALL "),
        spec = string_literal(&spec.to_spec_string()),
    );
    Ok(Compiled {
        users_sql,
        steps,
        has_dimension: dimension.is_some(),
    })
}

/// The dimension's SQL per collection (NULL where a collection lacks it).
fn dimension_sql(
    view: &ProjectView,
    request: &FunnelRequest,
    scope: &TimeScope,
    collections: &[String],
) -> Result<Option<BTreeMap<String, String>>> {
    let Some(dimension) = request.dimension.as_deref().filter(|d| !d.is_empty()) else {
        return Ok(None);
    };
    let segment = match request.segment.as_deref().filter(|s| !s.is_empty()) {
        Some(name) => Some(TimeReference::parse(name).ok_or_else(|| {
            AnalysisError::invalid(format!("segment {name:?} is not a time reference"))
        })?),
        None => None,
    };
    let mut out = BTreeMap::new();
    let mut found = false;
    for collection in collections {
        let Some(kind) = view.column_type(collection, dimension)? else {
            continue;
        };
        found = true;
        let column = ident(dimension);
        let expr = match segment {
            Some(reference) => {
                if !matches!(kind, rakam_model::FieldType::Timestamp) {
                    return Err(AnalysisError::invalid(format!(
                        "segment needs a TIMESTAMP dimension; {dimension:?} is {}",
                        kind.name()
                    )));
                }
                reference.label_sql(scope, &column)
            }
            None => format!("CAST({column} AS VARCHAR)"),
        };
        out.insert(collection.clone(), expr);
    }
    if !found {
        return Err(AnalysisError::invalid(format!(
            "dimension {dimension:?} is not a column of any step's collection"
        )));
    }
    Ok(Some(out))
}

fn counts_sql(steps: usize) -> String {
    (1..=steps)
        .map(|i| format!("sum(CASE WHEN cardinality(s) >= {i} THEN 1 ELSE 0 END) AS step{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Analyzer {
    pub async fn funnel(&self, project: &Project, request: &FunnelRequest) -> Result<Value> {
        let started = Instant::now();
        let scope = request.range.scope()?;
        let series_unit = request
            .time_series
            .as_deref()
            .map(PeriodUnit::parse)
            .transpose()?;
        let view = self.view(project).await?;
        let compiled = compile(&view, request, &scope)?;
        let mut extra = Map::new();
        let table = if compiled.has_dimension {
            let sql = format!(
                "{} SELECT d, {} FROM funnel_users GROUP BY d",
                compiled.users_sql,
                counts_sql(compiled.steps)
            );
            dimension_table(self.rows(project, &sql).await?, compiled.steps)
        } else {
            let timing: Vec<String> = (2..=compiled.steps)
                .map(|i| {
                    format!(
                        "median(CAST(s[{i}] - s[{p}] AS DOUBLE)) AS median{i}, avg(CAST(s[{i}] - s[{p}] AS DOUBLE)) AS avg{i}",
                        p = i - 1
                    )
                })
                .collect();
            let sql = format!(
                "{} SELECT {}{}{} FROM funnel_users",
                compiled.users_sql,
                counts_sql(compiled.steps),
                if timing.is_empty() { "" } else { ", " },
                timing.join(", ")
            );
            let rows = self.rows(project, &sql).await?;
            let row = rows.into_iter().next().unwrap_or_default();
            extra.insert("steps".into(), step_details(request, &row, compiled.steps));
            let mut table = Table::new(&[("step", "STRING"), ("count", "LONG")]);
            for i in 0..compiled.steps {
                let count = row.get(i).map_or(0, as_i64);
                table
                    .rows
                    .push(vec![json!(format!("Step {}", i + 1)), json!(count)]);
            }
            table
        };
        if let Some(unit) = series_unit {
            let start = "arrow_cast(s[1], 'Timestamp(Millisecond, Some(\"UTC\"))')";
            let sql = format!(
                "{} SELECT {period} AS p, {counts} FROM funnel_users WHERE cardinality(s) >= 1 GROUP BY 1 ORDER BY 1",
                compiled.users_sql,
                period = unit.period_sql(&scope, start),
                counts = counts_sql(compiled.steps)
            );
            let series: Vec<Value> = self
                .rows(project, &sql)
                .await?
                .iter()
                .map(|row| {
                    let counts: Vec<i64> = row.iter().skip(1).map(as_i64).collect();
                    json!({"date": unit.period_start(row.first().map_or(0, as_i64)), "counts": counts})
                })
                .collect();
            extra.insert("series".into(), Value::Array(series));
        }
        Ok(table.into_json(started.elapsed(), extra))
    }
}

/// Per step: users, conversion from step 1 and from the step before, and
/// the median and average seconds from the step before.
fn step_details(request: &FunnelRequest, row: &[Value], steps: usize) -> Value {
    let count = |i: usize| row.get(i).map_or(0, as_i64);
    let first = count(0);
    let seconds = |v: Option<&Value>| v.and_then(Value::as_f64).map(|ms| ms / 1000.0);
    let details: Vec<Value> = (0..steps)
        .map(|i| {
            let users = count(i);
            let rate = |base: i64| {
                if base > 0 {
                    json!(users as f64 / base as f64)
                } else {
                    Value::Null
                }
            };
            let (median, average) = if i == 0 {
                (None, None)
            } else {
                let at = steps + 2 * (i - 1);
                (seconds(row.get(at)), seconds(row.get(at + 1)))
            };
            json!({
                "step": i + 1,
                "collection": request.steps[i].collection,
                "count": users,
                "conversion_rate": rate(first),
                "step_conversion_rate": if i == 0 { rate(first) } else { rate(count(i - 1)) },
                "median_seconds_from_previous": median,
                "average_seconds_from_previous": average,
            })
        })
        .collect();
    Value::Array(details)
}

/// Rows `[step, dimension, count]`: the 15 dimension values with the most
/// step-1 users, then "Others" summing the rest.
fn dimension_table(rows: Vec<Vec<Value>>, steps: usize) -> Table {
    let mut values: Vec<(String, Vec<i64>)> = rows
        .iter()
        .map(|row| {
            let label = row.first().map_or_else(|| "(not set)".into(), as_label);
            let counts = (1..=steps).map(|i| row.get(i).map_or(0, as_i64)).collect();
            (label, counts)
        })
        .filter(|(_, counts): &(String, Vec<i64>)| counts.first().copied().unwrap_or(0) > 0)
        .collect();
    values.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then_with(|| a.0.cmp(&b.0)));
    let mut shown: Vec<(String, Vec<i64>)> = values.iter().take(TOP_DIMENSIONS).cloned().collect();
    if values.len() > TOP_DIMENSIONS {
        let mut others = vec![0i64; steps];
        for (_, counts) in &values[TOP_DIMENSIONS..] {
            for (total, c) in others.iter_mut().zip(counts) {
                *total += c;
            }
        }
        shown.push(("Others".into(), others));
    }
    let mut table = Table::new(&[
        ("step", "STRING"),
        ("dimension", "STRING"),
        ("count", "LONG"),
    ]);
    for (label, counts) in shown {
        for (i, count) in counts.iter().enumerate() {
            table.rows.push(vec![
                json!(format!("Step {}", i + 1)),
                json!(label),
                json!(count),
            ]);
        }
    }
    table
}

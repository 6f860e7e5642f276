//! `/retention/analyze`: Rakam's retention request and response. Cohorts
//! are periods (DAY, WEEK, MONTH in the request's zone) of the first
//! action; lead `k` counts the cohort's users who did the returning action
//! in period `cohort + k + 1`, and lead `null` is the cohort's size.

use std::time::Instant;

use crate::Project;
use rakam_udf::retention::{
    CohortKind, RetentionSpec, FIRST_ACTION, FIRST_ACTION_BEFORE_RANGE, LEAD_BITS, MAX_PERIODS,
    RETURNING_ACTION,
};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{AnalysisError, Result};
use crate::result::{as_i64, as_label, Table};
use crate::scope::{timestamp_literal, DateRange, PeriodUnit, TimeScope};
use crate::sql::{ident, optional_filter, string_literal};
use crate::{Analyzer, ProjectView};

/// Rakam reported at most 15 leads; that stays the default, not a cap.
pub const DEFAULT_PERIODS: i64 = 15;

#[derive(Debug, Clone, Deserialize)]
pub struct RetentionAction {
    pub collection: String,
    #[serde(default, alias = "filterExpression")]
    pub filter: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RetentionRequest {
    #[serde(default)]
    pub first_action: Option<RetentionAction>,
    #[serde(default)]
    pub returning_action: Option<RetentionAction>,
    #[serde(alias = "dateUnit")]
    pub date_unit: Option<String>,
    #[serde(default)]
    pub dimension: Option<String>,
    /// How many leads to report after the cohort's own period.
    #[serde(default)]
    pub period: Option<i64>,
    #[serde(flatten)]
    pub range: DateRange,
    /// Rakam's flag for estimated counts; accepted and ignored, because
    /// the one-pass functions count people exactly at no extra cost.
    #[serde(default)]
    pub approximate: Option<bool>,
    #[serde(default)]
    pub connectors: Option<Vec<String>>,
    /// `recurring` (Rakam's: every period with a first action is a cohort)
    /// or `first_time` (a user's cohort is their first first action ever).
    #[serde(default, alias = "cohortKind", alias = "cohort_kind")]
    pub kind: Option<String>,
}

fn cohort_kind(text: Option<&str>) -> Result<CohortKind> {
    match text.map(|t| t.to_ascii_lowercase().replace('-', "_")) {
        None => Ok(CohortKind::Recurring),
        Some(t) if t == "recurring" => Ok(CohortKind::Recurring),
        Some(t) if t == "first_time" || t == "first" => Ok(CohortKind::FirstTime),
        Some(t) => Err(AnalysisError::invalid(format!(
            "kind {t:?} is not recurring or first_time"
        ))),
    }
}

fn max_period_ms(unit: PeriodUnit) -> i64 {
    match unit {
        PeriodUnit::Day => 86_400_000,
        PeriodUnit::Week => 7 * 86_400_000,
        PeriodUnit::Month => 31 * 86_400_000,
    }
}

struct Compiled {
    sql: String,
    has_dimension: bool,
}

fn compile(
    view: &ProjectView,
    request: &RetentionRequest,
    scope: &TimeScope,
) -> Result<(Compiled, PeriodUnit)> {
    let unit = PeriodUnit::parse(
        request
            .date_unit
            .as_deref()
            .ok_or_else(|| AnalysisError::invalid("date_unit body parameter is required"))?,
    )?;
    let periods = request.period.unwrap_or(DEFAULT_PERIODS);
    if !(0..=MAX_PERIODS).contains(&periods) {
        return Err(AnalysisError::invalid(format!(
            "period must be 0..={MAX_PERIODS}"
        )));
    }
    let kind = cohort_kind(request.kind.as_deref())?;
    let spec = RetentionSpec { kind, periods };
    let action_collections = |action: &Option<RetentionAction>| -> Result<Vec<String>> {
        match action {
            Some(a) => {
                view.schema(&a.collection)?;
                Ok(vec![a.collection.clone()])
            }
            None => Ok(view.collection_names()),
        }
    };
    let first_collections = action_collections(&request.first_action)?;
    let returning_collections = action_collections(&request.returning_action)?;
    let first_filter = optional_filter(
        "first_action.filter",
        request
            .first_action
            .as_ref()
            .and_then(|a| a.filter.as_deref()),
    )?;
    let returning_filter = optional_filter(
        "returning_action.filter",
        request
            .returning_action
            .as_ref()
            .and_then(|a| a.filter.as_deref()),
    )?;
    let mut collections = first_collections.clone();
    for c in &returning_collections {
        if !collections.contains(c) {
            collections.push(c.clone());
        }
    }
    collections.sort();
    if collections.is_empty() {
        return Err(AnalysisError::invalid("the project has no collections yet"));
    }
    let connectors = view.connectors(&collections, request.connectors.as_deref(), None)?;
    let dimension = request.dimension.as_deref().filter(|d| !d.is_empty());
    if let Some(d) = dimension {
        if !first_collections
            .iter()
            .any(|c| view.column_type(c, d).ok().flatten().is_some())
        {
            return Err(AnalysisError::invalid(format!(
                "dimension {d:?} is not a column of the first action's collection"
            )));
        }
    }
    let in_range = scope.time_predicate(0);
    let returns_until = scope
        .end_ms
        .saturating_add((periods + 1).saturating_mul(max_period_ms(unit)));
    let returning_time = format!(
        "_time >= {} AND _time < {}",
        timestamp_literal(scope.start_ms),
        timestamp_literal(returns_until)
    );
    let before = scope.before_start_predicate();
    let mut selects = Vec::new();
    for collection in &collections {
        let is_first = first_collections.contains(collection);
        let is_returning = returning_collections.contains(collection);
        let mut flags = Vec::new();
        let mut conditions = Vec::new();
        if is_first {
            flags.push(format!(
                "(CASE WHEN {first_filter} AND {in_range} THEN {FIRST_ACTION} ELSE 0 END)"
            ));
            conditions.push(format!("({first_filter} AND {in_range})"));
            if kind == CohortKind::FirstTime {
                flags.push(format!(
                    "(CASE WHEN {first_filter} AND {before} THEN {FIRST_ACTION_BEFORE_RANGE} ELSE 0 END)"
                ));
                conditions.push(format!("({first_filter} AND {before})"));
            }
        }
        if is_returning {
            flags.push(format!(
                "(CASE WHEN {returning_filter} AND {returning_time} THEN {RETURNING_ACTION} ELSE 0 END)"
            ));
            conditions.push(format!("({returning_filter} AND {returning_time})"));
        }
        let dimension_column = match dimension {
            Some(d) if is_first && view.column_type(collection, d)?.is_some() => {
                format!(", CAST({} AS VARCHAR) AS d", ident(d))
            }
            Some(_) => ", CAST(NULL AS VARCHAR) AS d".into(),
            None => String::new(),
        };
        selects.push(format!(
            "SELECT {conn} AS c, {period} AS p, {flags} AS f{dimension_column} FROM {table} WHERE {conditions}",
            conn = connectors.get(collection).map_or("NULL", String::as_str),
            period = unit.period_sql(scope, "_time"),
            flags = flags.join(" + "),
            table = ident(collection),
            conditions = conditions.join(" OR "),
        ));
    }
    let spec_literal = string_literal(&spec.to_spec_string());
    let mask = (1i64 << LEAD_BITS) - 1;
    let first_flags = FIRST_ACTION | FIRST_ACTION_BEFORE_RANGE;
    let sql = if dimension.is_some() {
        // First actions count for their own dimension value, returns for all
        // of the user's values. Events are first reduced to distinct
        // (person, period, value) rows with their flags OR-ed, so the join
        // below works on those instead of on every event.
        format!(
            "WITH retention_events AS ({events}), \
             person_periods AS (SELECT c, p, d, bit_or(f) AS f FROM retention_events WHERE c IS NOT NULL GROUP BY c, p, d), \
             user_dimensions AS (SELECT DISTINCT c, d FROM person_periods WHERE (f & {first_flags}) <> 0), \
             tagged AS (SELECT e.c AS c, u.d AS d, e.p AS p, \
                 (CASE WHEN e.d IS NOT DISTINCT FROM u.d THEN e.f & {first_flags} ELSE 0 END) + (e.f & {RETURNING_ACTION}) AS f \
                 FROM person_periods e JOIN user_dimensions u ON e.c = u.c), \
             retention_users AS (SELECT c, d, rakam_retention(p, f, {spec_literal}) AS r FROM tagged WHERE c IS NOT NULL AND f <> 0 GROUP BY c, d), \
             cells AS (SELECT d, unnest(r) AS v FROM retention_users) \
             SELECT d, (v & {mask}) - 1 AS lead, count(*) AS users FROM cells GROUP BY 1, 2",
            events = selects.join(" UNION ALL ")
        )
    } else {
        format!(
            "WITH retention_events AS ({events}), \
             person_periods AS (SELECT c, p, bit_or(f) AS f FROM retention_events WHERE c IS NOT NULL GROUP BY c, p), \
             retention_users AS (SELECT c, rakam_retention(p, f, {spec_literal}) AS r FROM person_periods GROUP BY c), \
             cells AS (SELECT unnest(r) AS v FROM retention_users) \
             SELECT v >> {LEAD_BITS} AS cohort, (v & {mask}) - 1 AS lead, count(*) AS users FROM cells GROUP BY 1, 2",
            events = selects.join(" UNION ALL ")
        )
    };
    Ok((
        Compiled {
            sql,
            has_dimension: dimension.is_some(),
        },
        unit,
    ))
}

impl Analyzer {
    pub async fn retention(&self, project: &Project, request: &RetentionRequest) -> Result<Value> {
        let started = Instant::now();
        let scope = request.range.scope()?;
        let view = self.view(project).await?;
        let (compiled, unit) = compile(&view, request, &scope)?;
        let rows = self.rows(project, &compiled.sql).await?;
        let mut cells: Vec<(String, i64, i64)> = rows
            .iter()
            .map(|row| {
                let key = if compiled.has_dimension {
                    row.first().map_or_else(|| "(not set)".into(), as_label)
                } else {
                    unit.period_start(row.first().map_or(0, as_i64))
                };
                (
                    key,
                    row.get(1).map_or(-1, as_i64),
                    row.get(2).map_or(0, as_i64),
                )
            })
            .collect();
        cells.sort();
        let first = if compiled.has_dimension {
            "dimension"
        } else {
            "date"
        };
        let mut table = Table::new(&[(first, "STRING"), ("lead", "LONG"), ("count", "LONG")]);
        for (key, lead, count) in cells {
            let lead = if lead < 0 { Value::Null } else { json!(lead) };
            table.rows.push(vec![json!(key), lead, json!(count)]);
        }
        Ok(table.into_json(started.elapsed(), Map::new()))
    }
}

//! `/event-explorer/analyze` and `/event-explorer/statistics`: Rakam's
//! segmentation. A measure over the chosen collections, grouped and
//! segmented by a column or a time reference; column groupings keep the
//! top values and sum the rest as "Others".

use std::time::Instant;

use crate::Project;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{AnalysisError, Result};
use crate::result::{as_i64, Table};
use crate::scope::{DateRange, TimeScope};
use crate::sql::{ident, optional_filter, string_literal, TimeReference};
use crate::{Analyzer, ProjectView};

/// Rakam's limits: 15 groups and 20 segments, the rest as "Others".
pub const TOP_GROUPS: usize = 15;
pub const TOP_SEGMENTS: usize = 20;
/// The most values a request may ask to show before folding.
pub const MAX_SHOWN: usize = 10_000;
const COLLECTION: &str = "_collection";

#[derive(Debug, Clone, Deserialize)]
pub struct Measure {
    #[serde(default)]
    pub column: Option<String>,
    pub aggregation: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Reference {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExplorerRequest {
    #[serde(default)]
    pub collections: Vec<String>,
    pub measure: Option<Measure>,
    #[serde(default)]
    pub grouping: Option<Reference>,
    #[serde(default)]
    pub segment: Option<Reference>,
    #[serde(default, rename = "filterExpression", alias = "filter")]
    pub filter_expression: Option<String>,
    #[serde(flatten)]
    pub range: DateRange,
    /// How many groups to show before "Others" (default 15, Rakam's).
    #[serde(default, rename = "groupLimit", alias = "group_limit")]
    pub group_limit: Option<usize>,
    /// How many segments to show before "Others" (default 20, Rakam's).
    #[serde(default, rename = "segmentLimit", alias = "segment_limit")]
    pub segment_limit: Option<usize>,
}

fn shown(field: &str, value: Option<usize>, default: usize) -> Result<usize> {
    match value {
        None => Ok(default),
        Some(n) if (1..=MAX_SHOWN).contains(&n) => Ok(n),
        Some(n) => Err(AnalysisError::invalid(format!(
            "{field} {n} is not between 1 and {MAX_SHOWN}"
        ))),
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct StatisticsRequest {
    #[serde(default)]
    pub collections: Option<Vec<String>>,
    #[serde(default)]
    pub dimension: Option<String>,
    #[serde(default, rename = "filterExpression", alias = "filter")]
    pub filter_expression: Option<String>,
    #[serde(flatten)]
    pub range: DateRange,
}

/// `GET /funnel/segments`: the time references a TIMESTAMP dimension takes.
pub fn funnel_segments() -> Value {
    let values: Vec<Value> = TimeReference::ALL
        .iter()
        .map(|r| json!({"value": r.name(), "displayName": r.display_name()}))
        .collect();
    json!({ "TIMESTAMP": values })
}

/// `GET /event-explorer/extra_dimensions`.
pub fn extra_dimensions() -> Value {
    let mut out = Map::new();
    for reference in TimeReference::ALL {
        if let Some(list) = out
            .entry(reference.category())
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
        {
            list.push(json!(reference.display_name()));
        }
    }
    Value::Object(out)
}

/// A grouping or segment resolved to SQL.
struct Axis {
    /// Name of the output column's prefix (`country`, `_time`, `_collection`).
    name: String,
    /// Whether only the top values are shown (column axes, not time).
    ranked: bool,
    /// Per collection, the SQL of the axis value of an event.
    per_collection: Vec<String>,
    /// Set when the values are period numbers, labelled after grouping.
    bucket: Option<TimeReference>,
}

impl Axis {
    /// The output (label) of the axis column `column` in the final query.
    fn output(&self, column: &str) -> String {
        self.bucket
            .map_or_else(|| column.to_string(), |r| r.bucket_label_sql(column))
    }
}

fn axis(
    view: &ProjectView,
    scope: &TimeScope,
    collections: &[String],
    reference: &Reference,
) -> Result<Axis> {
    match reference.kind.to_ascii_uppercase().as_str() {
        "REFERENCE" => {
            let time = TimeReference::parse(&reference.value).ok_or_else(|| {
                AnalysisError::invalid(format!("{:?} is not a time reference", reference.value))
            })?;
            let bucket = time.bucket_sql(scope, "_time");
            let value = bucket
                .clone()
                .unwrap_or_else(|| time.label_sql(scope, "_time"));
            Ok(Axis {
                name: "_time".into(),
                ranked: false,
                per_collection: vec![value; collections.len()],
                bucket: bucket.map(|_| time),
            })
        }
        "COLUMN" => {
            let column = reference.value.trim();
            let mut per_collection = Vec::new();
            let mut found = false;
            for collection in collections {
                if column == COLLECTION {
                    found = true;
                    per_collection.push(string_literal(collection));
                } else if view.column_type(collection, column)?.is_some() {
                    found = true;
                    per_collection.push(format!("CAST({} AS VARCHAR)", ident(column)));
                } else {
                    per_collection.push("CAST(NULL AS VARCHAR)".into());
                }
            }
            if !found {
                return Err(AnalysisError::invalid(format!(
                    "{column:?} is not a column of the chosen collections"
                )));
            }
            Ok(Axis {
                name: column.to_string(),
                ranked: true,
                per_collection,
                bucket: None,
            })
        }
        other => Err(AnalysisError::invalid(format!(
            "reference type {other:?} is not COLUMN or REFERENCE"
        ))),
    }
}

/// The aggregate SQL over column `v`, and the type of its result.
fn aggregate(
    view: &ProjectView,
    collections: &[String],
    measure: &Measure,
) -> Result<(String, String)> {
    let aggregation = measure.aggregation.to_ascii_uppercase();
    const AGGREGATIONS: [&str; 7] = [
        "COUNT",
        "COUNT_UNIQUE",
        "SUM",
        "MINIMUM",
        "MAXIMUM",
        "AVERAGE",
        "APPROXIMATE_UNIQUE",
    ];
    if !AGGREGATIONS.contains(&aggregation.as_str()) {
        return Err(AnalysisError::invalid(format!(
            "aggregation {aggregation:?} is not one of {}",
            AGGREGATIONS.join(", ")
        )));
    }
    if aggregation == "COUNT" {
        return Ok(("count(*)".into(), "LONG".into()));
    }
    let column = measure
        .column
        .as_deref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            AnalysisError::invalid(format!("measure.column is required for {aggregation}"))
        })?;
    let column_type = collections
        .iter()
        .find_map(|c| view.column_type(c, column).ok().flatten().cloned())
        .ok_or_else(|| {
            AnalysisError::invalid(format!(
                "{column:?} is not a column of the chosen collections"
            ))
        })?;
    let numeric = matches!(
        column_type,
        rakam_model::FieldType::Long | rakam_model::FieldType::Double
    );
    let needs_number = |what: &str| {
        if numeric {
            Ok(())
        } else {
            Err(AnalysisError::invalid(format!(
                "{what} needs a numeric column; {column:?} is {}",
                column_type.name()
            )))
        }
    };
    Ok(match aggregation.as_str() {
        "COUNT_UNIQUE" => ("count(DISTINCT v)".into(), "LONG".into()),
        "APPROXIMATE_UNIQUE" => ("approx_distinct(v)".into(), "LONG".into()),
        "SUM" => {
            needs_number("SUM")?;
            ("sum(v)".into(), column_type.name())
        }
        "AVERAGE" => {
            needs_number("AVERAGE")?;
            ("avg(v)".into(), "DOUBLE".into())
        }
        "MINIMUM" => ("min(v)".into(), column_type.name()),
        // MAXIMUM: the names were checked above.
        _ => ("max(v)".into(), column_type.name()),
    })
}

impl Analyzer {
    pub async fn explore(&self, project: &Project, request: &ExplorerRequest) -> Result<Value> {
        let started = Instant::now();
        if request.collections.is_empty() {
            return Err(AnalysisError::invalid(
                "collections must name at least one collection",
            ));
        }
        let measure = request
            .measure
            .as_ref()
            .ok_or_else(|| AnalysisError::invalid("measure body parameter is required"))?;
        let scope = request.range.scope()?;
        let view = self.view(project).await?;
        let collections = request.collections.clone();
        for collection in &collections {
            view.schema(collection)?;
        }
        let default_segment = Reference {
            kind: "COLUMN".into(),
            value: COLLECTION.into(),
        };
        let segment = axis(
            &view,
            &scope,
            &collections,
            request.segment.as_ref().unwrap_or(&default_segment),
        )?;
        let grouping = request
            .grouping
            .as_ref()
            .map(|g| axis(&view, &scope, &collections, g))
            .transpose()?;
        let (aggregate_sql, value_type) = aggregate(&view, &collections, measure)?;
        let group_limit = shown("groupLimit", request.group_limit, TOP_GROUPS)?;
        let segment_limit = shown("segmentLimit", request.segment_limit, TOP_SEGMENTS)?;
        let filter = optional_filter("filterExpression", request.filter_expression.as_deref())?;
        let time = scope.time_predicate(0);
        let value_column = match measure.column.as_deref().filter(|c| !c.is_empty()) {
            Some(c) if !measure.aggregation.eq_ignore_ascii_case("COUNT") => Some(c.to_string()),
            _ => None,
        };
        let mut selects = Vec::new();
        for (i, collection) in collections.iter().enumerate() {
            let v = match &value_column {
                Some(c) if view.column_type(collection, c)?.is_some() => ident(c),
                _ => "NULL".into(),
            };
            let g = grouping.as_ref().map_or_else(
                || "CAST(NULL AS VARCHAR)".into(),
                |g| g.per_collection[i].clone(),
            );
            selects.push(format!(
                "SELECT {g} AS g, {s} AS s, {v} AS v FROM {table} WHERE {time} AND {filter}",
                s = segment.per_collection[i],
                table = ident(collection),
            ));
        }
        let events = format!("WITH explorer_events AS ({})", selects.join(" UNION ALL "));
        // An axis folds only when it may have more values than it shows:
        // `_collection` has one per chosen collection.
        let folds = |axis: &Axis, limit: usize| {
            (axis.ranked && !(axis.name == COLLECTION && collections.len() <= limit))
                .then_some(limit)
        };
        let ranked = Ranked {
            group: grouping.as_ref().and_then(|g| folds(g, group_limit)),
            segment: folds(&segment, segment_limit),
        };
        let g_label = |g_expr: &str| {
            grouping
                .as_ref()
                .map_or_else(|| g_expr.to_string(), |g| g.output(g_expr))
        };
        let (rows, grouped) = match reaggregate(&aggregate_sql) {
            Some(merge) if ranked.any() => {
                let sql = ranked.folded_sql(
                    &events,
                    &aggregate_sql,
                    merge,
                    &g_label("g"),
                    &segment.output("s"),
                );
                let mut rows = self.rows(project, &sql).await?;
                let grouped = rows
                    .iter_mut()
                    .any(|row| row.pop().and_then(|f| f.as_bool()) == Some(true));
                (rows, grouped)
            }
            _ => {
                let mut grouped = false;
                let mut g_expr = "g".to_string();
                let mut s_expr = "s".to_string();
                if let Some(limit) = ranked.group {
                    if let Some(top) = self
                        .top_values(project, &events, "g", &aggregate_sql, limit)
                        .await?
                    {
                        g_expr = others_case("g", &top);
                        grouped = true;
                    }
                }
                if let Some(limit) = ranked.segment {
                    if let Some(top) = self
                        .top_values(project, &events, "s", &aggregate_sql, limit)
                        .await?
                    {
                        s_expr = others_case("s", &top);
                        grouped = true;
                    }
                }
                // Period buckets are grouped as numbers and labelled per
                // group; the labels sort as the numbers do.
                let sql = format!(
                    "{events} SELECT {} AS group_label, {} AS segment_label, {aggregate_sql} AS value FROM explorer_events GROUP BY {g_expr}, {s_expr} ORDER BY {g_expr} NULLS FIRST, {s_expr} NULLS FIRST",
                    g_label(&g_expr),
                    segment.output(&s_expr),
                );
                (self.rows(project, &sql).await?, grouped)
            }
        };
        let segment_name = format!("{}_segment", segment.name);
        let mut table = match &grouping {
            Some(g) => Table::new(&[
                (&format!("{}_group", g.name), "STRING"),
                (&segment_name, "STRING"),
                ("value", &value_type),
            ]),
            None => Table::new(&[(&segment_name, "STRING"), ("value", &value_type)]),
        };
        for row in rows {
            let mut row = row.into_iter();
            let (g, s, v) = (row.next(), row.next(), row.next());
            let (s, v) = (s.unwrap_or(Value::Null), v.unwrap_or(Value::Null));
            table.rows.push(match grouping {
                Some(_) => vec![g.unwrap_or(Value::Null), s, v],
                None => vec![s, v],
            });
        }
        let mut extra = Map::new();
        extra.insert("grouped".into(), json!(grouped));
        Ok(table.into_json(started.elapsed(), extra))
    }

    /// The `limit` values of `column` with the largest measure, or `None`
    /// when there are no more than `limit` values (nothing to fold).
    async fn top_values(
        &self,
        project: &Project,
        events: &str,
        column: &str,
        aggregate_sql: &str,
        limit: usize,
    ) -> Result<Option<Vec<Value>>> {
        let sql = format!(
            "{events} SELECT {column}, {aggregate_sql} AS value FROM explorer_events GROUP BY 1 ORDER BY 2 DESC NULLS LAST, 1 ASC NULLS LAST LIMIT {}",
            limit + 1
        );
        let rows = self.rows(project, &sql).await?;
        if rows.len() <= limit {
            return Ok(None);
        }
        Ok(Some(
            rows.into_iter()
                .take(limit)
                .filter_map(|r| r.into_iter().next())
                .collect(),
        ))
    }

    pub async fn statistics(
        &self,
        project: &Project,
        request: &StatisticsRequest,
    ) -> Result<Value> {
        let started = Instant::now();
        let scope = request.range.scope()?;
        let view = self.view(project).await?;
        let collections = match &request.collections {
            Some(list) if !list.is_empty() => {
                for c in list {
                    view.schema(c)?;
                }
                list.clone()
            }
            _ => view.collection_names(),
        };
        let reference = match request.dimension.as_deref().filter(|d| !d.is_empty()) {
            Some(d) => Some(TimeReference::parse(d).ok_or_else(|| {
                AnalysisError::invalid(format!("dimension {d:?} is not a time reference"))
            })?),
            None => None,
        };
        let mut table = match reference {
            Some(r) => Table::new(&[
                ("collection", "STRING"),
                (&r.name().to_ascii_lowercase(), "STRING"),
                ("total", "LONG"),
            ]),
            None => Table::new(&[("collection", "STRING"), ("total", "LONG")]),
        };
        if collections.is_empty() {
            return Ok(table.into_json(started.elapsed(), Map::new()));
        }
        let time = scope.time_predicate(0);
        let filter = optional_filter("filterExpression", request.filter_expression.as_deref())?;
        // Periods are counted as numbers and labelled once per group, as in
        // `explore`.
        let (dimension, label) = match reference {
            None => ("CAST(NULL AS VARCHAR)".to_string(), "d".to_string()),
            Some(r) => match r.bucket_sql(&scope, "_time") {
                Some(bucket) => (bucket, r.bucket_label_sql("d")),
                None => (r.label_sql(&scope, "_time"), "d".to_string()),
            },
        };
        let selects: Vec<String> = collections
            .iter()
            .map(|c| {
                format!(
                    "SELECT {} AS collection, {dimension} AS d FROM {} WHERE {time} AND {filter}",
                    string_literal(c),
                    ident(c)
                )
            })
            .collect();
        let sql = format!(
            "SELECT collection, {label} AS d_label, count(*) AS total FROM ({}) GROUP BY collection, d ORDER BY collection, d",
            selects.join(" UNION ALL ")
        );
        for row in self.rows(project, &sql).await? {
            let collection = row.first().cloned().unwrap_or(Value::Null);
            let total = json!(row.get(2).map_or(0, as_i64));
            table.rows.push(match reference {
                Some(_) => vec![
                    collection,
                    row.get(1).cloned().unwrap_or(Value::Null),
                    total,
                ],
                None => vec![collection, total],
            });
        }
        Ok(table.into_json(started.elapsed(), Map::new()))
    }
}

/// The limits of the column axes whose values beyond the top are folded
/// into "Others".
struct Ranked {
    group: Option<usize>,
    segment: Option<usize>,
}

impl Ranked {
    fn any(&self) -> bool {
        self.group.is_some() || self.segment.is_some()
    }

    /// One scan for an aggregate whose partial results merge (`merge`):
    /// the events are aggregated per (group, segment) once, each ranked
    /// axis's values are ranked by their merged total (largest first, then
    /// by value, as `top_values` orders them), and the cells beyond the top
    /// are merged into "Others". The last column says whether a cell holds
    /// folded values.
    fn folded_sql(
        &self,
        events: &str,
        aggregate_sql: &str,
        merge: &str,
        g_label: &str,
        s_label: &str,
    ) -> String {
        let fold = |column: &str, limit: Option<usize>| match limit {
            Some(limit) => (
                format!("CASE WHEN {column}_rank <= {limit} THEN {column} ELSE 'Others' END"),
                format!("{column}_rank > {limit}"),
            ),
            None => (column.to_string(), "false".to_string()),
        };
        let (g_fold, g_beyond) = fold("g", self.group);
        let (s_fold, s_beyond) = fold("s", self.segment);
        format!(
            "{events}, \
             explorer_cells AS (SELECT g, s, {aggregate_sql} AS value FROM explorer_events GROUP BY g, s), \
             explorer_totals AS (SELECT g, s, value, {merge}(value) OVER (PARTITION BY g) AS g_total, {merge}(value) OVER (PARTITION BY s) AS s_total FROM explorer_cells), \
             explorer_ranks AS (SELECT g, s, value, \
                 dense_rank() OVER (ORDER BY g_total DESC NULLS LAST, g ASC NULLS LAST) AS g_rank, \
                 dense_rank() OVER (ORDER BY s_total DESC NULLS LAST, s ASC NULLS LAST) AS s_rank \
                 FROM explorer_totals), \
             explorer_folded AS (SELECT {g_fold} AS g, {s_fold} AS s, value, ({g_beyond}) OR ({s_beyond}) AS folded FROM explorer_ranks) \
             SELECT {g_label} AS group_label, {s_label} AS segment_label, {merge}(value) AS value, bool_or(folded) AS folded \
             FROM explorer_folded GROUP BY g, s ORDER BY g NULLS FIRST, s NULLS FIRST"
        )
    }
}

/// The aggregate that merges partial results of `aggregate_sql`, for those
/// that have one (unique counts and averages do not merge).
fn reaggregate(aggregate_sql: &str) -> Option<&'static str> {
    match aggregate_sql {
        "count(*)" | "sum(v)" => Some("sum"),
        "min(v)" => Some("min"),
        "max(v)" => Some("max"),
        _ => None,
    }
}

fn others_case(column: &str, top: &[Value]) -> String {
    let mut keep: Vec<String> = top
        .iter()
        .filter_map(|v| v.as_str().map(string_literal))
        .collect();
    let keeps_null = top.iter().any(Value::is_null);
    if keep.is_empty() {
        keep.push("NULL".into());
    }
    let null_case = if keeps_null {
        format!("WHEN {column} IS NULL THEN NULL ")
    } else {
        String::new()
    };
    format!(
        "CASE {null_case}WHEN {column} IN ({}) THEN {column} ELSE 'Others' END",
        keep.join(", ")
    )
}

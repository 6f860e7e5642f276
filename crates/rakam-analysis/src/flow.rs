//! `/flow/analyze` (new in Rakam-rs): user paths from a start event (the
//! events that follow it) or to an end event (the events that lead to it),
//! counted per edge for a Sankey diagram.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::Project;
use rakam_udf::flow::{Direction, FlowSpec, MAX_DEPTH};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::error::{AnalysisError, Result};
use crate::result::{as_i64, Table};
use crate::scope::{DateRange, Span, DAY_MS};
use crate::sql::{ident, optional_filter, string_literal};
use crate::Analyzer;

pub const DEFAULT_DEPTH: i64 = 5;

#[derive(Debug, Clone, Deserialize)]
pub struct FlowEvent {
    pub collection: String,
    #[serde(default, rename = "filterExpression", alias = "filter")]
    pub filter_expression: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FlowRequest {
    /// Paths start here and go forward ...
    #[serde(default, rename = "startEvent", alias = "start_event")]
    pub start_event: Option<FlowEvent>,
    /// ... or end here and go backward.
    #[serde(default, rename = "endEvent", alias = "end_event")]
    pub end_event: Option<FlowEvent>,
    /// Events after (or before) the anchor, 1..=20.
    #[serde(default)]
    pub depth: Option<i64>,
    /// How far from the anchor a path reaches (default one day).
    #[serde(default)]
    pub window: Option<Span>,
    /// A path also ends at a pause longer than this between two events.
    #[serde(default, rename = "sessionGap", alias = "session_gap")]
    pub session_gap: Option<Span>,
    /// Which collections may appear on a path (default: all).
    #[serde(default)]
    pub collections: Option<Vec<String>>,
    #[serde(flatten)]
    pub range: DateRange,
    #[serde(default)]
    pub connectors: Option<Vec<String>>,
}

impl Analyzer {
    pub async fn flow(&self, project: &Project, request: &FlowRequest) -> Result<Value> {
        let started = Instant::now();
        let (anchor, direction) = match (&request.start_event, &request.end_event) {
            (Some(start), None) => (start, Direction::Next),
            (None, Some(end)) => (end, Direction::Previous),
            _ => {
                return Err(AnalysisError::invalid(
                    "give exactly one of startEvent and endEvent",
                ))
            }
        };
        let depth = request.depth.unwrap_or(DEFAULT_DEPTH);
        if !(1..=MAX_DEPTH).contains(&depth) {
            return Err(AnalysisError::invalid(format!(
                "depth must be 1..={MAX_DEPTH}"
            )));
        }
        let window_ms = match &request.window {
            Some(w) => w.to_ms("window")?,
            None => DAY_MS,
        };
        let session_gap_ms = request
            .session_gap
            .as_ref()
            .map(|g| g.to_ms("sessionGap"))
            .transpose()?;
        let scope = request.range.scope()?;
        let view = self.view(project).await?;
        view.schema(&anchor.collection)?;
        let anchor_filter =
            optional_filter("filterExpression", anchor.filter_expression.as_deref())?;
        let mut collections = match &request.collections {
            Some(list) if !list.is_empty() => {
                for c in list {
                    view.schema(c)?;
                }
                list.clone()
            }
            _ => view.collection_names(),
        };
        if !collections.contains(&anchor.collection) {
            collections.push(anchor.collection.clone());
        }
        collections.sort();
        collections.dedup();
        let connectors = view.connectors(
            &collections,
            request.connectors.as_deref(),
            Some(&anchor.collection),
        )?;
        let spec = FlowSpec {
            direction,
            depth: depth as usize,
            window_ms,
            session_gap_ms,
        };
        let time = format!(
            "_time >= {} AND _time < {}",
            crate::scope::timestamp_literal(scope.start_ms.saturating_sub(window_ms)),
            crate::scope::timestamp_literal(scope.end_ms.saturating_add(window_ms))
        );
        let in_range = scope.time_predicate(0);
        let selects: Vec<String> = collections
            .iter()
            .enumerate()
            .map(|(label, collection)| {
                let anchor_flag = if *collection == anchor.collection {
                    format!("(CASE WHEN {anchor_filter} AND {in_range} THEN 1 ELSE 0 END)")
                } else {
                    "0".into()
                };
                format!(
                    "SELECT {conn} AS c, CAST(_time AS BIGINT) AS t, CAST({label} AS BIGINT) AS a, CAST({anchor_flag} AS BIGINT) AS b FROM {table} WHERE {time}",
                    conn = connectors.get(collection).map_or("NULL", String::as_str),
                    table = ident(collection),
                )
            })
            .collect();
        let edges: Vec<String> = (1..=depth)
            .map(|i| format!("SELECT {i} AS step, p[{i}] AS source, p[{}] AS target FROM flow_users WHERE cardinality(p) >= {i}", i + 1))
            .collect();
        let sql = format!(
            "WITH flow_events AS ({events}), \
             flow_users AS (SELECT c, rakam_flow(t, a, b, {spec}) AS p FROM flow_events WHERE c IS NOT NULL GROUP BY c) \
             SELECT step, source, target, count(*) AS users FROM ({edges}) GROUP BY 1, 2, 3",
            events = selects.join(" UNION ALL "),
            spec = string_literal(&spec.to_spec_string()),
            edges = edges.join(" UNION ALL "),
        );
        let label = |v: Option<&Value>| -> Option<String> {
            v.and_then(Value::as_i64)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| collections.get(i).cloned())
        };
        let mut edge_rows: Vec<(i64, String, Option<String>, i64)> = Vec::new();
        for row in self.rows(project, &sql).await? {
            let Some(source) = label(row.get(1)) else {
                continue;
            };
            edge_rows.push((
                row.first().map_or(0, as_i64),
                source,
                label(row.get(2)),
                row.get(3).map_or(0, as_i64),
            ));
        }
        edge_rows.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(b.3.cmp(&a.3))
                .then_with(|| (&a.1, &a.2).cmp(&(&b.1, &b.2)))
        });
        let mut nodes: BTreeMap<(i64, String), (i64, i64)> = BTreeMap::new();
        let mut table = Table::new(&[
            ("step", "LONG"),
            ("source", "STRING"),
            ("target", "STRING"),
            ("users", "LONG"),
        ]);
        let mut edges_json = Vec::new();
        for (step, source, target, users) in &edge_rows {
            let node = nodes.entry((*step, source.clone())).or_default();
            node.0 += users;
            let Some(target) = target else {
                node.1 += users;
                continue;
            };
            // The last step's targets are nodes that no edge leaves.
            if *step == depth {
                nodes.entry((step + 1, target.clone())).or_default().0 += users;
            }
            table.rows.push(vec![
                json!(step),
                json!(source),
                json!(target),
                json!(users),
            ]);
            edges_json
                .push(json!({"step": step, "source": source, "target": target, "users": users}));
        }
        let nodes_json: Vec<Value> = nodes
            .iter()
            .map(|((step, event), (users, dropoff))| {
                json!({"step": step, "event": event, "users": users, "dropoff": dropoff})
            })
            .collect();
        let mut extra = Map::new();
        extra.insert(
            "direction".into(),
            json!(if direction == Direction::Next {
                "next"
            } else {
                "previous"
            }),
        );
        extra.insert("nodes".into(), Value::Array(nodes_json));
        extra.insert("edges".into(), Value::Array(edges_json));
        Ok(table.into_json(started.elapsed(), extra))
    }
}

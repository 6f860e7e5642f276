//! Rakam's `/materialized-view/create` body, checked, and the JSON a view
//! is described with.

use rakam_store_api::{StoredView, ViewDefinition};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::ViewError;

/// Longest view name: with `$materialized_` in front it still fits
/// PostgreSQL's 63-byte identifiers.
const MAX_NAME_BYTES: usize = 48;
/// Ten years: anything longer is "never", which `null` says.
const MAX_INTERVAL_SECS: u64 = 10 * 366 * 86_400;

/// The create request as Rakam's clients send it.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateView {
    #[serde(alias = "tableName")]
    pub table_name: Option<String>,
    pub name: Option<String>,
    pub query: Option<String>,
    #[serde(default, alias = "updateInterval")]
    pub update_interval: Option<Value>,
    #[serde(default)]
    pub incremental: Option<bool>,
    #[serde(default, alias = "realTime")]
    pub real_time: Option<bool>,
    #[serde(default)]
    pub options: Option<Value>,
}

/// A view name: lower-cased, letters, digits and `_`, not starting with a
/// digit, so SQL reads it unquoted as `materialized.<name>`.
pub fn check_table_name(raw: &str) -> Result<String, ViewError> {
    let name = raw.trim().to_lowercase();
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(name)
    } else {
        Err(ViewError::Invalid(format!(
            "table_name {raw:?} must be 1 to {MAX_NAME_BYTES} letters, digits or '_', not starting with a digit"
        )))
    }
}

/// `update_interval`: seconds as a number, or a text such as `"PT1H"`,
/// `"10m"`, `"30s"`, `"1h"`, `"2d"`; `null` means refreshed only on request.
pub fn parse_interval(value: Option<&Value>) -> Result<Option<u64>, ViewError> {
    let invalid = |shown: &Value| {
        ViewError::Invalid(format!(
            "update_interval {shown} is not a duration: give seconds (3600) or text (\"PT1H\", \"1h\", \"10m\", \"30s\")"
        ))
    };
    let seconds = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(number)) => number
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| s.ceil() as u64)
            .ok_or_else(|| invalid(&Value::Number(number.clone())))?,
        Some(Value::String(text)) => {
            parse_text_interval(text).ok_or_else(|| invalid(&Value::String(text.clone())))?
        }
        Some(other) => return Err(invalid(other)),
    };
    if seconds == 0 || seconds > MAX_INTERVAL_SECS {
        return Err(ViewError::Invalid(format!(
            "update_interval must be between one second and {MAX_INTERVAL_SECS} seconds (ten years)"
        )));
    }
    Ok(Some(seconds))
}

fn parse_text_interval(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    if let Some(iso) = text.strip_prefix("pt") {
        return sum_units(iso, |unit| match unit {
            'h' => Some(3600),
            'm' => Some(60),
            's' => Some(1),
            _ => None,
        });
    }
    if let Some(iso) = text.strip_prefix('p') {
        return sum_units(iso, |unit| match unit {
            'd' => Some(86_400),
            'w' => Some(7 * 86_400),
            _ => None,
        });
    }
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(seconds);
    }
    sum_units(&text, |unit| match unit {
        'd' => Some(86_400),
        'h' => Some(3600),
        'm' => Some(60),
        's' => Some(1),
        _ => None,
    })
}

/// `1h30m` → 5400 with `unit` giving each letter's seconds.
fn sum_units(text: &str, unit: impl Fn(char) -> Option<u64>) -> Option<u64> {
    let mut total = 0_u64;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            let amount: u64 = digits.parse().ok()?;
            total = total.checked_add(amount.checked_mul(unit(c)?)?)?;
            digits.clear();
        }
    }
    (digits.is_empty() && total > 0).then_some(total)
}

impl CreateView {
    /// The definition to store, with every field checked but the query
    /// (planned by the caller).
    pub fn into_definition(self) -> Result<ViewDefinition, ViewError> {
        let missing = |field: &str| ViewError::Invalid(format!("{field} is required"));
        let table_name = check_table_name(&self.table_name.ok_or_else(|| missing("table_name"))?)?;
        let query = self
            .query
            .map(|q| q.trim().trim_end_matches(';').trim().to_string())
            .filter(|q| !q.is_empty())
            .ok_or_else(|| missing("query"))?;
        Ok(ViewDefinition {
            name: self.name.unwrap_or_else(|| table_name.clone()),
            table_name,
            query,
            update_interval_secs: parse_interval(self.update_interval.as_ref())?.unwrap_or(0),
            incremental: self.incremental.unwrap_or(false),
            real_time: self.real_time.unwrap_or(false),
            options: self.options.unwrap_or(Value::Null),
        })
    }
}

/// A view as `/materialized-view/list` and `/get` describe it: Rakam's
/// fields, `last_update` in epoch milliseconds, and what the rows cover.
pub fn describe(view: &StoredView) -> Value {
    let definition = &view.definition;
    json!({
        "table_name": definition.table_name,
        "name": definition.name,
        "query": definition.query,
        "update_interval": (definition.update_interval_secs > 0).then_some(definition.update_interval_secs),
        "incremental": definition.incremental,
        "real_time": definition.real_time,
        "options": definition.options,
        "last_update": view.state.last_update_ms,
        "covered_through": view.state.covered_through_ms,
        "rows": view.state.rows,
        "refreshes": view.state.generation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_in_every_form_rakam_clients_send() {
        for (given, seconds) in [
            (json!(3600), Some(3600)),
            (json!(1.5), Some(2)),
            (json!("PT1H"), Some(3600)),
            (json!("PT1H30M"), Some(5400)),
            (json!("P1D"), Some(86_400)),
            (json!("10m"), Some(600)),
            (json!("90"), Some(90)),
            (json!("1h30m"), Some(5400)),
            (Value::Null, None),
        ] {
            assert_eq!(parse_interval(Some(&given)).ok(), Some(seconds), "{given}");
        }
        for bad in [
            json!(0),
            json!(-1),
            json!("soon"),
            json!("PT"),
            json!(true),
            json!("1x"),
        ] {
            assert!(parse_interval(Some(&bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn names_are_plain_identifiers() {
        assert_eq!(
            check_table_name("Daily_Users").ok().as_deref(),
            Some("daily_users")
        );
        for bad in ["", "1day", "a-b", "a b", "ä", &"x".repeat(49)] {
            assert!(check_table_name(bad).is_err(), "{bad} accepted");
        }
    }
}

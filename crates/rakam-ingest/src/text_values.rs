use rakam_model::FieldType;
use serde_json::Value;

/// A value that arrived as text (CSV, pixel query parameters), typed by the
/// column it is meant for. Text that does not parse stays text, so it ends
/// up in `_unmapped` rather than being zeroed.
pub fn typed_from_text(text: &str, column_type: Option<&FieldType>, is_time: bool) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    if is_time {
        return text
            .parse::<i64>()
            .map_or_else(|_| Value::String(text.to_string()), Value::from);
    }
    let parsed = match column_type {
        Some(FieldType::Long) => text.trim().parse::<i64>().ok().map(Value::from),
        // Digits a DOUBLE would drop stay text (and so go to `_unmapped`).
        Some(FieldType::Double) if crate::is_integer_beyond_i64(text.trim().as_bytes()) => None,
        Some(FieldType::Double) => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        Some(FieldType::Boolean) => match text.trim().to_ascii_lowercase().as_str() {
            "true" => Some(Value::Bool(true)),
            "false" => Some(Value::Bool(false)),
            _ => None,
        },
        Some(FieldType::Timestamp) => text.trim().parse::<i64>().ok().map(Value::from),
        Some(FieldType::Array(_)) if text.trim_start().starts_with('[') => {
            serde_json::from_str::<Value>(text).ok()
        }
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::String(text.to_string()))
}

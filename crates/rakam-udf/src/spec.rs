//! A function's constant options travel as one string literal,
//! `key=value;key=value`, so SQL callers can read and write them.

use std::collections::BTreeMap;

use datafusion::error::DataFusionError;

#[derive(Debug, thiserror::Error)]
#[error("invalid spec: {0}")]
pub struct SpecError(pub String);

impl From<SpecError> for DataFusionError {
    fn from(error: SpecError) -> Self {
        DataFusionError::Plan(error.to_string())
    }
}

#[derive(Debug)]
pub(crate) struct Spec {
    entries: BTreeMap<String, String>,
}

impl Spec {
    pub fn parse(text: &str, known: &[&str]) -> Result<Self, SpecError> {
        let mut entries = BTreeMap::new();
        for part in text.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((key, value)) = part.split_once('=') else {
                return Err(SpecError(format!("'{part}' is not key=value")));
            };
            let key = key.trim();
            if !known.contains(&key) {
                return Err(SpecError(format!(
                    "unknown key '{key}' (known: {})",
                    known.join(", ")
                )));
            }
            entries.insert(key.to_string(), value.trim().to_string());
        }
        Ok(Self { entries })
    }

    pub fn text(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    pub fn int(&self, key: &str) -> Result<Option<i64>, SpecError> {
        self.text(key)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| SpecError(format!("{key}={v} is not an integer")))
            })
            .transpose()
    }

    pub fn required_int(&self, key: &str) -> Result<i64, SpecError> {
        self.int(key)?
            .ok_or_else(|| SpecError(format!("{key} is required")))
    }
}

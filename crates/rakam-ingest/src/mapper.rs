//! Mappers: steps between `prepare` and schema evolution that may read an
//! event and its context and add fields (GeoIP, user agent, referrer will be
//! mappers). They run in the configured order on every event of every Source.

use rakam_model::{normalize_field_name, FlatProperty, RESERVED_FIELD_NAMES, TIME_COLUMN};
use serde_json::Value;

use crate::context::EventContext;
use crate::prepare::PreparedEvent;
use crate::IngestError;

pub trait Mapper: Send + Sync + std::fmt::Debug {
    /// The name the configuration uses.
    fn name(&self) -> &str;
    /// Reads and changes one event; an error refuses the event.
    fn map(&self, event: &mut MappedEvent<'_>) -> Result<(), IngestError>;
}

/// One event as a mapper sees it: names are already normalised, nested
/// objects flattened, and `_time` parsed.
pub struct MappedEvent<'a> {
    pub(crate) event: &'a mut PreparedEvent,
}

impl MappedEvent<'_> {
    pub fn collection(&self) -> &str {
        &self.event.collection
    }

    pub fn time_ms(&self) -> i64 {
        self.event.time_ms
    }

    pub fn context(&self) -> &EventContext {
        &self.event.context
    }

    /// A field by its normalised name.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.event
            .fields
            .iter()
            .find(|f| f.name == name)
            .map(|f| &f.value)
    }

    /// Sets a field, normalising its name as a client's would be; a field
    /// of that name is replaced. System columns cannot be set.
    pub fn set_field(&mut self, name: &str, value: Value) -> Result<(), IngestError> {
        let name = normalize_field_name(name)?;
        if RESERVED_FIELD_NAMES.contains(&name.as_str()) || name == TIME_COLUMN {
            return Err(rakam_model::ModelError::ReservedName { name }.into());
        }
        match self.event.fields.iter_mut().find(|f| f.name == name) {
            Some(existing) => existing.value = value,
            None => self.event.fields.push(FlatProperty {
                name,
                original_name: None,
                value,
            }),
        }
        Ok(())
    }
}

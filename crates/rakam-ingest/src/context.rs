//! Who sent a request and when. Travels with its events to the mappers;
//! nothing of it is stored unless a mapper stores it.

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::IngestError;

/// The request a batch of events came with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RequestContext {
    /// The client's address: the socket's peer, or the `X-Forwarded-For`
    /// entry a trusted proxy added (see `server.trusted_proxies`).
    pub client_ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// The request's `Referer` header.
    pub referrer: Option<String>,
    /// Server time when the request arrived, epoch milliseconds.
    pub received_at_ms: i64,
    /// A unique id of the request, for logs.
    pub request_id: String,
}

/// What one event asks the mappers to use: Rakam's `_ip`, `_user_agent` and
/// `_referrer` fields, which are instructions, never data (`true` means
/// "the request's", a string names the value, `false` or null means none).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventContext {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    pub referrer: Option<String>,
}

pub(crate) const IP_FIELD: &str = "_ip";
pub(crate) const USER_AGENT_FIELD: &str = "_user_agent";
pub(crate) const REFERRER_FIELD: &str = "_referrer";

impl EventContext {
    /// Takes the magic fields out of an event's properties.
    pub(crate) fn take_from(
        properties: &mut Map<String, Value>,
        request: &RequestContext,
    ) -> Result<Self, IngestError> {
        let ip = match take_instruction(properties, IP_FIELD)? {
            Instruction::None => None,
            Instruction::FromRequest => request.client_ip,
            Instruction::Value(text) => Some(text.trim().parse::<IpAddr>().map_err(|_| {
                IngestError::InvalidValue(format!("_ip {text:?} is not an IP address"))
            })?),
        };
        let user_agent = match take_instruction(properties, USER_AGENT_FIELD)? {
            Instruction::None => None,
            Instruction::FromRequest => request.user_agent.clone(),
            Instruction::Value(text) => Some(text),
        };
        let referrer = match take_instruction(properties, REFERRER_FIELD)? {
            Instruction::None => None,
            Instruction::FromRequest => request.referrer.clone(),
            Instruction::Value(text) => Some(text),
        };
        Ok(Self {
            ip,
            user_agent,
            referrer,
        })
    }
}

enum Instruction {
    None,
    FromRequest,
    Value(String),
}

fn take_instruction(
    properties: &mut Map<String, Value>,
    field: &str,
) -> Result<Instruction, IngestError> {
    match properties.remove(field) {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(Instruction::None),
        Some(Value::Bool(true)) => Ok(Instruction::FromRequest),
        Some(Value::String(text)) => Ok(Instruction::Value(text)),
        Some(other) => Err(IngestError::InvalidValue(format!(
            "{field} must be true, false or a string, not {other}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn properties(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    #[test]
    fn magic_fields_become_context_not_data() {
        let request = RequestContext {
            client_ip: "10.1.2.3".parse().ok(),
            user_agent: Some("curl/8".into()),
            referrer: Some("https://example.com/".into()),
            ..RequestContext::default()
        };
        let mut event = properties(json!({
            "_ip": true, "_user_agent": "Mozilla/5.0", "_referrer": false, "page": "/"
        }));
        let context = EventContext::take_from(&mut event, &request).expect("valid");
        assert_eq!(context.ip, "10.1.2.3".parse().ok());
        assert_eq!(context.user_agent.as_deref(), Some("Mozilla/5.0"));
        assert_eq!(context.referrer, None);
        assert_eq!(event.keys().collect::<Vec<_>>(), ["page"]);
        let mut named = properties(json!({"_ip": "2001:db8::1", "_referrer": true}));
        let context = EventContext::take_from(&mut named, &request).expect("valid");
        assert_eq!(context.ip, "2001:db8::1".parse().ok());
        assert_eq!(context.referrer.as_deref(), Some("https://example.com/"));
        assert!(
            EventContext::take_from(&mut properties(json!({"_ip": "nope"})), &request).is_err()
        );
        assert!(EventContext::take_from(&mut properties(json!({"_ip": 7})), &request).is_err());
    }
}

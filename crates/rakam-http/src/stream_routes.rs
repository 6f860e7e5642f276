//! `GET /stream/subscribe?read_key=…&data=<JSON>`: the live event stream as
//! Server-Sent Events. Rakam's frames (`event: data`, a JSON array of
//! `{project, collection, properties}`), sent as each append is acknowledged
//! instead of every 3 s. The last frame of a stream that cannot go on is
//! `event: error` with `{error, error_code}` (a subscriber that fell behind:
//! 1015, subscribe again).

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use rakam_common::ErrorCode;
use rakam_server::{StreamFrame, StreamRequest};
use rakam_store_api::KeyKind;
use serde_json::json;

use crate::auth::authorize;
use crate::{ApiError, AppState};

/// Comments that keep idle connections (and proxies) from timing out.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|media| media.split(';').next().map(str::trim) == Some("text/event-stream"))
}

pub async fn subscribe(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if !accepts_event_stream(&headers) {
        return Err(ApiError::new(
            ErrorCode::NotAcceptable,
            "the live stream is sent as Server-Sent Events: send Accept: text/event-stream",
        ));
    }
    let project = authorize(&state, &headers, &params, KeyKind::Read).await?;
    let request: StreamRequest = match params.get("data").map(String::as_str) {
        None | Some("") => StreamRequest::default(),
        Some(data) => serde_json::from_str(data).map_err(|e| {
            ApiError::new(
                ErrorCode::MalformedRequest,
                format!("data is not a stream request: {e}"),
            )
        })?,
    };
    let subscription = state.rakam.subscribe(&project, request).await?;
    let frames = futures::stream::unfold(subscription, |mut subscription| async move {
        let frame = subscription.next().await?;
        let event = match frame {
            StreamFrame::Events(events) => Event::default().event("data").data(events.to_string()),
            StreamFrame::Failed { code, message } => Event::default()
                .event("error")
                .data(json!({"error": message, "error_code": code.as_u16()}).to_string()),
        };
        Some((Ok::<_, Infallible>(event), subscription))
    });
    Ok(Sse::new(frames)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clients_that_take_an_event_stream_are_served() {
        let mut headers = HeaderMap::new();
        assert!(!accepts_event_stream(&headers));
        headers.insert(header::ACCEPT, "application/json".parse().expect("value"));
        assert!(!accepts_event_stream(&headers));
        headers.insert(
            header::ACCEPT,
            "application/json, text/event-stream; q=0.9"
                .parse()
                .expect("value"),
        );
        assert!(accepts_event_stream(&headers));
    }
}

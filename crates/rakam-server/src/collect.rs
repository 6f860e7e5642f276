//! Event collection: a Source decodes the body, the key is confirmed, the
//! pipeline stores the events.

use std::collections::HashMap;

use bytes::Bytes;
use rakam_ingest::{IngestError, IngestOutcome, RequestContext, Source};
use rakam_store_api::{KeyKind, ProjectInfo};

use crate::{Rakam, Result, ServiceError};

/// One collection request, as a protocol received it.
#[derive(Debug)]
pub struct CollectRequest {
    pub source: &'static dyn Source,
    /// The project and key of a header or query-string key, checked before
    /// the body was read; `None` when the key is in the body.
    pub authorized: Option<(ProjectInfo, String)>,
    pub body: Bytes,
    pub params: HashMap<String, String>,
    pub context: RequestContext,
}

impl Rakam {
    /// Decodes and stores a request's events. Rakam reads the key of a
    /// collection request from its body, so a body key that differs from
    /// the one checked early is checked too, and wins.
    pub async fn collect(&self, request: CollectRequest) -> Result<IngestOutcome> {
        let CollectRequest {
            source,
            authorized,
            body,
            params,
            context,
        } = request;
        let early = match &authorized {
            Some((project, _)) => Some(self.snapshot(project).await?),
            None => None,
        };
        let limits = self.ingest_limits().clone();
        // The typed decoder needs the project's columns first: a key in the
        // body is looked up without decoding the rest. A key that does not
        // authenticate leaves the request to the general path and its errors.
        let mut typed_target = match (&authorized, &early) {
            (Some((_, key)), Some(snapshot)) => Some((snapshot.clone(), key.clone())),
            _ => None,
        };
        let typed = source.decodes_typed() && self.pipeline.takes_typed();
        if typed && typed_target.is_none() && source.key_in_body() {
            if let Some(key) = rakam_ingest::batch_body_key(&body) {
                if let Ok(project) = self.authenticate(&key, KeyKind::Write, "api.api_key").await {
                    typed_target = Some((self.snapshot(&project).await?, key));
                }
            }
        }
        if let Some((snapshot, typed_key)) = &typed_target {
            if typed {
                let (body, params, snapshot, limits) = (
                    body.clone(),
                    params.clone(),
                    snapshot.clone(),
                    limits.clone(),
                );
                let server_time_ms = rakam_common::time::now_millis();
                let typed = tokio::task::spawn_blocking(move || {
                    let decoded =
                        source.decode_typed(&body, &params, &snapshot, &limits, server_time_ms);
                    (decoded, snapshot)
                })
                .await
                .map_err(|e| IngestError::Malformed(format!("decoder task failed: {e}")))?;
                let (decoded, snapshot) = typed;
                // A different key in the body wins, as on the general path.
                let decoded = match decoded {
                    Ok(batches)
                        if batches
                            .api_key
                            .as_deref()
                            .is_some_and(|key| !key.is_empty() && key != typed_key) =>
                    {
                        Err(rakam_ingest::Decline::Key)
                    }
                    other => other,
                };
                match decoded {
                    Ok(batches) => {
                        return Ok(self.pipeline.ingest_typed(&snapshot, batches).await?)
                    }
                    Err(decline) => {
                        metrics::counter!("rakam_ingest_typed_declined_total", "reason" => decline.as_str())
                            .increment(1);
                    }
                }
            }
        }
        let typed_by = early.clone();
        let decoded = tokio::task::spawn_blocking(move || {
            source.decode(&body, &params, typed_by.as_deref(), &limits)
        })
        .await
        .map_err(|e| IngestError::Malformed(format!("decoder task failed: {e}")))??;
        let body_key = decoded.api_key.as_deref().filter(|key| !key.is_empty());
        let snapshot = match (authorized, body_key) {
            (Some((_, early_key)), Some(key)) if key != early_key => {
                let project = self
                    .authenticate(key, KeyKind::Write, "api.api_key")
                    .await?;
                self.snapshot(&project).await?
            }
            (Some(_), _) => match early {
                Some(snapshot) => snapshot,
                None => return Err(ServiceError::MissingKey("api.api_key is missing".into())),
            },
            (None, Some(key)) => {
                let project = self
                    .authenticate(key, KeyKind::Write, "api.api_key")
                    .await?;
                self.snapshot(&project).await?
            }
            (None, None) => return Err(ServiceError::MissingKey("api.api_key is missing".into())),
        };
        Ok(self
            .pipeline
            .ingest(&snapshot, decoded.events, &context, source.atomicity())
            .await?)
    }
}

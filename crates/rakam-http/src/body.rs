//! Request bodies, read as a stream: the size limit applies to the bytes
//! as they come out of gzip, the whole body must arrive within the read
//! timeout, and decompression runs on the blocking pool, never on the
//! async workers. A key in the body is found from the body's first bytes
//! (`read_until_key`), so a request without a valid key costs at most
//! `KEY_SEARCH_BYTES`, whatever it claims to carry.

use std::io::Write;
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use axum::http::HeaderMap;
// Several gzip members in a row are one body (RFC 1952), as `gzip -c a b` makes.
use flate2::write::MultiGzDecoder as GzDecoder;
use futures::StreamExt;
use rakam_common::ErrorCode;
use tokio::time::Instant;

use crate::body_key::{scan_api_key, KeyScan};
use rakam_server::Ticket;

pub use crate::request::{media_type, off_async, parse_json, read_body};
use crate::ApiError;

/// How much of a body may come before its `api` member. Rakam's clients
/// send `api` first (batches) or after the collection name (single
/// events); a body that hides its key further in must send it in a header.
pub const KEY_SEARCH_BYTES: usize = 1 << 20;

fn too_large(limit: usize, key: &str) -> ApiError {
    ApiError::new(
        ErrorCode::BodyTooLarge,
        format!("the request body is over the limit of {limit} bytes ({key})"),
    )
}

/// The bytes taken out of a body so far: as sent, or as gunzipped.
enum Output {
    /// Not yet known: fewer than two bytes have arrived.
    Undecided(Vec<u8>),
    Plain(Vec<u8>),
    Gzip(Box<GzDecoder<Capped>>),
}

/// A buffer that refuses to grow past its limit.
struct Capped {
    data: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.data.len() + buf.len() > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("over the body limit"));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

pub struct BodyReader {
    stream: BodyDataStream,
    limit: usize,
    limit_key: &'static str,
    deadline: Instant,
    timeout: Duration,
    declared_gzip: bool,
    output: Output,
    /// Compressed bytes received but not yet inflated (see `inflate`).
    pending: Bytes,
    /// While set, inflating stops once this many bytes are out.
    stop_after: Option<usize>,
    ended: bool,
    /// The request's share of `limits.max_inflight_bytes`, grown as the
    /// body comes in.
    ticket: Option<Ticket>,
    declared: Option<usize>,
    /// Set when the body cannot be taken in: answered once it is drained.
    refused: Option<ApiError>,
}

impl BodyReader {
    /// `timeout` counts from now: the whole body must arrive within it.
    pub fn new(
        headers: &HeaderMap,
        body: Body,
        limit: usize,
        limit_key: &'static str,
        timeout: Duration,
    ) -> Result<Self, ApiError> {
        let declared = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|length| length > limit) {
            return Err(too_large(limit, limit_key));
        }
        let declared_gzip = headers
            .get(axum::http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        Ok(Self {
            stream: body.into_data_stream(),
            limit,
            limit_key,
            deadline: Instant::now() + timeout,
            timeout,
            declared_gzip,
            output: Output::Undecided(Vec::new()),
            pending: Bytes::new(),
            stop_after: None,
            ended: false,
            ticket: None,
            declared,
            refused: None,
        })
    }

    /// Counts the body against the server's budget of bytes in flight: the
    /// declared length at once, then what comes out as it comes. Over the
    /// budget, the request is refused (503, retryable).
    pub fn holding(mut self, ticket: Ticket) -> Result<Self, ApiError> {
        self.ticket = Some(ticket);
        if let Some(declared) = self.declared {
            if let Err(error) = self.hold(declared) {
                self.refused = Some(error);
            }
        }
        Ok(self)
    }

    /// Reads what is left of a refused body without keeping it, so the
    /// client, still sending, gets to read the answer (a connection closed
    /// mid-upload shows only as a broken pipe). Bounded by the body timeout.
    async fn discard_rest(&mut self) {
        self.output = Output::Plain(Vec::new());
        self.pending = Bytes::new();
        while !self.ended {
            match tokio::time::timeout_at(self.deadline, self.stream.next()).await {
                Ok(Some(Ok(_))) => {}
                _ => self.ended = true,
            }
        }
    }

    fn hold(&mut self, bytes: usize) -> Result<(), ApiError> {
        let Some(ticket) = self.ticket.as_mut() else {
            return Ok(());
        };
        if ticket.hold(bytes) {
            return Ok(());
        }
        metrics::counter!("rakam_requests_refused_busy_total").increment(1);
        Err(ApiError::new(
            ErrorCode::Unavailable,
            "the server holds as many request bytes as it may (limits.max_inflight_bytes); retry shortly",
        ))
    }

    fn decoded(&self) -> &[u8] {
        match &self.output {
            Output::Undecided(data) | Output::Plain(data) => data,
            Output::Gzip(decoder) => &decoder.get_ref().data,
        }
    }

    /// Reads until `api.api_key` can be told from the body's first bytes.
    pub async fn read_until_key(&mut self) -> Result<Option<String>, ApiError> {
        let mut next_scan = 0usize;
        loop {
            let complete = self.ended && self.pending.is_empty();
            let decoded = self.decoded();
            if complete || decoded.len() >= next_scan {
                match scan_api_key(decoded, complete) {
                    KeyScan::Found(key) => return Ok(key),
                    KeyScan::Absent => return Ok(None),
                    KeyScan::NotAnObject => {
                        return Err(ApiError::new(
                            ErrorCode::MalformedRequest,
                            "the body must be a JSON object",
                        ))
                    }
                    KeyScan::Malformed(why) => {
                        return Err(ApiError::new(ErrorCode::MalformedRequest, why))
                    }
                    KeyScan::NeedMore if decoded.len() >= KEY_SEARCH_BYTES => {
                        return Err(ApiError::new(
                            ErrorCode::MissingKey,
                            format!(
                                "api.api_key was not found in the first {KEY_SEARCH_BYTES} bytes \
                                 of the body; put api first, or send the key in a write_key header"
                            ),
                        ))
                    }
                    // Scanning again only once the prefix has doubled keeps
                    // the work linear in the prefix.
                    KeyScan::NeedMore => {
                        next_scan = (decoded.len() * 2).clamp(4096, KEY_SEARCH_BYTES)
                    }
                }
            }
            self.stop_after = Some(next_scan);
            let read = self.read_chunk().await;
            self.stop_after = None;
            read?;
        }
    }

    /// The rest of the body; the whole of it, decompressed.
    pub async fn read_to_end(self) -> Result<Bytes, ApiError> {
        self.read_to_end_holding().await.map(|(bytes, _)| bytes)
    }

    /// The rest of the body, and the ticket that counts it in flight: keep
    /// it until the request is answered.
    pub async fn read_to_end_holding(mut self) -> Result<(Bytes, Option<Ticket>), ApiError> {
        while !self.ended || !self.pending.is_empty() {
            self.read_chunk().await?;
        }
        let ticket = self.ticket.take();
        let data = match self.output {
            Output::Undecided(data) | Output::Plain(data) => data,
            // Finished when the body ended (`inflate`).
            Output::Gzip(decoder) => {
                decoder
                    .finish()
                    .map_err(|e| gzip_error(false, &e.to_string(), self.limit, self.limit_key))?
                    .data
            }
        };
        Ok((Bytes::from(data), ticket))
    }

    async fn read_chunk(&mut self) -> Result<(), ApiError> {
        if let Some(error) = self.refused.take() {
            self.discard_rest().await;
            return Err(error);
        }
        if !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            return self.take(pending).await;
        }
        if self.ended {
            return Ok(());
        }
        let next = tokio::time::timeout_at(self.deadline, self.stream.next())
            .await
            .map_err(|_| {
                metrics::counter!("rakam_body_read_timeouts_total").increment(1);
                ApiError::new(
                    ErrorCode::BodyReadTimeout,
                    format!(
                        "the request body did not arrive within {} s (server.body_read_timeout_secs)",
                        self.timeout.as_secs()
                    ),
                )
            })?;
        let chunk = match next {
            None => {
                self.ended = true;
                Bytes::new()
            }
            Some(Ok(chunk)) => chunk,
            Some(Err(error)) => {
                return Err(ApiError::new(
                    ErrorCode::CorruptBody,
                    format!("cannot read the request body: {error}"),
                ))
            }
        };
        self.take(chunk).await?;
        let out = self.decoded().len();
        if let Err(error) = self.hold(out) {
            self.discard_rest().await;
            return Err(error);
        }
        Ok(())
    }

    async fn take(&mut self, chunk: Bytes) -> Result<(), ApiError> {
        let (limit, limit_key) = (self.limit, self.limit_key);
        if chunk.is_empty() && !self.ended {
            return Ok(());
        }
        let output = std::mem::replace(&mut self.output, Output::Plain(Vec::new()));
        self.output = match output {
            Output::Undecided(mut head) => {
                head.extend_from_slice(&chunk);
                if head.len() < 2 && !self.ended {
                    Output::Undecided(head)
                } else if self.declared_gzip || head.starts_with(&[0x1f, 0x8b]) {
                    let capped = Capped {
                        data: Vec::new(),
                        limit,
                        exceeded: false,
                    };
                    let decoder = Box::new(GzDecoder::new(capped));
                    self.inflate(decoder, Bytes::from(head)).await?
                } else if head.len() > limit {
                    return Err(too_large(limit, limit_key));
                } else {
                    Output::Plain(head)
                }
            }
            Output::Plain(mut data) => {
                if data.len() + chunk.len() > limit {
                    return Err(too_large(limit, limit_key));
                }
                data.extend_from_slice(&chunk);
                Output::Plain(data)
            }
            Output::Gzip(decoder) => self.inflate(decoder, chunk).await?,
        };
        Ok(())
    }

    /// Feeds compressed bytes to the decoder on the blocking pool. While
    /// the key is searched for, it feeds small slices and stops once
    /// `stop_after` bytes are out, keeping the rest in `pending`: a
    /// highly compressed chunk may not inflate past what the search needs.
    async fn inflate(
        &mut self,
        mut decoder: Box<GzDecoder<Capped>>,
        chunk: Bytes,
    ) -> Result<Output, ApiError> {
        // The decoder holds back some output until it is finished: finish
        // it once the body has ended, so every byte is out.
        let finish = self.ended;
        if chunk.is_empty() && !finish {
            return Ok(Output::Gzip(decoder));
        }
        let stop_after = self.stop_after;
        let slice = if stop_after.is_some() {
            1 << 10
        } else {
            64 << 10
        };
        let (decoder, result) = off_async(move || {
            let mut consumed = 0;
            while consumed < chunk.len() {
                let end = (consumed + slice).min(chunk.len());
                if let Err(error) = decoder.write_all(&chunk[consumed..end]) {
                    return (decoder, Err(error));
                }
                consumed = end;
                if stop_after.is_some_and(|stop| decoder.get_ref().data.len() >= stop) {
                    break;
                }
            }
            if finish && consumed == chunk.len() {
                if let Err(error) = decoder.try_finish() {
                    return (decoder, Err(error));
                }
            }
            (decoder, Ok(chunk.slice(consumed..)))
        })
        .await?;
        match result {
            Ok(rest) => {
                self.pending = rest;
                Ok(Output::Gzip(decoder))
            }
            Err(error) => Err(gzip_error(
                decoder.get_ref().exceeded,
                &error.to_string(),
                self.limit,
                self.limit_key,
            )),
        }
    }
}

fn gzip_error(exceeded: bool, message: &str, limit: usize, limit_key: &str) -> ApiError {
    if exceeded {
        too_large(limit, limit_key)
    } else {
        ApiError::new(
            ErrorCode::CorruptBody,
            format!("the gzip body is corrupt: {message}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(bytes).expect("write");
        encoder.finish().expect("finish")
    }

    fn reader(body: Vec<u8>, limit: usize) -> BodyReader {
        // Many small chunks, as a network delivers them.
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .chunks(7)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let body = Body::from_stream(futures::stream::iter(chunks));
        BodyReader::new(
            &HeaderMap::new(),
            body,
            limit,
            "test",
            Duration::from_secs(5),
        )
        .expect("reader")
    }

    #[tokio::test]
    async fn gzip_limits_apply_as_bytes_come_out() {
        let compressed = gzip(&[b'a'; 10_000]);
        let error = reader(compressed.clone(), 100).read_to_end().await.err();
        assert_eq!(error.map(|e| e.code), Some(ErrorCode::BodyTooLarge));
        let whole = reader(compressed.clone(), 10_000).read_to_end().await.ok();
        assert_eq!(whole.map(|b| b.len()), Some(10_000));
        let truncated = reader(compressed[..compressed.len() - 6].to_vec(), 10_000)
            .read_to_end()
            .await
            .err();
        assert_eq!(truncated.map(|e| e.code), Some(ErrorCode::CorruptBody));
        let plain = reader(vec![b'x'; 101], 100).read_to_end().await.err();
        assert_eq!(plain.map(|e| e.code), Some(ErrorCode::BodyTooLarge));
    }

    #[tokio::test]
    async fn the_key_is_read_before_the_rest() {
        let mut body = br#"{"api": {"api_key": "k"}, "events": ["#.to_vec();
        body.extend(std::iter::repeat_n(b"1,".as_slice(), 1_000_000).flatten());
        body.extend(b"1]}");
        let mut reader = reader(gzip(&body), 64 << 20);
        assert_eq!(
            reader.read_until_key().await.ok().flatten().as_deref(),
            Some("k")
        );
        assert!(
            reader.decoded().len() < 64 << 10,
            "{}",
            reader.decoded().len()
        );
        assert_eq!(
            reader.read_to_end().await.ok().map(|b| b.len()),
            Some(body.len())
        );
    }

    #[tokio::test]
    async fn gzip_members_in_a_row_are_one_body() {
        let mut body = gzip(b"{\"a\": ");
        body.extend(gzip(b"1}"));
        let whole = reader(body, 1 << 20).read_to_end().await.ok();
        assert_eq!(whole.as_deref(), Some(b"{\"a\": 1}".as_slice()));
    }

    #[tokio::test]
    async fn a_small_gzip_body_shows_its_key_once_it_ends() {
        for body in [
            br#"{"api": {"api_key": "k"}, "events": []}"#.as_slice(),
            br#"{"events": [{"collection": "e", "properties": {}}], "api": {"api_key": "k"}}"#,
        ] {
            let mut reader = reader(gzip(body), 1 << 20);
            assert_eq!(
                reader.read_until_key().await.ok().flatten().as_deref(),
                Some("k")
            );
            assert_eq!(reader.read_to_end().await.ok().as_deref(), Some(body));
        }
    }

    #[tokio::test]
    async fn a_body_without_a_key_is_refused_after_a_bounded_prefix() {
        let mut body = br#"{"events": ["#.to_vec();
        body.extend(std::iter::repeat_n(b"1,".as_slice(), 4_000_000).flatten());
        let mut reader = reader(gzip(&body), 256 << 20);
        let error = reader.read_until_key().await.err();
        assert_eq!(error.map(|e| e.code), Some(ErrorCode::MissingKey));
        assert!(reader.decoded().len() < 2 * KEY_SEARCH_BYTES + (64 << 10));
    }

    #[test]
    fn media_types_are_matched_leniently() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            "Application/JSON; charset=UTF-8".parse().expect("header"),
        );
        assert_eq!(media_type(&headers), "application/json");
    }
}

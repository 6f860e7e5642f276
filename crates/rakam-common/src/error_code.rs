use serde::Serialize;

/// A stable, numeric error code. Clients may match on the number; it never
/// changes meaning once released. Numbers are grouped by domain:
/// 1xxx request, 2xxx auth, 3xxx schema, 4xxx query, 5xxx server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not valid JSON (or CSV) or has the wrong shape.
    MalformedRequest = 1001,
    /// A required parameter is missing.
    MissingParameter = 1002,
    /// A value has the wrong type or an invalid format.
    InvalidValue = 1003,
    /// The request body is larger than the configured limit.
    BodyTooLarge = 1004,
    /// A batch holds more events than the configured limit.
    TooManyEvents = 1005,
    /// A single event is larger than the configured limit.
    EventTooLarge = 1006,
    /// The body claims a compression it does not have, or is corrupt.
    CorruptBody = 1007,
    /// The content type is not one this endpoint reads.
    UnsupportedContentType = 1008,
    /// Some events of a batch failed; the others were stored.
    PartialBatchFailure = 1009,
    /// The event time cannot be parsed.
    InvalidEventTime = 1010,
    /// The client did not send the whole body within the read timeout.
    BodyReadTimeout = 1011,
    /// No endpoint has this path.
    UnknownEndpoint = 1012,
    /// The client does not accept the only media type this endpoint sends
    /// (the live stream: `text/event-stream`).
    NotAcceptable = 1013,
    /// The project has as many live-stream subscribers as it may have.
    TooManySubscribers = 1014,
    /// A live-stream subscriber fell so far behind that events passed it
    /// by; it is disconnected and may subscribe again.
    SubscriberLagged = 1015,
    /// A key is missing.
    MissingKey = 2001,
    /// A key is unknown or of the wrong kind.
    InvalidKey = 2002,
    /// The lock key is wrong, or the client may not create projects.
    Forbidden = 2003,
    /// The project does not exist.
    ProjectNotFound = 2004,
    /// A project with this name exists already.
    ProjectExists = 2005,
    /// A field or collection name is invalid after normalisation.
    InvalidName = 3001,
    /// A column type is unknown or unsupported.
    InvalidType = 3002,
    /// A collection would exceed its column limit.
    TooManyColumns = 3003,
    /// A field name is reserved for the system.
    ReservedName = 3004,
    /// A declared field conflicts with an existing column type.
    TypeConflict = 3005,
    /// The collection does not exist.
    CollectionNotFound = 3006,
    /// A new collection would exceed the project's collection limit.
    TooManyCollections = 3007,
    /// The materialized view does not exist.
    ViewNotFound = 3008,
    /// A materialized view of that name exists.
    ViewExists = 3009,
    /// The continuous query does not exist.
    ContinuousQueryNotFound = 3010,
    /// A continuous query of that name exists.
    ContinuousQueryExists = 3011,
    /// SQL that does not parse or plan.
    SqlError = 4001,
    /// SQL that would change data, or read outside the project.
    SqlForbidden = 4002,
    /// The query ran longer than the statement timeout.
    QueryTimeout = 4003,
    /// The requested row limit is above the maximum.
    RowLimitExceeded = 4004,
    /// An analysis request (funnel, retention, segmentation, flow) that
    /// cannot run as asked: unknown collection or column, bad dates, bad
    /// time zone, bad filter expression.
    InvalidAnalysis = 4005,
    /// A statement or filter nested too deeply, or reading too many tables.
    SqlTooComplex = 4006,
    /// The query needs more memory than one query, or all running queries
    /// together, may hold.
    QueryMemoryExceeded = 4007,
    /// A materialized view that cannot be built as asked (its query reads
    /// another view, has a LIMIT, or cannot be refreshed incrementally).
    InvalidView = 4008,
    /// Another refresh of the view committed first; this one was dropped.
    ViewChanged = 4009,
    /// A continuous query that cannot be maintained incrementally (the
    /// message says why), or whose request is malformed.
    InvalidContinuousQuery = 4010,
    /// The backend cannot do this.
    NotSupported = 5001,
    /// Storage failed (disk, fsync, file format).
    StorageFailure = 5002,
    /// A bug; details are logged, not sent.
    Internal = 5003,
    /// The server is shutting down or overloaded.
    Unavailable = 5004,
}

impl ErrorCode {
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Whether the same request may succeed later: the server was busy,
    /// shutting down, slow, or its storage failed for a moment.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::StorageFailure
                | Self::Unavailable
                | Self::QueryTimeout
                | Self::BodyReadTimeout
                | Self::TooManySubscribers
                | Self::SubscriberLagged
                | Self::ViewChanged
        )
    }
}

/// Implemented by every error type that can reach a client.
pub trait ErrorExt: std::error::Error {
    fn code(&self) -> ErrorCode;

    /// Whether retrying the same request may succeed.
    fn is_retryable(&self) -> bool {
        self.code().is_retryable()
    }
}

use rakam_common::{ErrorCode, ErrorExt};
use rakam_store_api::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// SQL that does not parse or plan; `line`/`column` are 1-based.
    #[error("{message}")]
    Sql {
        message: String,
        line: Option<u64>,
        column: Option<u64>,
    },
    #[error("{0}")]
    Forbidden(String),
    /// Deeper or wider than the planner is allowed to go.
    #[error("{0}")]
    TooComplex(String),
    #[error("the query ran longer than {seconds} s (query.statement_timeout_secs)")]
    Timeout { seconds: u64 },
    #[error(
        "the query waited {seconds} s (query.statement_timeout_secs) for one of the \
         project's {slots} query slots (query.max_concurrent_per_project)"
    )]
    QueueTimeout { seconds: u64, slots: usize },
    /// Over `query.memory_per_query_bytes` or `query.memory_limit_bytes`.
    #[error("{0}")]
    MemoryExceeded(String),
    #[error("the server is shutting down; the query was stopped")]
    ShuttingDown,
    #[error("row limit {requested} is above the maximum of {max} (query.max_limit)")]
    RowLimit { requested: u64, max: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("query execution failed: {0}")]
    Execution(String),
}

impl ErrorExt for QueryError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Sql { .. } => ErrorCode::SqlError,
            Self::Forbidden(_) => ErrorCode::SqlForbidden,
            Self::TooComplex(_) => ErrorCode::SqlTooComplex,
            Self::Timeout { .. } | Self::QueueTimeout { .. } => ErrorCode::QueryTimeout,
            Self::MemoryExceeded(_) => ErrorCode::QueryMemoryExceeded,
            Self::ShuttingDown => ErrorCode::Unavailable,
            Self::RowLimit { .. } => ErrorCode::RowLimitExceeded,
            Self::Store(inner) => inner.code(),
            Self::Execution(_) => ErrorCode::SqlError,
        }
    }
}

impl QueryError {
    /// The error again, for one that came back through DataFusion (a
    /// materialized view's build inside a query) and whose code matters to
    /// the client: a timeout or shutdown is retryable, a missing view 404.
    fn same_for_client(&self) -> Option<Self> {
        Some(match self {
            Self::Timeout { seconds } => Self::Timeout { seconds: *seconds },
            Self::QueueTimeout { seconds, slots } => Self::QueueTimeout {
                seconds: *seconds,
                slots: *slots,
            },
            Self::ShuttingDown => Self::ShuttingDown,
            Self::MemoryExceeded(message) => Self::MemoryExceeded(message.clone()),
            Self::Forbidden(message) => Self::Forbidden(message.clone()),
            Self::Store(StoreError::ViewNotFound(name)) => {
                Self::Store(StoreError::ViewNotFound(name.clone()))
            }
            Self::Store(StoreError::Unavailable(message)) => {
                Self::Store(StoreError::Unavailable(message.clone()))
            }
            _ => return None,
        })
    }

    /// A DataFusion error as the client should see it, with the position
    /// when DataFusion or the parser reports one.
    pub fn from_datafusion(error: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError;
        if let Some(span) = error.diagnostic().and_then(|d| d.span) {
            return Self::Sql {
                message: clean_message(&error.to_string()),
                line: Some(span.start.line),
                column: Some(span.start.column),
            };
        }
        if let DataFusionError::External(inner) = error.find_root() {
            if let Some(same) = inner
                .downcast_ref::<QueryError>()
                .and_then(QueryError::same_for_client)
            {
                return same;
            }
        }
        let message = clean_message(&error.to_string());
        let (line, column) = position_in_message(&message);
        match error.find_root() {
            DataFusionError::ResourcesExhausted(_) => Self::MemoryExceeded(message),
            DataFusionError::External(_)
            | DataFusionError::IoError(_)
            | DataFusionError::ObjectStore(_)
            | DataFusionError::ArrowError(..)
            | DataFusionError::ParquetError(_)
            | DataFusionError::Execution(_) => Self::Execution(message),
            _ => Self::Sql {
                message,
                line,
                column,
            },
        }
    }

    /// An error of the backend's own SQL engine; `position` (1-based,
    /// characters) becomes line and column of `sql`.
    pub(crate) fn from_native(error: StoreError, sql: &str) -> Self {
        match error {
            StoreError::Sql { message, position } => {
                let (line, column) = match position {
                    Some(position) => line_and_column(sql, position),
                    None => (None, None),
                };
                Self::Sql {
                    message,
                    line,
                    column,
                }
            }
            StoreError::QueryTimeout { seconds } => Self::Timeout { seconds },
            other => Self::Store(other),
        }
    }

    pub(crate) fn from_parser(error: &datafusion::sql::sqlparser::parser::ParserError) -> Self {
        use datafusion::sql::sqlparser::parser::ParserError;
        if matches!(error, ParserError::RecursionLimitExceeded) {
            return Self::TooComplex(
                "the statement nests too deeply: more brackets, subqueries or prefix operators \
                 inside one another than the parser allows"
                    .into(),
            );
        }
        let message = clean_message(&error.to_string());
        let (line, column) = position_in_message(&message);
        Self::Sql {
            message,
            line,
            column,
        }
    }
}

fn clean_message(message: &str) -> String {
    message.trim().to_string()
}

fn line_and_column(sql: &str, position: u64) -> (Option<u64>, Option<u64>) {
    let before: String = sql
        .chars()
        .take(usize::try_from(position.saturating_sub(1)).unwrap_or(usize::MAX))
        .collect();
    let line = before.matches('\n').count() as u64 + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    (Some(line), Some(column))
}

/// The parser writes positions as "Line: L, Column: C".
fn position_in_message(message: &str) -> (Option<u64>, Option<u64>) {
    let number_after = |label: &str| -> Option<u64> {
        let start = message.find(label)? + label.len();
        let digits: String = message[start..]
            .chars()
            .skip_while(|c| c.is_whitespace())
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    };
    (number_after("Line:"), number_after("Column:"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_read_from_parser_messages() {
        assert_eq!(
            position_in_message("Expected: end of statement, found: x at Line: 2, Column: 17"),
            (Some(2), Some(17))
        );
        assert_eq!(position_in_message("table not found"), (None, None));
        assert_eq!(line_and_column("SELECT\n  x", 10), (Some(2), Some(3)));
    }
}

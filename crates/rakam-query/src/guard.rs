//! Only a single SELECT / WITH / EXPLAIN statement runs. Everything else
//! (DDL, DML, COPY, SET, SELECT INTO, several statements) is refused before
//! planning; the session's SQL options refuse the same again, so either
//! check alone would hold.

use datafusion::sql::sqlparser::ast::{
    visit_relations, Expr, LimitClause, ObjectName, Query, SetExpr, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::{Dialect, GenericDialect};
use datafusion::sql::sqlparser::parser::Parser;
use std::ops::ControlFlow;

use crate::complexity::{check_nesting, check_width};
use crate::QueryError;

#[derive(Debug)]
pub struct GuardedStatement {
    /// The statement without a trailing `;`.
    pub sql: String,
    /// The outermost `LIMIT`, when it is a literal.
    pub limit: Option<u64>,
    pub is_explain: bool,
}

pub fn check_statement(sql: &str) -> Result<GuardedStatement, QueryError> {
    let (statement, guarded) = parse_one(sql, &GenericDialect {})?;
    check_parsed(&statement)?;
    Ok(guarded)
}

/// Parses exactly one statement in `dialect`.
pub(crate) fn parse_one(
    sql: &str,
    dialect: &dyn Dialect,
) -> Result<(Statement, GuardedStatement), QueryError> {
    let trimmed = sql.trim().trim_end_matches(';').trim_end();
    if trimmed.is_empty() {
        return Err(QueryError::Sql {
            message: "the query is empty".into(),
            line: None,
            column: None,
        });
    }
    check_nesting(trimmed, dialect)?;
    let mut statements =
        Parser::parse_sql(dialect, trimmed).map_err(|e| QueryError::from_parser(&e))?;
    if statements.len() != 1 {
        return Err(QueryError::Forbidden(format!(
            "exactly one statement is allowed, found {}",
            statements.len()
        )));
    }
    let statement = statements.remove(0);
    check_width(&statement)?;
    let (limit, is_explain) = match &statement {
        Statement::Query(query) => (literal_limit(query), false),
        Statement::Explain { statement, .. } => match statement.as_ref() {
            Statement::Query(query) => (literal_limit(query), true),
            _ => (None, true),
        },
        _ => (None, false),
    };
    let guarded = GuardedStatement {
        sql: trimmed.to_string(),
        limit,
        is_explain,
    };
    Ok((statement, guarded))
}

/// One SELECT/WITH/EXPLAIN SELECT, no SELECT INTO, no locks, and no name
/// with three parts.
pub(crate) fn check_parsed(statement: &Statement) -> Result<(), QueryError> {
    let query = match statement {
        Statement::Query(query) => query,
        Statement::Explain { statement, .. } => match statement.as_ref() {
            Statement::Query(query) => query,
            _ => return Err(forbidden()),
        },
        _ => return Err(forbidden()),
    };
    check_query(query)?;
    let mut too_deep: Option<String> = None;
    let _ = visit_relations(statement, |relation: &ObjectName| {
        if relation.0.len() > 2 {
            too_deep = Some(relation.to_string());
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    if let Some(name) = too_deep {
        return Err(QueryError::Forbidden(format!(
            "{name} is outside this project: tables are a collection, _all, or schema.table"
        )));
    }
    Ok(())
}

fn forbidden() -> QueryError {
    QueryError::Forbidden("only SELECT, WITH and EXPLAIN statements are allowed".into())
}

fn check_query(query: &Query) -> Result<(), QueryError> {
    if let SetExpr::Select(select) = query.body.as_ref() {
        if select.into.is_some() {
            return Err(QueryError::Forbidden("SELECT INTO is not allowed".into()));
        }
    }
    if !query.locks.is_empty() {
        return Err(QueryError::Forbidden(
            "locking clauses are not allowed".into(),
        ));
    }
    Ok(())
}

fn literal_limit(query: &Query) -> Option<u64> {
    let expression = match query.limit_clause.as_ref()? {
        LimitClause::LimitOffset { limit, .. } => limit.as_ref()?,
        LimitClause::OffsetCommaLimit { limit, .. } => limit,
    };
    match expression {
        Expr::Value(value) => match &value.value {
            Value::Number(text, _) => text.parse().ok(),
            _ => None,
        },
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_allowed() {
        for sql in [
            "SELECT 1",
            "select * from pageview;",
            "WITH a AS (SELECT 1) SELECT * FROM a",
            "EXPLAIN SELECT count(*) FROM _all",
            "SELECT * FROM collection.pageview",
        ] {
            assert!(check_statement(sql).is_ok(), "{sql} refused");
        }
        assert_eq!(
            check_statement("SELECT 1 LIMIT 10")
                .ok()
                .and_then(|s| s.limit),
            Some(10)
        );
    }

    #[test]
    fn everything_else_is_refused() {
        for sql in [
            "DROP TABLE pageview",
            "DELETE FROM pageview",
            "INSERT INTO pageview VALUES (1)",
            "CREATE TABLE x AS SELECT 1",
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
            "COPY (SELECT 1) TO '/tmp/x.csv'",
            "SET datafusion.execution.batch_size = 1",
            "SELECT 1; SELECT 2",
            "SELECT * INTO copy FROM pageview",
            "SELECT * FROM datafusion.public.pageview",
            "EXPLAIN DROP TABLE x",
        ] {
            assert!(check_statement(sql).is_err(), "{sql} accepted");
        }
        assert!(matches!(
            check_statement("SELEC 1"),
            Err(QueryError::Sql { .. })
        ));
    }
}

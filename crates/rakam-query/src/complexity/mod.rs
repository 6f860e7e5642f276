//! Bounds on how deep and how wide a statement may be, checked before the
//! statement is parsed into a tree and again before it is planned.
//!
//! Parsers, planners, optimisers, `Display` and `Drop` all recurse over a
//! statement's tree, so a tree deep enough overflows any stack and aborts
//! the process. sqlparser's recursion limit only counts nested parentheses:
//! a chain like `1+1+…+1` or `a UNION ALL b UNION ALL …` parses in a loop
//! into a tree as deep as the chain is long. So the depth is bounded from
//! the tokens, before any tree exists, and the stack given to query work
//! (see `QUERY_THREAD_STACK_BYTES`) is sized for what this lets through.
//!
//! Width is bounded after parsing: a statement may reference at most
//! `MAX_TABLE_REFERENCES` tables once common table expressions are
//! expanded, so neither a 2,000-way join nor CTEs that double at each step
//! can make planning run away.

mod backtracking;
mod depth;
#[cfg(test)]
mod tests;
mod width;

use datafusion::sql::sqlparser::dialect::Dialect;
use datafusion::sql::sqlparser::tokenizer::Tokenizer;

pub use backtracking::MAX_SPECIAL_FORM_NESTING;
pub(crate) use width::check_width;

use crate::QueryError;

/// The deepest a statement may nest: chained operators, joins, set
/// operations, brackets and `CASE`, counted along the deepest path.
/// Generated analyses stay far below it (a 32-step funnel over 32
/// collections counts about 110).
pub const MAX_NESTING: usize = 500;

/// The most table references a statement may make, counting each use of a
/// common table expression as the tables it reads.
pub const MAX_TABLE_REFERENCES: usize = 500;

/// Stack for threads that parse, plan and run statements. What
/// `MAX_NESTING` lets through needs a small part of it even in a debug
/// build; the rest is address space, not memory, until it is touched.
pub const QUERY_THREAD_STACK_BYTES: usize = 64 << 20;

/// Refuses `sql` when its tokens show it nesting deeper than `MAX_NESTING`.
/// Text that does not tokenize is left to the parser, which reports where.
pub fn check_nesting(sql: &str, dialect: &dyn Dialect) -> Result<(), QueryError> {
    let Ok(tokens) = Tokenizer::new(dialect, sql).tokenize() else {
        return Ok(());
    };
    backtracking::check_intervals(&tokens)?;
    backtracking::check_special_forms(&tokens)?;
    let depth = depth::nesting_bound(&tokens);
    if depth > MAX_NESTING {
        return Err(QueryError::TooComplex(format!(
            "the statement nests too deeply: about {depth} levels of chained operators, joins, \
             set operations and brackets, over the limit of {MAX_NESTING}; simplify or split it"
        )));
    }
    Ok(())
}

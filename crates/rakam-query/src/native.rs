//! `/query/execute` on a backend with its own SQL engine (PostgreSQL). The
//! statement is parsed in the backend's dialect and held to the same rules
//! as on DataFusion: one read-only statement, tables only of the project
//! (`pageview`, `collection.pageview`, `public.pageview`, `_all`). The
//! backend then enforces isolation again with its own means.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    Ident, ObjectName, ObjectNamePart, Query, SetExpr, TableAlias, TableFactor, Visit, VisitMut,
    Visitor, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use rakam_store_api::NativeDialect;

use crate::engine::SCHEMA_ALIASES;
use crate::guard::{check_parsed, parse_one};
use crate::materialized::MATERIALIZED_SCHEMA;
use crate::project_schema::ALL_COLLECTIONS;
use crate::{GuardedStatement, QueryError};

/// Table functions that read nothing stored.
const TABLE_FUNCTIONS: [&str; 1] = ["generate_series"];

/// The statement to send: the original text when it names tables plainly,
/// else the statement re-printed with `collection.`/`public.` removed.
/// Checks a client's statement for a backend's own engine: the same rules
/// as [`crate::check_statement`], in its dialect, with table names checked
/// against `collections` and rewritten.
pub fn prepare_native(
    sql: &str,
    dialect: NativeDialect,
    collections: &[String],
) -> Result<GuardedStatement, QueryError> {
    prepare_native_scoped(sql, dialect, collections, &NativeScope::default())
}

/// What a statement for the backend's own engine may read beyond the
/// collections: materialized views (name → a SELECT that reads it), and a
/// window of `_server_time` every collection is limited to.
#[derive(Debug, Clone, Default)]
pub struct NativeScope {
    /// The condition on `_server_time` every collection is read with (see
    /// [`ReceivedWindow::postgres_predicate`]).
    pub window: Option<String>,
    pub views: HashMap<String, String>,
}

/// The views (`materialized.<name>`) a statement names, lower-cased as
/// PostgreSQL folds unquoted names; empty when it does not parse.
pub fn materialized_names(sql: &str, dialect: NativeDialect) -> Vec<String> {
    relations_in_schema(sql, dialect, MATERIALIZED_SCHEMA)
}

/// The tables of `schema` a statement names (lower-cased); empty when it
/// does not parse.
pub fn relations_in_schema(sql: &str, dialect: NativeDialect, schema: &str) -> Vec<String> {
    let NativeDialect::PostgreSql = dialect;
    let Ok((statement, _)) = parse_one(sql, &PostgreSqlDialect {}) else {
        return Vec::new();
    };
    let mut found = ViewNames {
        schema,
        names: Default::default(),
    };
    let _ = Visit::visit(&statement, &mut found);
    found.names.into_iter().collect()
}

struct ViewNames<'a> {
    schema: &'a str,
    names: std::collections::BTreeSet<String>,
}

impl Visitor for ViewNames<'_> {
    type Break = ();

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        let parts: Vec<&Ident> = relation.0.iter().filter_map(ident_value).collect();
        if let [schema, table] = parts.as_slice() {
            if Tables::name_of(schema) == self.schema {
                self.names.insert(Tables::name_of(table));
            }
        }
        ControlFlow::Continue(())
    }
}

/// [`prepare_native`] with views and a window (see [`NativeScope`]).
pub fn prepare_native_scoped(
    sql: &str,
    dialect: NativeDialect,
    collections: &[String],
    scope: &NativeScope,
) -> Result<GuardedStatement, QueryError> {
    let NativeDialect::PostgreSql = dialect;
    let (mut statement, mut guarded) = parse_one(sql, &PostgreSqlDialect {})?;
    check_parsed(&statement)?;
    let mut ctes = CteNames::default();
    let _ = Visit::visit(&statement, &mut ctes);
    let mut checker = Tables {
        known: collections
            .iter()
            .map(String::as_str)
            .chain([ALL_COLLECTIONS])
            .map(str::to_string)
            .chain(ctes.0)
            .collect(),
        rewritten: false,
        error: None,
        window: scope.window.clone(),
        views: scope.views.clone(),
        ctes: HashSet::new(),
    };
    checker.ctes = ctes_seen(&statement);
    // A CTE named like a collection hides it in some scopes and not in
    // others (not inside its own body): a windowed statement could read the
    // collection unwindowed. Such statements are refused, not guessed at.
    if scope.window.is_some() {
        if let Some(shadowing) = checker
            .ctes
            .iter()
            .find(|cte| collections.contains(cte) || cte.as_str() == ALL_COLLECTIONS)
        {
            return Err(QueryError::Forbidden(format!(
                "a materialized view's query may not name a WITH query {shadowing:?} after a collection"
            )));
        }
    }
    let _ = VisitMut::visit(&mut statement, &mut checker);
    if let Some(error) = checker.error {
        return Err(error);
    }
    if checker.rewritten {
        guarded.sql = statement.to_string();
    }
    Ok(guarded)
}

#[derive(Default)]
struct CteNames(HashSet<String>);

impl Visitor for CteNames {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                self.0.insert(Tables::name_of(&cte.alias.name));
            }
        }
        ControlFlow::Continue(())
    }
}

struct Tables {
    known: HashSet<String>,
    rewritten: bool,
    error: Option<QueryError>,
    /// The window's condition: collections become subqueries with it.
    window: Option<String>,
    views: HashMap<String, String>,
    /// Names that are CTEs, not collections (never windowed).
    ctes: HashSet<String>,
}

fn ident_value(part: &ObjectNamePart) -> Option<&Ident> {
    part.as_ident()
}

impl Tables {
    fn fail(&mut self, error: QueryError) -> ControlFlow<()> {
        self.error = Some(error);
        ControlFlow::Break(())
    }

    /// Unquoted names fold to lower case, as PostgreSQL folds them.
    fn name_of(ident: &Ident) -> String {
        match ident.quote_style {
            Some(_) => ident.value.clone(),
            None => ident.value.to_lowercase(),
        }
    }

    fn check_table(&mut self, name: &mut ObjectName) -> ControlFlow<()> {
        let parts: Vec<Ident> = name.0.iter().filter_map(ident_value).cloned().collect();
        if parts.len() != name.0.len() {
            return self.fail(QueryError::Forbidden(format!("{name} is not a table name")));
        }
        match parts.as_slice() {
            [table] => {
                if self.known.contains(&Self::name_of(table)) {
                    ControlFlow::Continue(())
                } else {
                    self.fail(QueryError::Sql {
                        message: format!("table '{}' not found", Self::name_of(table)),
                        line: None,
                        column: None,
                    })
                }
            }
            [schema, table]
                if Self::name_of(schema) == MATERIALIZED_SCHEMA
                    && self.views.contains_key(&Self::name_of(table)) =>
            {
                ControlFlow::Continue(())
            }
            [schema, table]
                if SCHEMA_ALIASES.contains(&Self::name_of(schema).as_str())
                    && self.known.contains(&Self::name_of(table)) =>
            {
                name.0 = vec![ObjectNamePart::Identifier(table.clone())];
                self.rewritten = true;
                ControlFlow::Continue(())
            }
            _ => self.fail(QueryError::Forbidden(format!(
                "{name} is outside this project: tables are a collection, _all, or schema.table"
            ))),
        }
    }
}

/// Whether a set expression has a `TABLE name` branch (nested queries are
/// visited on their own).
fn contains_table_command(body: &SetExpr) -> bool {
    match body {
        SetExpr::Table(_) => true,
        SetExpr::SetOperation { left, right, .. } => {
            contains_table_command(left) || contains_table_command(right)
        }
        _ => false,
    }
}

impl VisitorMut for Tables {
    type Break = ();

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<()> {
        // `TABLE name` names a table outside any table factor.
        if contains_table_command(query.body.as_ref()) {
            return self.fail(QueryError::Forbidden(
                "TABLE name is not allowed: write SELECT * FROM name".into(),
            ));
        }
        if matches!(
            query.body.as_ref(),
            SetExpr::Insert(_) | SetExpr::Update(_) | SetExpr::Delete(_) | SetExpr::Merge(_)
        ) {
            return self.fail(QueryError::Forbidden(
                "only SELECT, WITH and EXPLAIN statements are allowed".into(),
            ));
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, args, .. } = factor {
            if args.is_some() {
                let function = name.to_string().to_lowercase();
                if !TABLE_FUNCTIONS.contains(&function.as_str()) {
                    return self.fail(QueryError::Forbidden(format!(
                        "table function {function} is not allowed"
                    )));
                }
                return ControlFlow::Continue(());
            }
            return self.check_table(name);
        }
        ControlFlow::Continue(())
    }

    /// Replaced after the visit of the factor, so the SELECT put in its
    /// place (backend table names) is not checked as client SQL.
    fn post_visit_table_factor(&mut self, factor: &mut TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name, alias, args, ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        if args.is_some() {
            return ControlFlow::Continue(());
        }
        let parts: Vec<Ident> = name.0.iter().filter_map(ident_value).cloned().collect();
        let replacement = match parts.as_slice() {
            [schema, table] if Self::name_of(schema) == MATERIALIZED_SCHEMA => self
                .views
                .get(&Self::name_of(table))
                .map(|select| (select.clone(), table.clone())),
            [table] if !self.ctes.contains(&Self::name_of(table)) => {
                self.window.as_ref().map(|condition| {
                    (
                        format!("SELECT * FROM {name} WHERE {condition}"),
                        table.clone(),
                    )
                })
            }
            _ => None,
        };
        let Some((select, table)) = replacement else {
            return ControlFlow::Continue(());
        };
        let subquery = match Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&select)
            .and_then(|mut parser| parser.parse_query())
        {
            Ok(query) => query,
            Err(error) => {
                return self.fail(QueryError::Execution(format!(
                    "cannot read {name}: {error}"
                )))
            }
        };
        // Quoted: the name may be a keyword (`full`) that is a table name
        // only after a schema.
        let alias = alias.clone().unwrap_or_else(|| TableAlias {
            explicit: true,
            name: Ident::with_quote('"', Self::name_of(&table)),
            columns: Vec::new(),
            at: None,
        });
        *factor = TableFactor::Derived {
            lateral: false,
            subquery,
            alias: Some(alias),
            sample: None,
        };
        self.rewritten = true;
        ControlFlow::Continue(())
    }
}

fn ctes_seen(statement: &datafusion::sql::sqlparser::ast::Statement) -> HashSet<String> {
    let mut ctes = CteNames::default();
    let _ = Visit::visit(statement, &mut ctes);
    ctes.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepare(sql: &str) -> Result<String, QueryError> {
        let collections = vec!["pageview".to_string(), "signup".to_string()];
        prepare_native(sql, NativeDialect::PostgreSql, &collections).map(|g| g.sql)
    }

    #[test]
    fn project_tables_pass_and_aliases_are_removed() {
        assert_eq!(
            prepare("SELECT * FROM pageview").ok().as_deref(),
            Some("SELECT * FROM pageview")
        );
        let rewritten =
            prepare("SELECT count(*) FROM collection.pageview JOIN public.signup ON true")
                .expect("allowed");
        assert!(
            !rewritten.contains("collection.") && !rewritten.contains("public."),
            "{rewritten}"
        );
        assert!(prepare("WITH a AS (SELECT 1) SELECT * FROM a, _all").is_ok());
        assert!(prepare("SELECT * FROM generate_series(1, 3)").is_ok());
        assert!(prepare("WITH Foo AS (SELECT 1) SELECT * FROM Foo").is_ok());
    }

    #[test]
    fn a_window_limits_every_collection_and_views_become_their_relation() {
        let collections = vec!["pageview".to_string(), "signup".to_string()];
        let scope = NativeScope {
            window: Some("\"_server_time\" > now()".into()),
            views: HashMap::from([("full".to_string(), "SELECT * FROM \"x\".\"y\"".to_string())]),
        };
        let sql = |text: &str| {
            prepare_native_scoped(text, NativeDialect::PostgreSql, &collections, &scope)
                .map(|g| g.sql)
        };
        let rewritten = sql("SELECT count(*) FROM pageview p JOIN collection.signup ON true")
            .expect("windowed");
        assert_eq!(
            rewritten.matches("\"_server_time\" > now()").count(),
            2,
            "{rewritten}"
        );
        assert!(
            rewritten.contains(") p JOIN") && rewritten.contains("AS \"signup\""),
            "{rewritten}"
        );
        let view = sql("SELECT * FROM materialized.full").expect("view");
        assert!(view.contains("FROM \"x\".\"y\") AS \"full\""), "{view}");
        // A CTE named like a collection would hide it from the window in
        // some scopes: refused.
        assert!(sql("WITH pageview AS (SELECT * FROM pageview) SELECT * FROM pageview").is_err());
        assert!(sql("WITH recent AS (SELECT * FROM pageview) SELECT * FROM recent").is_ok());
        assert!(sql("SELECT * FROM materialized.other").is_err());
    }

    #[test]
    fn everything_outside_the_project_is_refused() {
        for sql in [
            "SELECT * FROM pg_class",
            "SELECT * FROM pg_catalog.pg_roles",
            "SELECT * FROM rakam_meta.api_keys",
            "SELECT * FROM other.pageview",
            "SELECT * FROM pg_ls_dir('.')",
            "SELECT (SELECT count(*) FROM pg_shadow)",
            "WITH x AS (DELETE FROM pageview RETURNING *) SELECT * FROM x",
            "SELECT 1; SELECT 2",
            "COPY pageview TO STDOUT",
            "TABLE pg_catalog.pg_roles",
            "SELECT * FROM pageview UNION TABLE pg_roles",
        ] {
            assert!(prepare(sql).is_err(), "{sql} accepted");
        }
    }
}

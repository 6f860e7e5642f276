//! Which SELECTs a continuous query can maintain, and how. The query is
//! split in two:
//!
//! - the **partial** query runs over each batch of newly received events
//!   and is stored: its GROUP BY expressions as `"$g<i>"` and one mergeable
//!   partial per aggregate as `"$a<i>"` (count, sum, min, max; avg as a sum
//!   and a count; approx_distinct as a HyperLogLog sketch);
//! - the **final** query merges the stored partials at read time, grouped
//!   by the same `"$g<i>"`, and computes the client's expressions on top.
//!
//! Whatever cannot be merged this way (DISTINCT, other aggregates, window
//! functions, joins, subqueries, ORDER BY, LIMIT) is refused with the
//! reason, never approximated silently.

use std::collections::HashSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    DuplicateTreatment, Expr, Function, FunctionArguments, GroupByExpr, Ident, ObjectName,
    ObjectNamePart, Query, SelectItem, SetExpr, Statement, TableFactor, Value, ValueWithSpan,
    VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use serde::{Deserialize, Serialize};

/// How the stored partials of one column merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Merge {
    Sum,
    Min,
    Max,
    Sketch,
}

impl Merge {
    pub fn sql(self, column: &str) -> String {
        match self {
            Self::Sum => format!("SUM({column})"),
            Self::Min => format!("MIN({column})"),
            Self::Max => format!("MAX({column})"),
            Self::Sketch => format!("rakam_hll_merge({column})"),
        }
    }
}

/// A maintainable query, split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Runs over the events of a window; its rows are stored.
    pub partial_sql: String,
    /// How each `"$a<i>"` column merges, in order.
    pub merges: Vec<Merge>,
    pub group_count: usize,
    /// Each output column's expression over the partials, in order.
    pub final_items: Vec<String>,
    pub having: Option<String>,
}

/// The names of the partials' columns.
pub fn group_column(index: usize) -> String {
    format!("\"$g{index}\"")
}

pub fn partial_column(index: usize) -> String {
    format!("\"$a{index}\"")
}

impl Split {
    /// The final query over `relation`, each column named as the client's
    /// query names it.
    pub fn final_sql(&self, relation: &str, names: &[String]) -> String {
        let items: Vec<String> = self
            .final_items
            .iter()
            .zip(names)
            .map(|(item, name)| format!("{item} AS \"{}\"", name.replace('"', "\"\"")))
            .collect();
        let mut sql = format!("SELECT {} FROM {relation}", items.join(", "));
        let groups: Vec<String> = (0..self.group_count).map(group_column).collect();
        if !groups.is_empty() {
            sql.push_str(&format!(" GROUP BY {}", groups.join(", ")));
        }
        if let Some(having) = &self.having {
            sql.push_str(&format!(" HAVING {having}"));
        }
        sql
    }

    /// The partials merged into one row per group (a compaction), with the
    /// partials' own column names and types.
    pub fn compaction_sql(&self, relation: &str) -> String {
        let groups: Vec<String> = (0..self.group_count).map(group_column).collect();
        let mut items = groups.clone();
        for (index, merge) in self.merges.iter().enumerate() {
            let column = partial_column(index);
            items.push(format!("{} AS {column}", merge.sql(&column)));
        }
        let mut sql = format!("SELECT {} FROM {relation}", items.join(", "));
        if !groups.is_empty() {
            sql.push_str(&format!(" GROUP BY {}", groups.join(", ")));
        }
        sql
    }
}

const SUPPORTED: &str = "count, sum, min, max, avg and approx_distinct";

/// What the compiler needs to know of the engine and the project.
pub struct Known<'a> {
    /// Every aggregate function (any other than the supported ones is
    /// refused).
    pub aggregates: &'a HashSet<String>,
    /// Functions whose value is not fixed by their arguments (`now()`,
    /// `random()`): each refresh would compute them at its own moment.
    pub volatile: &'a HashSet<String>,
    /// Whether the collection (lower-cased, as named in FROM) has the column:
    /// in GROUP BY a column wins over a SELECT alias of the same name.
    pub has_column: &'a (dyn Fn(&str, &str) -> bool + Sync),
}

/// Splits `sql`, or says why it cannot be maintained.
pub fn split(sql: &str, known: &Known<'_>) -> Result<Split, String> {
    let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| e.to_string())?;
    let [statement @ Statement::Query(query)] = statements.as_slice() else {
        return Err("a continuous query is one SELECT statement".into());
    };
    // The parts are stored as printed SQL: a literal or name the printer
    // cannot write back exactly (a backslash before a quote) is refused
    // rather than stored as something else.
    let reprinted = Parser::parse_sql(&GenericDialect {}, &statement.to_string());
    if !matches!(reprinted.as_deref(), Ok([again]) if again == statement) {
        return Err("the query has a literal or name that cannot be stored exactly (a backslash before a quote?)".into());
    }
    let Query {
        with,
        body,
        order_by,
        limit_clause,
        fetch,
        ..
    } = query.as_ref();
    if with.is_some() {
        return Err("WITH is not supported: select from the collection directly".into());
    }
    if order_by.is_some() || limit_clause.is_some() || fetch.is_some() {
        return Err("ORDER BY and LIMIT apply when reading: put them in the query that reads continuous.<name>".into());
    }
    let SetExpr::Select(select) = body.as_ref() else {
        return Err(
            "a continuous query is a single SELECT (no UNION, VALUES or parentheses)".into(),
        );
    };
    if select.distinct.is_some() {
        return Err("SELECT DISTINCT is not supported: GROUP BY the columns instead".into());
    }
    if select.qualify.is_some() || !select.named_window.is_empty() {
        return Err("window functions cannot be maintained incrementally".into());
    }
    let [from] = select.from.as_slice() else {
        return Err("a continuous query reads exactly one collection".into());
    };
    if !from.joins.is_empty() {
        return Err(
            "joins cannot be maintained incrementally: a continuous query reads one collection"
                .into(),
        );
    }
    let TableFactor::Table {
        name, args: None, ..
    } = &from.relation
    else {
        return Err("a continuous query reads a collection, not a subquery or function".into());
    };
    let collection = check_collection(name)?;
    let projection: Vec<(Expr, Option<&Ident>)> = select
        .projection
        .iter()
        .map(|item| match item {
            SelectItem::UnnamedExpr(expr) => Ok((expr.clone(), None)),
            SelectItem::ExprWithAlias { expr, alias } => Ok((expr.clone(), Some(alias))),
            _ => Err("name each column: * cannot be maintained incrementally".to_string()),
        })
        .collect::<Result<_, _>>()?;
    let groups = match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs
            .iter()
            .map(|expr| resolve_group(expr, &projection, &collection, known))
            .collect::<Result<Vec<Expr>, String>>()?,
        _ => return Err("GROUP BY ALL, ROLLUP, CUBE and GROUPING SETS are not supported".into()),
    };
    let where_clause = select.selection.clone();
    for expr in where_clause.iter().chain(&groups) {
        let mut checker = Rewriter::checking_only(known);
        let _ = VisitMut::visit(&mut expr.clone(), &mut checker);
        checker.result()?;
    }
    let mut rewriter = Rewriter::new(&groups, known);
    let mut final_items = Vec::with_capacity(projection.len());
    for (expr, _) in &projection {
        final_items.push(rewriter.rewrite(expr.clone())?);
    }
    let having = match &select.having {
        Some(having) => Some(rewriter.rewrite(having.clone())?),
        None => None,
    };
    if groups.is_empty() && rewriter.partials.is_empty() {
        return Err(format!(
            "a continuous query aggregates: GROUP BY columns and/or use {SUPPORTED}"
        ));
    }
    let mut items: Vec<String> = groups
        .iter()
        .enumerate()
        .map(|(i, g)| format!("{g} AS {}", group_column(i)))
        .collect();
    let mut merges = Vec::with_capacity(rewriter.partials.len());
    for (index, (partial, merge)) in rewriter.partials.iter().enumerate() {
        items.push(format!("{partial} AS {}", partial_column(index)));
        merges.push(*merge);
    }
    let mut partial_sql = format!("SELECT {} FROM {from}", items.join(", "));
    if let Some(selection) = where_clause {
        partial_sql.push_str(&format!(" WHERE {selection}"));
    }
    if !groups.is_empty() {
        let grouped: Vec<String> = groups.iter().map(ToString::to_string).collect();
        partial_sql.push_str(&format!(" GROUP BY {}", grouped.join(", ")));
    }
    Ok(Split {
        partial_sql,
        merges,
        group_count: groups.len(),
        final_items,
        having,
    })
}

/// The collection's name, lower-cased.
fn check_collection(name: &ObjectName) -> Result<String, String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Ok(ident.value.to_lowercase()),
            _ => Err("a collection name".to_string()),
        })
        .collect::<Result<_, _>>()?;
    match parts.as_slice() {
        [table] => Ok(table.clone()),
        [schema, table] if schema == "collection" || schema == "public" => Ok(table.clone()),
        _ => Err(format!("a continuous query reads a collection, not {name}")),
    }
}

/// An identifier as SQL resolves it: unquoted names are lower-cased.
fn normalized(ident: &Ident) -> String {
    match ident.quote_style {
        None => ident.value.to_lowercase(),
        Some(_) => ident.value.clone(),
    }
}

/// `GROUP BY 1` and `GROUP BY <alias>` name a column of the SELECT list
/// (an alias only when the collection has no column of that name, which
/// wins as in DataFusion and PostgreSQL).
fn resolve_group(
    expr: &Expr,
    projection: &[(Expr, Option<&Ident>)],
    collection: &str,
    known: &Known<'_>,
) -> Result<Expr, String> {
    if matches!(
        expr,
        Expr::Rollup(_) | Expr::Cube(_) | Expr::GroupingSets(_)
    ) {
        return Err("GROUP BY ALL, ROLLUP, CUBE and GROUPING SETS are not supported".into());
    }
    if let Expr::Value(ValueWithSpan {
        value: Value::Number(number, _),
        ..
    }) = expr
    {
        let position: usize = number
            .parse()
            .map_err(|_| format!("GROUP BY {number} is not a column position"))?;
        return position
            .checked_sub(1)
            .and_then(|i| projection.get(i))
            .map(|(expr, _)| expr.clone())
            .ok_or_else(|| format!("GROUP BY {number}: the SELECT list has no such column"));
    }
    if let Expr::Identifier(ident) = expr {
        let name = normalized(ident);
        if !(known.has_column)(collection, &name) {
            let alias = projection
                .iter()
                .find(|(_, alias)| alias.is_some_and(|a| normalized(a) == name));
            if let Some((expr, _)) = alias {
                return Ok(expr.clone());
            }
        }
    }
    Ok(expr.clone())
}

/// Replaces GROUP BY expressions and aggregates by expressions over the
/// partials, collecting the partials; finds what cannot be maintained.
struct Rewriter<'a> {
    groups: &'a [Expr],
    known: &'a Known<'a>,
    /// Each partial's SQL and how it merges; equal partials are shared.
    partials: Vec<(String, Merge)>,
    /// What each `"$final<k>"` placeholder stands for.
    finals: Vec<Expr>,
    error: Option<String>,
    /// In WHERE: no aggregate, any column.
    checking_only: bool,
}

const PLACEHOLDER: &str = "$final";

fn quoted(name: String) -> Expr {
    Expr::Identifier(Ident::with_quote('"', name))
}

impl<'a> Rewriter<'a> {
    fn new(groups: &'a [Expr], known: &'a Known<'a>) -> Self {
        Self {
            groups,
            known,
            partials: Vec::new(),
            finals: Vec::new(),
            error: None,
            checking_only: false,
        }
    }

    fn checking_only(known: &'a Known<'a>) -> Self {
        Self {
            checking_only: true,
            ..Self::new(&[], known)
        }
    }

    fn result(&mut self) -> Result<(), String> {
        self.error.take().map_or(Ok(()), Err)
    }

    /// The expression over the partials, as SQL.
    fn rewrite(&mut self, mut expr: Expr) -> Result<String, String> {
        let _ = VisitMut::visit(&mut expr, self);
        self.result()?;
        let mut filler = Filler {
            finals: &self.finals,
        };
        let _ = VisitMut::visit(&mut expr, &mut filler);
        Ok(expr.to_string())
    }

    fn partial(&mut self, sql: String, merge: Merge) -> String {
        let index = match self
            .partials
            .iter()
            .position(|(p, m)| *p == sql && *m == merge)
        {
            Some(index) => index,
            None => {
                self.partials.push((sql, merge));
                self.partials.len() - 1
            }
        };
        partial_column(index)
    }

    /// The merged form of a supported aggregate call, or why it is refused.
    fn aggregate(&mut self, function: &Function, name: &str) -> Result<String, String> {
        let FunctionArguments::List(list) = &function.args else {
            return Err(format!("{name}() needs its arguments in parentheses"));
        };
        if matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct)) {
            return Err(format!(
                "{name}(DISTINCT ...) cannot be maintained incrementally exactly: use approx_distinct(...)"
            ));
        }
        if !list.clauses.is_empty() || !function.within_group.is_empty() {
            return Err(format!("{name}(... ORDER BY/LIMIT) is not supported"));
        }
        let mut check = Rewriter::checking_only(self.known);
        let mut arguments = function.args.clone();
        let _ = VisitMut::visit(&mut arguments, &mut check);
        if let Some(filter) = &function.filter {
            let _ = VisitMut::visit(&mut filter.as_ref().clone(), &mut check);
        }
        check.result()?;
        let renamed = |new: &str| {
            let mut call = function.clone();
            call.name = ObjectName::from(vec![Ident::new(new)]);
            call.to_string()
        };
        Ok(match name {
            "count" => format!(
                "COALESCE({}, 0)",
                Merge::Sum.sql(&self.partial(renamed("count"), Merge::Sum))
            ),
            "sum" => Merge::Sum.sql(&self.partial(renamed("sum"), Merge::Sum)),
            "min" => Merge::Min.sql(&self.partial(renamed("min"), Merge::Min)),
            "max" => Merge::Max.sql(&self.partial(renamed("max"), Merge::Max)),
            "avg" | "mean" => {
                let sum = Merge::Sum.sql(&self.partial(renamed("sum"), Merge::Sum));
                let count = Merge::Sum.sql(&self.partial(renamed("count"), Merge::Sum));
                format!("CAST({sum} AS DOUBLE) / CAST(NULLIF({count}, 0) AS DOUBLE)")
            }
            _ => {
                let sketch = self.partial(renamed("rakam_hll_sketch"), Merge::Sketch);
                format!("rakam_hll_estimate({})", Merge::Sketch.sql(&sketch))
            }
        })
    }
}

fn function_name(function: &Function) -> String {
    function
        .name
        .0
        .last()
        .and_then(|part| part.as_ident())
        .map(|ident| ident.value.to_lowercase())
        .unwrap_or_default()
}

impl VisitorMut for Rewriter<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        let fail = |this: &mut Self, reason: String| {
            this.error = Some(reason);
            ControlFlow::Break(())
        };
        if let Some(index) = self.groups.iter().position(|group| group == expr) {
            *expr = quoted(format!("$g{index}"));
            return ControlFlow::Continue(());
        }
        match expr {
            Expr::Subquery(_) | Expr::Exists { .. } | Expr::InSubquery { .. } => {
                return fail(self, "subqueries cannot be maintained incrementally".into());
            }
            Expr::Function(function) => {
                if function.over.is_some() {
                    return fail(
                        self,
                        "window functions (OVER) cannot be maintained incrementally".into(),
                    );
                }
                let name = function_name(function);
                if self.known.volatile.contains(&name) {
                    return fail(self, format!(
                        "{name}() changes from one refresh to the next: a continuous query cannot use it (filter on time when reading instead)"
                    ));
                }
                let supported = matches!(
                    name.as_str(),
                    "count" | "sum" | "min" | "max" | "avg" | "mean" | "approx_distinct"
                );
                if self.checking_only && (supported || self.known.aggregates.contains(&name)) {
                    return fail(
                        self,
                        format!("{name}() is an aggregate: it cannot be used here"),
                    );
                }
                if supported {
                    return match self.aggregate(function, &name) {
                        Ok(merged) => {
                            let parsed = Parser::new(&GenericDialect {})
                                .try_with_sql(&merged)
                                .and_then(|mut parser| parser.parse_expr());
                            match parsed {
                                Ok(parsed) => {
                                    self.finals.push(parsed);
                                    *expr =
                                        quoted(format!("{PLACEHOLDER}{}", self.finals.len() - 1));
                                    ControlFlow::Continue(())
                                }
                                Err(error) => fail(self, error.to_string()),
                            }
                        }
                        Err(reason) => fail(self, reason),
                    };
                }
                if self.known.aggregates.contains(&name) {
                    return fail(self, format!(
                        "{name}() cannot be maintained incrementally: a continuous query uses {SUPPORTED}"
                    ));
                }
            }
            Expr::Identifier(ident) if !self.checking_only => {
                return fail(
                    self,
                    format!("column {ident} is neither in GROUP BY nor inside {SUPPORTED}"),
                );
            }
            Expr::CompoundIdentifier(parts) if !self.checking_only => {
                let shown = parts
                    .iter()
                    .map(|p| p.value.clone())
                    .collect::<Vec<_>>()
                    .join(".");
                return fail(
                    self,
                    format!("column {shown} is neither in GROUP BY nor inside {SUPPORTED}"),
                );
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

/// Puts the merged aggregates in place of their placeholders.
struct Filler<'a> {
    finals: &'a [Expr],
}

impl VisitorMut for Filler<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Expr::Identifier(ident) = expr {
            if let Some(index) = ident.value.strip_prefix(PLACEHOLDER) {
                if let Some(merged) = index.parse::<usize>().ok().and_then(|i| self.finals.get(i)) {
                    *expr = merged.clone();
                }
            }
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
#[path = "compile_tests.rs"]
mod tests;

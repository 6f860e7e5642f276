//! The width bound: table references, with common table expressions expanded.

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_relations, ObjectName, Query, Statement, Visit, Visitor,
};

use super::MAX_TABLE_REFERENCES;
use crate::QueryError;

/// Refuses a statement that references more than `MAX_TABLE_REFERENCES`
/// tables once every use of a common table expression is expanded.
/// Call only on a statement that passed `check_nesting`: it recurses.
pub(crate) fn check_width(statement: &Statement) -> Result<(), QueryError> {
    let mut ctes = CteReads::default();
    let _ = statement.visit(&mut ctes);
    let mut expanded = HashMap::new();
    let references = relation_names(statement).iter().fold(0usize, |sum, name| {
        sum.saturating_add(ctes.expand(name, &mut expanded))
    });
    if references > MAX_TABLE_REFERENCES {
        return Err(QueryError::TooComplex(format!(
            "the statement reads too many tables: {references} table references once common \
             table expressions are expanded, over the limit of {MAX_TABLE_REFERENCES}"
        )));
    }
    Ok(())
}

fn relation_names<V: Visit>(node: &V) -> Vec<String> {
    let mut names = Vec::new();
    let _ = visit_relations(node, |relation: &ObjectName| {
        // A CTE is named by one identifier, quoted or not: compare its value.
        let name = match relation.0.as_slice() {
            [part] => part.as_ident().map(|ident| ident.value.to_lowercase()),
            _ => None,
        };
        names.push(name.unwrap_or_else(|| relation.to_string().to_lowercase()));
        ControlFlow::<()>::Continue(())
    });
    names
}

/// The tables each common table expression reads, by name. Names are not
/// scoped: the bodies of a shadowed name are added up, which only
/// overestimates.
#[derive(Default)]
struct CteReads {
    reads: HashMap<String, Vec<String>>,
}

impl Visitor for CteReads {
    type Break = ();

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if let Some(with) = &query.with {
            for cte in &with.cte_tables {
                let name = cte.alias.name.value.to_lowercase();
                let reads = relation_names(cte.query.as_ref());
                self.reads.entry(name).or_default().extend(reads);
            }
        }
        ControlFlow::Continue(())
    }
}

impl CteReads {
    /// The table references one use of `name` stands for (memoised; a name
    /// met again while it is expanded, as in a recursive CTE, counts one).
    fn expand(&self, name: &str, expanded: &mut HashMap<String, Option<usize>>) -> usize {
        let Some(reads) = self.reads.get(name) else {
            return 1;
        };
        match expanded.get(name) {
            Some(Some(count)) => return *count,
            Some(None) => return 1,
            None => {}
        }
        expanded.insert(name.to_string(), None);
        let count = reads.iter().fold(0usize, |sum, read| {
            sum.saturating_add(self.expand(read, expanded))
        });
        expanded.insert(name.to_string(), Some(count));
        count
    }
}

//! `_user` has one type per project and is a column of every collection,
//! as in Rakam, so a person is the same key wherever their events are.

use rakam_model::{CollectionSchema, Column, FieldType};
use rakam_store_api::ProjectSnapshot;

pub(crate) const USER_COLUMN: &str = "_user";

/// The type of `_user` in the project so far: STRING when any collection
/// has it as text (the only type every id fits), else the type the first
/// collection gave it.
fn project_user_type(project: &ProjectSnapshot) -> Option<FieldType> {
    let mut types = project
        .collections
        .values()
        .filter_map(|schema| schema.column_type(USER_COLUMN));
    let first = types.next()?.clone();
    if first == FieldType::String || types.any(|t| *t == FieldType::String) {
        return Some(FieldType::String);
    }
    Some(first)
}

/// Settles `_user` in the columns requested for a collection: a collection
/// that lacks it gets it, in the project's type; a first `_user` value
/// does not give a collection a type of its own. Values that do not fit
/// the project's type go to `_unmapped`, as any other value would.
pub(crate) fn settle_user_column(
    project: &ProjectSnapshot,
    current: Option<&CollectionSchema>,
    requested: &mut Vec<Column>,
) {
    if current.is_some_and(|schema| schema.column_type(USER_COLUMN).is_some()) {
        return;
    }
    // An older collection without `_user` gets it with its next schema
    // change, not a change of its own on every request (which, at the
    // column limit, would be refused every time).
    if current.is_some() && requested.is_empty() {
        return;
    }
    let project_type = project_user_type(project);
    match requested.iter_mut().find(|c| c.name == USER_COLUMN) {
        Some(column) => {
            if let Some(project_type) = project_type {
                column.field_type = project_type;
            }
        }
        None => requested.push(Column {
            name: USER_COLUMN.to_string(),
            field_type: project_type.unwrap_or(FieldType::String),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use rakam_store_api::{ProjectId, ProjectInfo};

    use super::*;

    fn project(collections: &[(&str, Option<FieldType>)]) -> ProjectSnapshot {
        let collections: BTreeMap<String, Arc<CollectionSchema>> = collections
            .iter()
            .map(|(name, user)| {
                let columns = user
                    .iter()
                    .map(|t| Column {
                        name: USER_COLUMN.into(),
                        field_type: t.clone(),
                    })
                    .collect();
                (name.to_string(), Arc::new(CollectionSchema { columns }))
            })
            .collect();
        ProjectSnapshot {
            project: ProjectInfo {
                name: "p".into(),
                id: ProjectId::new("p"),
                created_at_ms: 0,
            },
            version: 1,
            collections,
        }
    }

    fn settled(project: &ProjectSnapshot, requested: Vec<Column>) -> Vec<Column> {
        let mut requested = requested;
        settle_user_column(project, None, &mut requested);
        requested
    }

    fn user(field_type: FieldType) -> Column {
        Column {
            name: USER_COLUMN.into(),
            field_type,
        }
    }

    #[test]
    fn every_collection_gets_the_projects_user_type() {
        let empty = project(&[]);
        assert_eq!(settled(&empty, vec![]), vec![user(FieldType::String)]);
        assert_eq!(
            settled(&empty, vec![user(FieldType::Long)]),
            vec![user(FieldType::Long)],
            "the first value decides"
        );
        let numeric = project(&[("a", Some(FieldType::Long)), ("b", None)]);
        assert_eq!(
            settled(&numeric, vec![user(FieldType::String)]),
            vec![user(FieldType::Long)]
        );
        assert_eq!(settled(&numeric, vec![]), vec![user(FieldType::Long)]);
        let mixed = project(&[("a", Some(FieldType::Long)), ("b", Some(FieldType::String))]);
        assert_eq!(settled(&mixed, vec![]), vec![user(FieldType::String)]);
        let has_it = CollectionSchema {
            columns: vec![user(FieldType::Long)],
        };
        let mut requested = vec![];
        settle_user_column(&mixed, Some(&has_it), &mut requested);
        assert!(requested.is_empty());
        let lacks_it = CollectionSchema { columns: vec![] };
        settle_user_column(&mixed, Some(&lacks_it), &mut requested);
        assert!(requested.is_empty(), "no schema change of its own");
        let mut with_new_field = vec![Column {
            name: "x".into(),
            field_type: FieldType::Long,
        }];
        settle_user_column(&mixed, Some(&lacks_it), &mut with_new_field);
        assert_eq!(with_new_field.len(), 2, "piggybacks on a change");
    }
}

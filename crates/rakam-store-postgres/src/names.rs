//! How Rakam's names become PostgreSQL identifiers and types.
//!
//! A project `p` with id `i` owns two schemas: `rakam_<i>` holds one view per
//! collection plus `_all` (what queries see, and all its read-only role may
//! read), and `rakam_<i>_data` holds the partitioned tables the views read.
//! Ids, not names, keep a recreated project apart from a stale writer of
//! the deleted one.

use rakam_model::FieldType;
use rakam_store_api::hash_key;

/// PostgreSQL keeps only this many bytes of an identifier and silently
/// drops the rest, so longer names must never reach it.
pub const MAX_IDENTIFIER_BYTES: usize = 63;
/// What a monthly partition adds to its table's name (`$2024_03`).
const PARTITION_SUFFIX_BYTES: usize = 8;

/// `name` if it fits in `room` bytes, else a prefix and a hash of the whole
/// name: deterministic, so every process derives the same identifier.
fn fitted(name: &str, room: usize) -> String {
    if name.len() <= room {
        return name.to_string();
    }
    let hash = &hash_key(name)[..12];
    let mut cut = room - hash.len() - 1;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    // Keep the prefix's trailing run of `$` even (an escaped name's), so
    // the `$` before the hash makes a run no client name can produce.
    let trailing = name[..cut].bytes().rev().take_while(|b| *b == b'$').count();
    if trailing % 2 == 1 {
        cut -= 1;
    }
    format!("{}${hash}", &name[..cut])
}

/// A client's name inside a physical identifier: `$` is doubled, because
/// Rakam's own suffixes (`$double`, `$2024_03`, `$<hash>`) start with a
/// single one, so no name a client sends can equal a suffixed one.
fn escaped(name: &str) -> String {
    name.replace('$', "$$")
}

/// The collection's table: its name, shortened when its partitions' names
/// would not fit (views keep the full name).
fn table_name(collection: &str) -> String {
    fitted(
        &escaped(collection),
        MAX_IDENTIFIER_BYTES - PARTITION_SUFFIX_BYTES,
    )
}

pub fn quote(identifier: &str) -> String {
    format!("\"{}\"", identifier.replace('"', "\"\""))
}

/// A string constant, safe whatever `standard_conforming_strings` is: an
/// escape string with backslashes and quotes doubled.
pub fn literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// Project ids are 32 hex digits; the first 16 keep identifiers short
/// (PostgreSQL truncates at 63 bytes) and still make clashes negligible.
fn short_id(project_id: &str) -> &str {
    project_id.get(..16).unwrap_or(project_id)
}

pub fn view_schema(project_id: &str) -> String {
    format!("rakam_{}", short_id(project_id))
}

pub fn data_schema(project_id: &str) -> String {
    format!("rakam_{}_data", short_id(project_id))
}

pub fn reader_role(project_id: &str) -> String {
    format!("rakam_{}_reader", short_id(project_id))
}

pub fn data_table(project_id: &str, collection: &str) -> String {
    format!(
        "{}.{}",
        quote(&data_schema(project_id)),
        quote(&table_name(collection))
    )
}

pub fn view(project_id: &str, name: &str) -> String {
    format!("{}.{}", quote(&view_schema(project_id)), quote(name))
}

pub fn next_month(year: i32, month: u32) -> (i32, u32) {
    if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    }
}

/// Monthly partition of a collection, e.g. `pageview$2024_01`.
pub fn partition(project_id: &str, collection: &str, year: i32, month: u32) -> String {
    format!(
        "{}.{}",
        quote(&data_schema(project_id)),
        quote(&format!("{}${year:04}_{month:02}", table_name(collection)))
    )
}

/// The stored column of a logical column of this type. A widened column
/// gets a new physical column (`price$double`) instead of a table rewrite;
/// the view reads both. A client's `$` is doubled (`escaped`), so a field
/// named `price$double` cannot clash with it.
pub fn physical_column(name: &str, field_type: &FieldType, first_type: &FieldType) -> String {
    let base = escaped(name);
    let wanted = if field_type == first_type {
        base
    } else {
        format!("{base}${}", field_type.name().to_ascii_lowercase())
    };
    fitted(&wanted, MAX_IDENTIFIER_BYTES)
}

pub fn sql_type(field_type: &FieldType) -> String {
    match field_type {
        FieldType::String => "text".into(),
        FieldType::Long => "bigint".into(),
        FieldType::Double => "double precision".into(),
        FieldType::Boolean => "boolean".into(),
        FieldType::Date => "date".into(),
        FieldType::Timestamp => "timestamptz".into(),
        FieldType::Array(inner) => format!("{}[]", sql_type(inner)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_short() {
        assert_eq!(quote("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "E'it''s'");
        assert_eq!(literal("a\\'b"), "E'a\\\\''b'");
        // A client's `$` never makes a name Rakam derives.
        assert_eq!(
            physical_column("price$double", &FieldType::Long, &FieldType::Long),
            "price$$double"
        );
        let id = "0123456789abcdef0123456789abcdef";
        assert_ne!(partition(id, "a", 2024, 3), data_table(id, "a$2024_03"));
        assert_eq!(
            data_table(id, "a$2024_03"),
            "\"rakam_0123456789abcdef_data\".\"a$$2024_03\""
        );
        let dollars = format!("{}{}", "$".repeat(61), "x");
        let fitted_name = physical_column(&dollars, &FieldType::Long, &FieldType::Long);
        assert!(fitted_name.len() <= MAX_IDENTIFIER_BYTES, "{fitted_name}");
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(view_schema(id), "rakam_0123456789abcdef");
        assert!(reader_role(id).len() < 63);
        assert_eq!(
            partition(id, "page", 2024, 3),
            "\"rakam_0123456789abcdef_data\".\"page$2024_03\""
        );
        assert_eq!(
            physical_column("price", &FieldType::Double, &FieldType::Long),
            "price$double"
        );
        assert_eq!(
            sql_type(&FieldType::Array(Box::new(FieldType::Long))),
            "bigint[]"
        );
        // Names PostgreSQL would cut stay distinct and within its limit.
        let long = "x".repeat(63);
        let widened = physical_column(&long, &FieldType::Double, &FieldType::Long);
        assert!(
            widened.len() <= MAX_IDENTIFIER_BYTES && widened != long,
            "{widened}"
        );
        let collection = "c".repeat(60);
        let january = partition(id, &collection, 2024, 1);
        let table = data_table(id, &collection);
        let table_name = table.rsplit('.').next().expect("table").trim_matches('"');
        let partition_name = january
            .rsplit('.')
            .next()
            .expect("partition")
            .trim_matches('"');
        assert!(
            partition_name.len() <= MAX_IDENTIFIER_BYTES,
            "{partition_name}"
        );
        assert!(partition_name.starts_with(table_name) && partition_name != table_name);
        assert_ne!(january, partition(id, &collection, 2024, 2));
    }
}

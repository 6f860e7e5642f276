//! Field and collection names, normalised as Rakam does so that the same
//! client sends the same columns: `pageUrl` becomes `page_url`, `URL` becomes
//! `url` and accents are stripped. What cannot become a plain SQL identifier
//! is refused with the offending name, never silently mangled.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use crate::ModelError;

pub const MAX_NAME_LENGTH: usize = 128;

/// Whether `normalize_field_name` would return `raw` unchanged (most names
/// are already normal: callers that own the name can keep it).
pub fn is_normal_field_name(raw: &str) -> bool {
    !raw.is_empty()
        && raw.len() <= MAX_NAME_LENGTH
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

pub fn normalize_field_name(raw: &str) -> Result<String, ModelError> {
    // Most names are already normal; skip the Unicode work for them.
    if is_normal_field_name(raw) {
        return Ok(raw.to_string());
    }
    let invalid = |reason| ModelError::InvalidFieldName {
        name: raw.to_string(),
        reason,
    };
    let without_quotes: String = raw.chars().filter(|c| *c != '"').collect();
    let trimmed = without_quotes.trim();
    if trimmed.is_empty() {
        return Err(invalid("empty"));
    }
    let mut normalized = String::with_capacity(trimmed.len() + 4);
    let mut previous_was_lower = false;
    for decomposed in trimmed.nfd() {
        if is_combining_mark(decomposed) {
            continue;
        }
        let mapped = match decomposed {
            'a'..='z' | '0'..='9' | '_' => decomposed,
            'A'..='Z' => {
                if previous_was_lower {
                    normalized.push('_');
                }
                decomposed.to_ascii_lowercase()
            }
            ' ' | '-' | '.' => '_',
            // Other printable ASCII is kept as Rakam keeps it (`$browser`,
            // `a:b`); SQL reaches such columns as quoted identifiers.
            '!'..='~' => decomposed,
            _ if decomposed.is_ascii() => {
                return Err(invalid("control characters are not allowed"))
            }
            _ => {
                return Err(invalid(
                    "non-ASCII characters other than accents are not allowed",
                ))
            }
        };
        previous_was_lower = decomposed.is_ascii_lowercase() || decomposed.is_ascii_digit();
        normalized.push(mapped);
    }
    if normalized.is_empty() {
        // Only combining marks (found by the names_and_times fuzz target).
        return Err(invalid("empty once accents are removed"));
    }
    if normalized.len() > MAX_NAME_LENGTH {
        return Err(invalid("longer than 128 characters"));
    }
    Ok(normalized)
}

/// Names a query cannot read as a collection: the virtual `_all` and the
/// names Rakam keeps for itself.
pub const RESERVED_COLLECTION_NAMES: &[&str] = &["_all", "_users"];
/// Longest collection name, in characters (Rakam's limit)...
pub const MAX_COLLECTION_CHARS: usize = 100;
/// ...and in bytes, so that every store can name a file or table after it.
pub const MAX_COLLECTION_BYTES: usize = 127;

/// Collection names are taken as Rakam takes them: any text, only
/// lower-cased and length-checked (`Order Completed` → `order completed`).
/// SQL reaches names that are not plain identifiers by quoting them.
pub fn normalize_collection_name(raw: &str) -> Result<String, ModelError> {
    let invalid = |reason| ModelError::InvalidCollectionName {
        name: raw.to_string(),
        reason,
    };
    let lowered = raw.to_lowercase();
    if lowered.trim().is_empty() {
        return Err(invalid("empty"));
    }
    if lowered.chars().count() > MAX_COLLECTION_CHARS || lowered.len() > MAX_COLLECTION_BYTES {
        return Err(invalid("longer than 100 characters (or 127 bytes)"));
    }
    if lowered.chars().any(char::is_control) {
        return Err(invalid("control characters are not allowed"));
    }
    if RESERVED_COLLECTION_NAMES.contains(&lowered.as_str()) || lowered.starts_with("$materialized")
    {
        return Err(invalid("the name is reserved"));
    }
    Ok(lowered)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: a name of combining marks only became "".
    #[test]
    fn a_name_of_accents_alone_is_refused_not_emptied() {
        for raw in ["\u{65a}", "\"\u{301}\"", " \u{300}\u{301} "] {
            assert!(normalize_field_name(raw).is_err(), "{raw:?}");
        }
        assert_eq!(normalize_field_name("e\u{301}").ok().as_deref(), Some("e"));
    }

    #[test]
    fn follows_rakam_rules() {
        assert_eq!(normalize_field_name("pageUrl").as_deref(), Ok("page_url"));
        assert_eq!(normalize_field_name("URL").as_deref(), Ok("url"));
        assert_eq!(normalize_field_name("\"quoted\"").as_deref(), Ok("quoted"));
        assert_eq!(normalize_field_name(" café ").as_deref(), Ok("cafe"));
        assert_eq!(normalize_field_name("Ünïcödé").as_deref(), Ok("unicode"));
        assert_eq!(normalize_field_name("_user").as_deref(), Ok("_user"));
        assert_eq!(normalize_field_name("a.b-c d").as_deref(), Ok("a_b_c_d"));
        assert_eq!(normalize_field_name("v2Name").as_deref(), Ok("v2_name"));
        assert_eq!(normalize_field_name("$browser").as_deref(), Ok("$browser"));
        assert_eq!(normalize_field_name("a:b").as_deref(), Ok("a:b"));
        assert_eq!(normalize_field_name("a;b").as_deref(), Ok("a;b"));
    }

    #[test]
    fn refuses_what_is_not_an_identifier() {
        for bad in ["", "  ", "\"\"", "日本", "x\u{0}y", "tab\there"] {
            assert!(normalize_field_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(normalize_field_name(&"a".repeat(129)).is_err());
    }

    #[test]
    fn collections_are_lowercased_identifiers() {
        assert_eq!(
            normalize_collection_name("PageView").as_deref(),
            Ok("pageview")
        );
        assert!(normalize_collection_name("_all").is_err());
        assert!(normalize_collection_name("").is_err());
        assert!(normalize_collection_name("a\nb").is_err());
        assert!(normalize_collection_name(&"x".repeat(101)).is_err());
        for (raw, normal) in [
            ("Order Completed", "order completed"),
            ("page-view", "page-view"),
            ("_private", "_private"),
            ("Ünïcödé", "ünïcödé"),
        ] {
            assert_eq!(normalize_collection_name(raw).as_deref(), Ok(normal));
        }
    }
}

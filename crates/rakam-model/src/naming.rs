//! Field and collection names, normalised as Rakam does so that the same
//! client sends the same columns: `pageUrl` becomes `page_url`, `URL` becomes
//! `url` and accents are stripped. What cannot become a plain SQL identifier
//! is refused with the offending name, never silently mangled.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

use crate::ModelError;

pub const MAX_NAME_LENGTH: usize = 128;

pub fn normalize_field_name(raw: &str) -> Result<String, ModelError> {
    // Most names are already normal; skip the Unicode work for them.
    let already_normal = !raw.is_empty()
        && raw.len() <= MAX_NAME_LENGTH
        && raw
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if already_normal {
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
            _ if decomposed.is_ascii() => {
                return Err(invalid(
                    "only letters, digits, '_', '-', '.' and spaces are allowed",
                ))
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
    if normalized.len() > MAX_NAME_LENGTH {
        return Err(invalid("longer than 128 characters"));
    }
    Ok(normalized)
}

/// Collection names are only lower-cased (as in Rakam) and must be plain
/// identifiers; names that start with `_` are reserved for the system
/// (`_all`, `_users`).
pub fn normalize_collection_name(raw: &str) -> Result<String, ModelError> {
    let invalid = |reason| ModelError::InvalidCollectionName {
        name: raw.to_string(),
        reason,
    };
    let lowered = raw.trim().to_lowercase();
    if lowered.is_empty() {
        return Err(invalid("empty"));
    }
    if lowered.len() > 100 {
        return Err(invalid("longer than 100 characters"));
    }
    if lowered.starts_with('_') {
        return Err(invalid("names starting with '_' are reserved"));
    }
    if !lowered
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(invalid("only letters, digits and '_' are allowed"));
    }
    Ok(lowered)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn refuses_what_is_not_an_identifier() {
        for bad in ["", "  ", "\"\"", "a;b", "日本", "x\u{0}y", "semi:colon"] {
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
        assert!(normalize_collection_name("a b").is_err());
        assert!(normalize_collection_name("").is_err());
    }
}

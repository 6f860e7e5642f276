//! Constructs sqlparser parses in time exponential in their nesting.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::QueryError;

/// Keywords with a special syntax (`CAST(x AS t)`, `POSITION(a IN b)`, …)
/// that sqlparser, when that syntax fails, parses again from the start as a
/// plain function call: nested inside one another, they take time
/// exponential in their nesting.
const SPECIAL_FORMS: &[Keyword] = &[
    Keyword::CAST,
    Keyword::TRY_CAST,
    Keyword::SAFE_CAST,
    Keyword::CONVERT,
    Keyword::TRY_CONVERT,
    Keyword::EXTRACT,
    Keyword::CEIL,
    Keyword::FLOOR,
    Keyword::POSITION,
    Keyword::SUBSTRING,
    Keyword::SUBSTR,
    Keyword::OVERLAY,
    Keyword::TRIM,
];

/// How deep special forms may nest: at worst 2^4 parses of a statement.
pub const MAX_SPECIAL_FORM_NESTING: usize = 4;

pub(super) fn check_special_forms(tokens: &[Token]) -> Result<(), QueryError> {
    // Per open bracket: whether it is a special form's.
    let mut open: Vec<bool> = Vec::new();
    let mut special_open = 0usize;
    let mut pending = false;
    let mut after_name_marker = false;
    for token in tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))) {
        let was_pending = std::mem::take(&mut pending);
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                open.push(was_pending);
                if was_pending {
                    special_open += 1;
                    if special_open > MAX_SPECIAL_FORM_NESTING {
                        return Err(QueryError::TooComplex(format!(
                            "CAST, CONVERT, EXTRACT, POSITION, SUBSTRING, TRIM and the like nest \
                             more than {MAX_SPECIAL_FORM_NESTING} deep; move the inner ones into \
                             a subquery"
                        )));
                    }
                }
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                let was_special = open.pop() == Some(true);
                special_open -= usize::from(was_special);
            }
            Token::Word(word) if !after_name_marker => {
                pending = SPECIAL_FORMS.contains(&word.keyword);
            }
            _ => {}
        }
        after_name_marker = matches!(token, Token::Period)
            || matches!(token, Token::Word(w) if w.keyword == Keyword::AS);
    }
    Ok(())
}

/// sqlparser parses the operand of `INTERVAL` twice when it fails (once as
/// a typed string, once as an interval expression) without counting the
/// recursion, so nested INTERVALs take time exponential in their number.
/// An interval's value must be a literal: `INTERVAL '1 day'`, `INTERVAL 1 DAY`.
pub(super) fn check_intervals(tokens: &[Token]) -> Result<(), QueryError> {
    let mut significant = tokens
        .iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .peekable();
    let mut previous_is_name_marker = false;
    while let Some(token) = significant.next() {
        let is_interval = matches!(token, Token::Word(w) if w.keyword == Keyword::INTERVAL);
        if is_interval && !previous_is_name_marker {
            let mut next = significant.peek();
            if matches!(next, Some(Token::Minus) | Some(Token::Plus)) {
                significant.next();
                next = significant.peek();
            }
            let literal = matches!(
                next,
                Some(Token::SingleQuotedString(_))
                    | Some(Token::Number(..))
                    | Some(Token::EscapedStringLiteral(_))
                    | Some(Token::NationalStringLiteral(_))
            );
            if !literal {
                return Err(QueryError::TooComplex(
                    "INTERVAL takes a literal value ('1 day', or 1 DAY), not an expression; \
                     a column named interval must be quoted (\"interval\")"
                        .into(),
                ));
            }
        }
        previous_is_name_marker = matches!(token, Token::Period)
            || matches!(token, Token::Word(w) if w.keyword == Keyword::AS);
    }
    Ok(())
}

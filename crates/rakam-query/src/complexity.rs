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

use std::collections::HashMap;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_relations, ObjectName, Query, Statement, Visit, Visitor,
};
use datafusion::sql::sqlparser::dialect::Dialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

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
    check_intervals(&tokens)?;
    check_special_forms(&tokens)?;
    let depth = nesting_bound(&tokens);
    if depth > MAX_NESTING {
        return Err(QueryError::TooComplex(format!(
            "the statement nests too deeply: about {depth} levels of chained operators, joins, \
             set operations and brackets, over the limit of {MAX_NESTING}; simplify or split it"
        )));
    }
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Root,
    /// `(`, `[` or `{`.
    Bracket,
    /// `<` after STRUCT, MAP or ARRAY.
    Angle,
    Case,
}

/// One bracket (or `CASE … END`, or the statement itself) being measured.
/// Every operator is taken to build a left-deep chain: it sits above all
/// that came before it in the expression, as `a+b+c` parses to `(a+b)+c`.
/// Mixed precedences make shallower trees, so this only overestimates.
struct Frame {
    kind: FrameKind,
    /// A FROM or WITH was seen: from there on commas separate tables or
    /// common table expressions, which nest the plan. Never unset, since a
    /// keyword may be an alias (`AS where`); that only overestimates.
    commas_nest: bool,
    /// Depth of the expression chained so far, operators included.
    chained: usize,
    /// Depth of the operand after the last operator.
    operand: usize,
    /// Deepest finished sibling, or the left side of the last join or set
    /// operation with that node on top.
    finished: usize,
    /// Whether a join or set operation sits above what follows it.
    structured: bool,
}

impl Frame {
    fn new(kind: FrameKind) -> Self {
        Self {
            kind,
            commas_nest: false,
            chained: 0,
            operand: 0,
            finished: 0,
            structured: false,
        }
    }

    fn operator(&mut self) {
        self.chained = 1 + self.chained.max(self.operand);
        self.operand = 0;
    }

    fn leaf(&mut self, depth: usize) {
        self.operand = self.operand.max(depth);
    }

    /// A comma (or WHEN/THEN/ELSE): what follows is a sibling of what came
    /// before. Keywords never start a sibling: any of them may be a name.
    fn sibling(&mut self) {
        self.finished = self.depth_so_far();
        self.chained = 0;
        self.operand = 0;
    }

    /// A join or set operation: a node above everything so far, and above
    /// what follows it.
    fn structure(&mut self) {
        self.finished = 1 + self.depth_so_far();
        self.chained = 0;
        self.operand = 0;
        self.structured = true;
    }

    fn depth_so_far(&self) -> usize {
        let current = self.chained.max(self.operand) + usize::from(self.structured);
        self.finished.max(current)
    }

    /// The frame's depth, its own level included.
    fn depth(&self) -> usize {
        1 + self.depth_so_far()
    }
}

/// Keywords that never chain: clause words, join and sort modifiers,
/// literals. Every other keyword counts as an operator, so an infix word
/// this list does not know (`MEMBER OF`, `OPERATOR(+)`) still counts.
const PLAIN_KEYWORDS: &[Keyword] = &[
    Keyword::SELECT,
    Keyword::DISTINCT,
    Keyword::ALL,
    Keyword::AS,
    Keyword::WHERE,
    Keyword::GROUP,
    Keyword::BY,
    Keyword::HAVING,
    Keyword::ORDER,
    Keyword::ASC,
    Keyword::DESC,
    Keyword::NULLS,
    Keyword::FIRST,
    Keyword::LAST,
    Keyword::LIMIT,
    Keyword::OFFSET,
    Keyword::RECURSIVE,
    Keyword::ON,
    Keyword::USING,
    Keyword::LEFT,
    Keyword::RIGHT,
    Keyword::INNER,
    Keyword::OUTER,
    Keyword::FULL,
    Keyword::CROSS,
    Keyword::NATURAL,
    Keyword::OVER,
    Keyword::PARTITION,
    Keyword::NULL,
    Keyword::TRUE,
    Keyword::FALSE,
];

/// Keywords that take an operand after them: a CASE word right after one is
/// a name (`WHEN a AND then …`), not the next branch.
const INFIX_KEYWORDS: &[Keyword] = &[
    Keyword::AND,
    Keyword::OR,
    Keyword::XOR,
    Keyword::NOT,
    Keyword::IS,
    Keyword::IN,
    Keyword::LIKE,
    Keyword::ILIKE,
    Keyword::BETWEEN,
    Keyword::SIMILAR,
    Keyword::REGEXP,
    Keyword::RLIKE,
    Keyword::DIV,
    Keyword::COLLATE,
    Keyword::OVERLAPS,
    Keyword::ESCAPE,
    Keyword::MEMBER,
    Keyword::OPERATOR,
];

/// An upper bound of the depth of the tree `tokens` parse into.
fn nesting_bound(tokens: &[Token]) -> usize {
    let mut frames = vec![Frame::new(FrameKind::Root)];
    // A keyword after `.` or `AS` is a name (`x.limit`, `AS where`).
    let mut names_next = false;
    let mut after_operator = false;
    let mut after_type_keyword = false;
    for token in tokens {
        let Some(top) = frames.last_mut() else {
            break;
        };
        if matches!(token, Token::Whitespace(_)) {
            continue;
        }
        let is_name = std::mem::take(&mut names_next);
        let follows_operator = std::mem::take(&mut after_operator);
        let follows_type = std::mem::take(&mut after_type_keyword);
        match token {
            Token::LParen | Token::LBrace => frames.push(Frame::new(FrameKind::Bracket)),
            Token::LBracket => {
                top.operator();
                frames.push(Frame::new(FrameKind::Bracket));
            }
            Token::Lt if follows_type => frames.push(Frame::new(FrameKind::Angle)),
            Token::Gt | Token::ShiftRight if top.kind == FrameKind::Angle => {
                let closing = if matches!(token, Token::ShiftRight) {
                    2
                } else {
                    1
                };
                for _ in 0..closing {
                    if frames.last().is_some_and(|f| f.kind == FrameKind::Angle) {
                        close(&mut frames);
                    }
                }
            }
            Token::RParen | Token::RBracket | Token::RBrace => {
                // Closes the innermost bracket, and any CASE or `<` left open in it.
                while frames.len() > 1 {
                    let kind = close(&mut frames);
                    if kind == FrameKind::Bracket {
                        break;
                    }
                }
            }
            Token::Comma if top.commas_nest => top.structure(),
            Token::Comma => top.sibling(),
            Token::Period => {
                top.operator();
                names_next = true;
                after_operator = true;
            }
            Token::Word(word) if is_name || word.keyword == Keyword::NoKeyword => top.leaf(1),
            Token::Word(word) => match word.keyword {
                Keyword::AS => names_next = true,
                Keyword::CASE => frames.push(Frame::new(FrameKind::Case)),
                // Right after an operator these words are names (`0 + then`).
                Keyword::END if top.kind == FrameKind::Case && !follows_operator => {
                    close(&mut frames);
                }
                Keyword::WHEN | Keyword::THEN | Keyword::ELSE
                    if top.kind == FrameKind::Case && !follows_operator =>
                {
                    top.sibling()
                }
                Keyword::FROM | Keyword::WITH => top.commas_nest = true,
                Keyword::UNION
                | Keyword::EXCEPT
                | Keyword::INTERSECT
                | Keyword::MINUS
                | Keyword::JOIN
                | Keyword::APPLY => top.structure(),
                keyword if PLAIN_KEYWORDS.contains(&keyword) => top.leaf(1),
                keyword => {
                    after_type_keyword =
                        matches!(keyword, Keyword::STRUCT | Keyword::MAP | Keyword::ARRAY);
                    after_operator = INFIX_KEYWORDS.contains(&keyword);
                    top.operator();
                }
            },
            Token::Number(..)
            | Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
            | Token::DollarQuotedString(_) => top.leaf(1),
            // Every other token is an operator, a cast, an accessor or a
            // placeholder: count it as one more link of the chain.
            _ => {
                top.operator();
                after_operator = true;
            }
        }
        if frames.len() > 2 * MAX_NESTING {
            // Deep enough to refuse; no need to read on.
            return frames.len();
        }
    }
    // Frames left open are closed where the text ends.
    let mut depth = 0;
    while let Some(mut frame) = frames.pop() {
        frame.leaf(depth);
        depth = frame.depth();
    }
    depth
}

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

fn check_special_forms(tokens: &[Token]) -> Result<(), QueryError> {
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

/// Closes the innermost frame into its parent; returns its kind.
fn close(frames: &mut Vec<Frame>) -> FrameKind {
    let Some(frame) = frames.pop() else {
        return FrameKind::Root;
    };
    if let Some(parent) = frames.last_mut() {
        parent.leaf(frame.depth());
    }
    frame.kind
}

/// sqlparser parses the operand of `INTERVAL` twice when it fails (once as
/// a typed string, once as an interval expression) without counting the
/// recursion, so nested INTERVALs take time exponential in their number.
/// An interval's value must be a literal: `INTERVAL '1 day'`, `INTERVAL 1 DAY`.
fn check_intervals(tokens: &[Token]) -> Result<(), QueryError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::GenericDialect;

    fn depth(sql: &str) -> usize {
        let tokens = Tokenizer::new(&GenericDialect {}, sql)
            .tokenize()
            .expect("tokens");
        nesting_bound(&tokens)
    }

    fn chain(term: &str, separator: &str, count: usize) -> String {
        vec![term; count].join(separator)
    }

    #[test]
    fn chains_count_as_deep_as_they_are_long() {
        assert!(depth(&format!("SELECT {}", chain("1", "+", 1000))) >= 999);
        assert!(depth(&format!("SELECT 1 WHERE {}", chain("a", " AND ", 600))) >= 599);
        assert!(depth(&chain("SELECT 1, 2", " UNION ALL ", 600)) >= 599);
        assert!(depth(&format!("SELECT * FROM {}", chain("t", ", ", 600))) >= 599);
        assert!(
            depth(&format!(
                "SELECT * FROM t0 {}",
                chain("JOIN t ON a = b", " ", 600)
            )) >= 600
        );
        let ctes: Vec<String> = (1..600)
            .map(|i| format!("a{i} AS (SELECT * FROM a{})", i - 1))
            .collect();
        assert!(
            depth(&format!(
                "WITH a0 AS (SELECT 1), {} SELECT 1",
                ctes.join(", ")
            )) >= 599
        );
    }

    #[test]
    fn a_chain_cannot_hide_behind_case_or_brackets() {
        // The chain goes on after each CASE … END and each bracket.
        let piece = "1+1+1+1+CASE WHEN 1=1 THEN 1 ELSE 0 END+(1)+";
        assert!(depth(&format!("SELECT {}1", piece.repeat(200))) >= 1000);
        let subscripts = format!("SELECT a{}", "[1]".repeat(600));
        assert!(depth(&subscripts) >= 600);
    }

    #[test]
    fn keywords_used_as_names_do_not_hide_a_chain() {
        let limit = format!(
            "SELECT {} FROM (SELECT 1 AS \"limit\") x",
            chain("x.limit+1", "+", 400)
        );
        assert!(depth(&limit) >= 800);
        let zoned = chain("NULL::TIMESTAMP WITH TIME ZONE IS NULL", " OR ", 300);
        assert!(depth(&format!("SELECT {zoned}")) >= 600);
        let aliased = format!(
            "SELECT * FROM (SELECT 1) AS where, {}",
            chain("(SELECT 1) AS b", ", ", 600)
        );
        assert!(depth(&aliased) >= 600);
        let case_names = format!(
            "SELECT CASE WHEN x.then THEN {} END",
            chain("x.then", "+", 600)
        );
        assert!(depth(&case_names) >= 600);
    }

    #[test]
    fn infix_keywords_it_does_not_list_still_count() {
        assert!(depth(&format!("SELECT {}", chain("1", " OPERATOR(+) ", 600))) >= 600);
        assert!(
            depth(&format!(
                "SELECT {}",
                chain("1", " MEMBER OF(1) AND 1", 300)
            )) >= 600
        );
    }

    #[test]
    fn an_interval_takes_a_literal() {
        let nested = format!("SELECT {})", "INTERVAL ".repeat(40));
        assert!(matches!(
            check_nesting(&nested, &GenericDialect {}),
            Err(QueryError::TooComplex(_))
        ));
        let in_brackets = format!("SELECT {}1{}", "INTERVAL (".repeat(3), ")".repeat(3));
        assert!(check_nesting(&in_brackets, &GenericDialect {}).is_err());
        for fine in [
            "SELECT now() - INTERVAL '1 day'",
            "SELECT INTERVAL 1 DAY, INTERVAL -2 HOUR",
            "SELECT t.interval, \"interval\" FROM t",
        ] {
            assert!(check_nesting(fine, &GenericDialect {}).is_ok(), "{fine}");
        }
    }

    #[test]
    fn commas_inside_braces_angles_and_case_names_do_not_reset_a_chain() {
        let braces = format!("SELECT 1+{}", chain("{'a':1,'b':1}", "+", 600));
        assert!(depth(&braces) >= 600);
        let structs = format!("SELECT {}", chain("1::STRUCT<a INT, b INT>", "+", 600));
        assert!(depth(&structs) >= 600);
        let thens = format!(
            "SELECT CASE WHEN true THEN 0+{} END",
            chain("then", "+", 600)
        );
        assert!(depth(&thens) >= 600);
        let ands = format!(
            "SELECT CASE WHEN a AND {} THEN 1 END",
            chain("then", " AND ", 600)
        );
        assert!(depth(&ands) >= 600);
        // A value keyword before END still closes the CASE.
        let closed = format!(
            "SELECT {}",
            chain("CASE WHEN a THEN CURRENT_DATE END", ", ", 600)
        );
        assert!(depth(&closed) < 10);
    }

    #[test]
    fn special_forms_nest_only_a_little() {
        let failing = format!("SELECT {}1{}", "CAST(".repeat(40), ")".repeat(40));
        assert!(matches!(
            check_nesting(&failing, &GenericDialect {}),
            Err(QueryError::TooComplex(_))
        ));
        let usual =
            "SELECT CAST(SUBSTRING(CAST(x AS VARCHAR), 1, 2) AS INT), TRIM(CAST(y AS TEXT))";
        assert!(check_nesting(usual, &GenericDialect {}).is_ok());
        let named = format!("SELECT {}1{}", "t.cast(".repeat(10), ")".repeat(10));
        assert!(check_nesting(&named, &GenericDialect {}).is_ok());
    }

    #[test]
    fn wide_lists_are_not_deep() {
        let items = chain("a + b", ", ", 5000);
        assert!(depth(&format!("SELECT {items} FROM t")) < 10);
        let values = chain("1", ", ", 50_000);
        assert!(depth(&format!("SELECT * FROM t WHERE a IN ({values})")) < 10);
        let branches: Vec<String> = (0..2000)
            .map(|i| format!("WHEN a = {i} THEN {i}"))
            .collect();
        assert!(depth(&format!("SELECT CASE {} END FROM t", branches.join(" "))) < 10);
    }

    #[test]
    fn deep_statements_are_refused_with_a_reason() {
        let sql = format!("SELECT {}", chain("1", "+", 1000));
        match check_nesting(&sql, &GenericDialect {}) {
            Err(QueryError::TooComplex(message)) => assert!(message.contains("too deeply")),
            other => panic!("accepted: {other:?}"),
        }
        let fine = format!("SELECT {}", chain("1", "+", 100));
        assert!(check_nesting(&fine, &GenericDialect {}).is_ok());
    }

    fn width(sql: &str) -> Result<(), QueryError> {
        let statement =
            datafusion::sql::sqlparser::parser::Parser::parse_sql(&GenericDialect {}, sql)
                .expect("parses")
                .remove(0);
        check_width(&statement)
    }

    #[test]
    fn doubling_ctes_are_too_wide() {
        let mut ctes = vec!["a0 AS (SELECT * FROM t)".to_string()];
        for i in 1..20 {
            ctes.push(format!(
                "a{i} AS (SELECT * FROM a{p} UNION ALL SELECT * FROM a{p})",
                p = i - 1
            ));
        }
        let sql = format!("WITH {} SELECT * FROM a19", ctes.join(", "));
        assert!(matches!(width(&sql), Err(QueryError::TooComplex(_))));
        assert!(width("WITH a AS (SELECT * FROM t) SELECT * FROM a JOIN a b ON true").is_ok());
        let many = format!("SELECT * FROM {}", chain("t", ", ", 501));
        assert!(matches!(width(&many), Err(QueryError::TooComplex(_))));
    }

    #[test]
    fn quoted_cte_names_are_expanded_too() {
        let mut ctes = vec!["a0 AS (SELECT * FROM t)".to_string()];
        for i in 1..20 {
            ctes.push(format!(
                "a{i} AS (SELECT * FROM \"a{p}\" UNION ALL SELECT * FROM \"a{p}\")",
                p = i - 1
            ));
        }
        let sql = format!("WITH {} SELECT * FROM \"a19\"", ctes.join(", "));
        assert!(matches!(width(&sql), Err(QueryError::TooComplex(_))));
    }

    #[test]
    fn a_recursive_cte_does_not_loop() {
        assert!(
            width("WITH RECURSIVE a AS (SELECT 1 UNION ALL SELECT * FROM a) SELECT * FROM a")
                .is_ok()
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        /// SQL text and a lower bound of the depth of the tree it parses
        /// into (the leftmost path of a chain, say), built together.
        fn expression() -> impl Strategy<Value = (String, usize)> {
            let leaf = prop_oneof![
                Just(("1".to_string(), 1)),
                Just(("a".to_string(), 1)),
                Just(("'x'".to_string(), 1)),
            ];
            leaf.prop_recursive(8, 64, 2, |inner| {
                prop_oneof![
                    // A left-deep chain: the first term lies under every link.
                    (
                        inner.clone(),
                        prop::sample::select(vec![
                            "+", "*", " AND ", " OR ", " || ", " = ", "::INT"
                        ]),
                        1usize..400,
                    )
                        .prop_map(|((first, first_depth), op, links)| {
                            let link = if op == "::INT" {
                                op.to_string()
                            } else {
                                format!("{op}1")
                            };
                            (
                                format!("({first}){}", link.repeat(links)),
                                links + first_depth + 1,
                            )
                        }),
                    inner
                        .clone()
                        .prop_map(|(t, d)| (format!("abs({t})"), d + 1)),
                    inner
                        .clone()
                        .prop_map(|(t, d)| (format!("(SELECT {t})"), d + 1)),
                    inner.clone().prop_map(|(t, d)| (format!("a[{t}]"), d + 1)),
                    (inner.clone(), inner.clone()).prop_map(|((c, dc), (v, dv))| (
                        format!("CASE WHEN {c} THEN {v} ELSE 0 END"),
                        dc.max(dv) + 1
                    )),
                    (inner.clone(), 1usize..300)
                        .prop_map(|((t, d), n)| (
                            format!("SELECT {t}{}", " UNION ALL SELECT 1".repeat(n)),
                            n + d
                        ))
                        .prop_map(|(t, d)| (format!("({t})"), d + 1)),
                ]
            })
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

            /// The guard never counts less than the tree is deep, so what
            /// it lets through is never deeper than `MAX_NESTING`.
            #[test]
            fn the_bound_is_never_below_the_real_depth((text, lower) in expression()) {
                let sql = format!("SELECT {text}");
                prop_assert!(depth(&sql) >= lower, "bound {} < depth {lower}: {sql}", depth(&sql));
                if lower > MAX_NESTING {
                    let refused = check_nesting(&sql, &GenericDialect {}).is_err();
                    prop_assert!(refused, "accepted at depth {}", lower);
                }
            }

            /// Any soup of tokens is measured without a panic.
            #[test]
            fn any_token_soup_is_measured(words in prop::collection::vec(prop::sample::select(vec![
                "(", ")", "[", "]", "CASE", "WHEN", "THEN", "END", "+", ",", "SELECT", "FROM",
                "UNION", "JOIN", "ON", "WITH", "AS", "1", "a", "'", "AND", "::",
            ]), 0..400)) {
                let sql = words.join(" ");
                let _ = check_nesting(&sql, &GenericDialect {});
                let _ = crate::guard::check_statement(&sql);
            }
        }
    }
}

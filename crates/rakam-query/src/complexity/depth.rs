//! The depth bound: one pass over the tokens, no recursion.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::MAX_NESTING;

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
pub(super) fn nesting_bound(tokens: &[Token]) -> usize {
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

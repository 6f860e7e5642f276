//! The depth and width bounds against statements built to get past them.

use datafusion::sql::sqlparser::tokenizer::Tokenizer;

use super::depth::nesting_bound;
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
    let usual = "SELECT CAST(SUBSTRING(CAST(x AS VARCHAR), 1, 2) AS INT), TRIM(CAST(y AS TEXT))";
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
    let statement = datafusion::sql::sqlparser::parser::Parser::parse_sql(&GenericDialect {}, sql)
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
        width("WITH RECURSIVE a AS (SELECT 1 UNION ALL SELECT * FROM a) SELECT * FROM a").is_ok()
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
                    prop::sample::select(vec!["+", "*", " AND ", " OR ", " || ", " = ", "::INT"]),
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

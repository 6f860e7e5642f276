use std::collections::HashSet;

use super::*;

fn names(list: &[&str]) -> HashSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// `pageview` has the columns `_time`, `url` and `n`.
fn has_column(collection: &str, column: &str) -> bool {
    collection == "pageview" && ["_time", "url", "n"].contains(&column)
}

fn split(sql: &str) -> Result<Split, String> {
    let aggregates = names(&[
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "median",
        "approx_distinct",
        "array_agg",
    ]);
    let volatile = names(&["now", "random", "current_date"]);
    super::split(
        sql,
        &Known {
            aggregates: &aggregates,
            volatile: &volatile,
            has_column: &has_column,
        },
    )
}

#[test]
fn a_grouped_query_splits_into_partials_and_their_merge() {
    let split = split(
        "SELECT date_trunc('hour', _time) AS hour, url, count(*), avg(n) AS mean, approx_distinct(_user) FROM pageview WHERE n > 0 GROUP BY 1, url",
    )
    .expect("split");
    assert_eq!(
        split.partial_sql,
        "SELECT date_trunc('hour', _time) AS \"$g0\", url AS \"$g1\", count(*) AS \"$a0\", sum(n) AS \"$a1\", count(n) AS \"$a2\", rakam_hll_sketch(_user) AS \"$a3\" FROM pageview WHERE n > 0 GROUP BY date_trunc('hour', _time), url"
    );
    assert_eq!(
        split.merges,
        [Merge::Sum, Merge::Sum, Merge::Sum, Merge::Sketch]
    );
    assert_eq!(
        split.final_sql("p", &["hour".into(), "url".into(), "c".into(), "mean".into(), "u".into()]),
        "SELECT \"$g0\" AS \"hour\", \"$g1\" AS \"url\", COALESCE(SUM(\"$a0\"), 0) AS \"c\", CAST(SUM(\"$a1\") AS DOUBLE) / CAST(NULLIF(SUM(\"$a2\"), 0) AS DOUBLE) AS \"mean\", rakam_hll_estimate(rakam_hll_merge(\"$a3\")) AS \"u\" FROM p GROUP BY \"$g0\", \"$g1\""
    );
    assert_eq!(
        split.compaction_sql("p"),
        "SELECT \"$g0\", \"$g1\", SUM(\"$a0\") AS \"$a0\", SUM(\"$a1\") AS \"$a1\", SUM(\"$a2\") AS \"$a2\", rakam_hll_merge(\"$a3\") AS \"$a3\" FROM p GROUP BY \"$g0\", \"$g1\""
    );
}

#[test]
fn equal_partials_are_stored_once_and_having_merges_too() {
    let split = split(
        "SELECT url, count(*) AS a, count(*) * 2 AS b FROM pageview GROUP BY url HAVING count(*) > 1",
    )
    .expect("split");
    assert_eq!(split.merges, [Merge::Sum]);
    assert_eq!(
        split.having.as_deref(),
        Some("COALESCE(SUM(\"$a0\"), 0) > 1")
    );
}

#[test]
fn filters_stay_with_their_aggregate() {
    let split = split("SELECT sum(n) FILTER (WHERE n > 10) AS big FROM collection.pageview")
        .expect("split");
    assert_eq!(
        split.partial_sql,
        "SELECT sum(n) FILTER (WHERE n > 10) AS \"$a0\" FROM collection.pageview"
    );
    assert_eq!(split.group_count, 0);
}

#[test]
fn what_cannot_be_merged_is_refused_with_the_reason() {
    for (query, reason) in [
        (
            "SELECT array_agg(url) FROM pageview",
            "array_agg() cannot be maintained",
        ),
        ("SELECT count(DISTINCT url) FROM pageview", "DISTINCT"),
        ("SELECT sum(max(n)) FROM pageview", "is an aggregate"),
        (
            "SELECT count(*) FROM pageview WHERE max(n) > 1",
            "is an aggregate",
        ),
        ("SELECT DISTINCT url FROM pageview", "SELECT DISTINCT"),
        (
            "SELECT count(*) FROM a UNION SELECT count(*) FROM b",
            "single SELECT",
        ),
        ("SELECT count(*) FROM x.y.z", "a collection"),
        (
            "SELECT count(*) FROM pageview GROUP BY ROLLUP(url)",
            "ROLLUP",
        ),
        ("SELECT 1 FROM pageview", "aggregates"),
        ("DELETE FROM pageview", "one SELECT"),
        ("SELECT count(*) FROM pageview GROUP BY 7", "no such column"),
        (
            "SELECT count(*) FROM pageview WHERE _time > now() - INTERVAL '1' DAY",
            "now() changes",
        ),
        ("SELECT sum(random()) FROM pageview", "random() changes"),
        (
            "SELECT count(*) FILTER (WHERE n IN (SELECT n FROM pageview)) FROM pageview",
            "subqueries",
        ),
        (
            "SELECT count(*) FILTER (WHERE max(n) > 1) FROM pageview",
            "is an aggregate",
        ),
        (
            "SELECT count(*) FROM pageview WHERE url = '\\''' OR url = ' OR 1 = 1 --'",
            "cannot be stored exactly",
        ),
        (
            "SELECT max(n) FROM pageview GROUP BY max(n)",
            "is an aggregate",
        ),
    ] {
        let error = split(query).expect_err(query);
        assert!(error.contains(reason), "{query}: {error}");
    }
}

#[test]
fn a_column_wins_over_an_alias_of_its_name_in_group_by() {
    // `url` is a column: GROUP BY url groups by it, not by lower(url).
    let shadowed =
        split("SELECT lower(url) AS url, count(*) FROM pageview GROUP BY url").expect("split");
    assert!(
        shadowed.partial_sql.ends_with("GROUP BY url"),
        "{}",
        shadowed.partial_sql
    );
    assert_eq!(shadowed.final_items[0], "lower(\"$g0\")");
    // `day` is not a column: GROUP BY day is the alias.
    let aliased =
        split("SELECT date_trunc('day', _time) AS day, count(*) FROM pageview GROUP BY day")
            .expect("split");
    assert!(
        aliased
            .partial_sql
            .ends_with("GROUP BY date_trunc('day', _time)"),
        "{}",
        aliased.partial_sql
    );
    // Quoted aliases keep their case: "Day" is not day.
    let quoted =
        split("SELECT date_trunc('day', _time) AS \"Day\", count(*) FROM pageview GROUP BY day");
    assert!(quoted.is_err(), "{quoted:?}");
}

use std::collections::HashSet;

use super::*;

fn aggregates() -> HashSet<String> {
    [
        "count",
        "sum",
        "min",
        "max",
        "avg",
        "median",
        "approx_distinct",
        "array_agg",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn a_grouped_query_splits_into_partials_and_their_merge() {
    let split = split(
        "SELECT date_trunc('hour', _time) AS hour, url, count(*), avg(n) AS mean, approx_distinct(_user) FROM pageview WHERE n > 0 GROUP BY 1, url",
        &aggregates(),
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
        &aggregates(),
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
    let split = split(
        "SELECT sum(n) FILTER (WHERE n > 10) AS big FROM collection.pageview",
        &aggregates(),
    )
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
    ] {
        let error = split(query, &aggregates()).expect_err(query);
        assert!(error.contains(reason), "{query}: {error}");
    }
}

#!/usr/bin/env python3
"""The six queries of ../shared/bench through Rakam's HTTP API, side by side
with the peers: funnel (q3), retention (q4) and segmentation (q1, q5) through
the analysis API, q2 and q6 as SQL through /query/execute.

Starts the release binary on a data directory under --work, loads the
generator's NDJSON through /event/bulk the first time (then restarts the server
so the data is in Parquet files, as it is after any flush), and runs each
query once ("first") and --runs more times (median). Answers are normalised to
the peers' row shape and written as `rakam-analysis-<N>.json`, so
../shared/bench/compare.py checks them against DuckDB and chdb:

    python3 bench/analysis_http.py --data /tmp/evbench/data/events_1000000
    python3 ../shared/bench/compare.py --events 1000000
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "shared", "bench"))
sys.path.insert(0, HERE)
import benchlib  # noqa: E402
import rakam_server  # noqa: E402
from rakam_server import start, stop  # noqa: E402

QUERIES = ",".join(["q1_count_by_collection_day", "q2_top_urls_30d_unique_users",
                    "q3_funnel_signup_cart_purchase_7d", "q4_weekly_retention_8w",
                    "q5_segment_mobile_pageviews_country_day", "q6_revenue_by_experiment_plan"])
# On the embedded store q2 and q6 are SQL through /query/execute (DataFusion's
# dialect); the others go through the analysis API.
EMBEDDED_SQL = {
    "q2_top_urls_30d_unique_users": """
SELECT url, count(DISTINCT _user) AS users FROM pageview
WHERE _time >= TIMESTAMP '2024-03-01T00:00:00Z' AND _time < TIMESTAMP '2024-03-31T00:00:00Z'
GROUP BY url ORDER BY users DESC, url LIMIT 10""",
    "q6_revenue_by_experiment_plan": """
SELECT exp_checkout_v2 AS variant, plan, count(*) AS purchases, round(sum(amount), 2) AS revenue
FROM purchase WHERE exp_checkout_v2 IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2""",
}
# With --postgres-url every query runs: q1, q2, q5 and q6 as SQL inside PostgreSQL
# (/query/execute), q3 and q4 through the analysis API.
PG_SQL = {
    "q1_count_by_collection_day": """
SELECT _collection, date_trunc('day', _time)::date AS day, count(*) AS events
FROM _all GROUP BY 1, 2 ORDER BY 2, 1""",
    "q2_top_urls_30d_unique_users": """
SELECT url, count(DISTINCT _user) AS users FROM pageview
WHERE _time >= '2024-03-01 00:00:00+00' AND _time < '2024-03-31 00:00:00+00'
GROUP BY url ORDER BY users DESC, url LIMIT 10""",
    "q5_segment_mobile_pageviews_country_day": """
SELECT date_trunc('day', _time)::date AS day, country, count(*) AS events FROM pageview
WHERE device = 'mobile' AND _time >= '2024-02-01 00:00:00+00' AND _time < '2024-03-01 00:00:00+00'
GROUP BY 1, 2 ORDER BY 1, 2""",
    "q6_revenue_by_experiment_plan": """
SELECT exp_checkout_v2 AS variant, plan, count(*) AS purchases, round(sum(amount)::numeric, 2) AS revenue
FROM purchase WHERE exp_checkout_v2 IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2""",
}
ALL_DATES = {"startDate": "2024-01-01", "endDate": "2024-03-31"}


def requests():
    """Each benchmark query as (path, body, rows(answer) -> peer-shaped rows)."""
    def q1(answer):
        rows = [[c, d, n] for c, d, n in answer["result"]]
        return sorted(rows, key=lambda r: (r[1], r[0]))

    def q3(answer):
        return [[n for _, n in answer["result"]]]

    def q4(answer):
        # Peers: week_n 0 = active in the cohort's week (everyone: the signup
        # itself); Rakam: lead null = cohort size, lead k = week k + 1.
        rows = [[date, 0 if lead is None else lead + 1, n] for date, lead, n in answer["result"]]
        return sorted(rows, key=lambda r: (r[0], r[1]))

    def q5(answer):
        return sorted([[d, c, n] for d, c, n in answer["result"]], key=lambda r: (r[0], r[1]))

    return {
        "q1_count_by_collection_day": ("/event-explorer/analyze", dict(
            collections=["add_to_cart", "login", "pageview", "purchase", "search", "signup"],
            measure={"aggregation": "COUNT"},
            grouping={"type": "COLUMN", "value": "_collection"},
            segment={"type": "REFERENCE", "value": "Day"}, **ALL_DATES), q1),
        "q3_funnel_signup_cart_purchase_7d": ("/funnel/analyze", dict(
            steps=[{"collection": "signup"}, {"collection": "add_to_cart"}, {"collection": "purchase"}],
            window={"value": 7, "type": "DAY"}, **ALL_DATES), q3),
        "q4_weekly_retention_8w": ("/retention/analyze", dict(
            first_action={"collection": "signup"}, date_unit="WEEK", kind="first_time", period=8,
            startDate="2024-01-01", endDate="2024-02-25"), q4),
        "q5_segment_mobile_pageviews_country_day": ("/event-explorer/analyze", dict(
            collections=["pageview"], measure={"aggregation": "COUNT"},
            grouping={"type": "REFERENCE", "value": "Day"},
            segment={"type": "COLUMN", "value": "country"}, segmentLimit=1000,
            filterExpression="device = 'mobile'", startDate="2024-02-01", endDate="2024-02-29"), q5),
    }


def load(port, data, write_key, batch_events=20000):
    chunks = rakam_server.ndjson_chunks(open(data + ".ndjson", "rb").read(), batch_events)
    headers = {"content-type": "application/x-ndjson", "write_key": write_key}
    rakam_server.send_all(port, "/event/bulk", chunks, headers)


def post(port, path, body, headers):
    return rakam_server.post(rakam_server.connect(port), path, body, headers)


def arguments(ap):
    ap.add_argument("--binary", default=os.environ.get("RAKAM_BIN", "/var/cache/rakam-target/release/rakam"))
    ap.add_argument("--postgres-url", default="", help="run on the PostgreSQL backend in this database")


def main():
    a = benchlib.parse_args("rakam", arguments)
    if not a.only and not a.postgres_url:
        a.queries = QUERIES.split(",")
    store = ["--store", "postgres", "--postgres-url", a.postgres_url] if a.postgres_url else []
    work = os.path.join(a.work, f"rakam-{'pg-' if a.postgres_url else ''}{a.events}")
    keys_file = os.path.join(work, "keys.json")
    load_info = {}
    if not os.path.exists(keys_file):
        os.makedirs(work, exist_ok=True)
        server, port = start(a.binary, os.path.join(work, "data"), store)
        try:
            keys = json.loads(post(port, "/project/create", json.dumps({"name": "bench"}), {}))
            with benchlib.Step(load_info, "load_http_ndjson"):
                load(port, a.data, keys["write_key"])
        finally:
            stop(server)
        json.dump(keys, open(keys_file, "w"))
        print(f"loaded {a.events:,} events in {load_info['load_http_ndjson_s']} s", flush=True)
    keys = json.load(open(keys_file))
    server, port = start(a.binary, os.path.join(work, "data"), store)
    try:
        catalog = requests()
        headers = {"content-type": "application/json", "read_key": keys["read_key"]}

        def run_one(name):
            sql = PG_SQL.get(name) if a.postgres_url else EMBEDDED_SQL.get(name)
            if sql:
                body = json.dumps({"query": sql})
                return json.loads(post(port, "/query/execute", body, headers))["result"]
            path, body, shape = catalog[name]
            return shape(json.loads(post(port, path, json.dumps(body), headers)))

        queries = benchlib.run_queries(a, run_one)
        queries["_phase"]["note"] = "other_cores includes the Rakam server, which runs the queries"
    finally:
        stop(server)
    version = subprocess.run([a.binary, "--version"], capture_output=True, text=True).stdout.strip()
    variant = "postgres-http" if a.postgres_url else "analysis-http"
    benchlib.save(a, "rakam", variant, version, load_info, queries)


if __name__ == "__main__":
    main()

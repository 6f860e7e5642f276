#!/usr/bin/env python3
"""Ingest throughput with 0, 10 and 50 continuous queries on the ingested
collection (issue 16). For each count: a fresh server, the queries created
on an empty collection, then N events POSTed as NDJSON bulk requests on two
connections. Reports events/s while ingesting, the server's CPU seconds
until every query has stored the partials of the last event, and how long
that took after the last acknowledgement, and the time of a read of one
query right after the last acknowledgement (which must count every event);
checks that query against the same SELECT from scratch.

    python3 bench/continuous_ingest.py --events 1000000
    python3 bench/continuous_ingest.py --events 1000000 --store postgres --url postgres://postgres@127.0.0.1/bench_cq
"""
import argparse
import json
import os
import random
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import rakam_server  # noqa: E402

# The shapes a dashboard keeps current: per page, per country, per minute,
# with each supported aggregate.
SHAPES = [
    "SELECT url, count(*) AS hits FROM pageview GROUP BY url",
    "SELECT country, count(*) AS hits, sum(n) AS total FROM pageview GROUP BY country",
    "SELECT date_trunc('minute', _time) AS minute, count(*) AS hits FROM pageview GROUP BY 1",
    "SELECT url, country, avg(n) AS mean, max(n) AS top FROM pageview GROUP BY url, country",
    "SELECT country, approx_distinct(_user) AS people FROM pageview GROUP BY country",
    "SELECT count(*) AS events, min(n) AS low FROM pageview WHERE n > 50",
    "SELECT date_trunc('hour', _time) AS hour, url, count(*) AS hits FROM pageview GROUP BY 1, 2",
    "SELECT country, sum(n) FILTER (WHERE n > 10) AS big FROM pageview GROUP BY country",
    "SELECT url, min(_time) AS first_seen, max(_time) AS last_seen FROM pageview GROUP BY url",
    "SELECT count(*) AS events, approx_distinct(_user) AS people FROM pageview",
]


def events(rng, count):
    lines = []
    for i in range(count):
        lines.append(json.dumps({
            "url": f"/page/{rng.randrange(200)}",
            "country": f"c{rng.randrange(50)}",
            "n": rng.randrange(100),
            "_user": f"u{rng.randrange(100_000)}",
            "_time": 1_700_000_000_000 + i * 100,
        }))
    return ("\n".join(lines) + "\n").encode()






def run(a, raw_bodies, total, queries):
    work = tempfile.mkdtemp(prefix="rakam-cq-")
    extra = ["--store", "postgres", "--postgres-url", a.url] if a.store == "postgres" else []
    server, port = rakam_server.start(a.binary, os.path.join(work, "data"), extra)
    try:
        keys = json.loads(rakam_server.post(rakam_server.connect(port), "/project/create",
                                            json.dumps({"name": f"cq{random.randrange(10**9)}"}), {}))
        # One event makes the collection and its columns.
        rakam_server.post(rakam_server.connect(port), "/event/bulk?collection=pageview",
                          raw_bodies[0].split(b"\n", 1)[0] + b"\n",
                          {"content-type": "application/x-ndjson", "write_key": keys["write_key"]})
        for i in range(queries):
            rakam_server.call(port, keys, "/continuous-query/create",
                 {"continuous_query": {"table_name": f"q{i}", "name": f"q{i}",
                                       "query": SHAPES[i % len(SHAPES)]}, "replay": True})
        cpu_before = rakam_server.cpu_seconds(server.pid)
        started = time.perf_counter()
        rakam_server.send_all(port, "/event/bulk?collection=pageview", raw_bodies,
                              {"content-type": "application/x-ndjson", "write_key": keys["write_key"]})
        acked = time.perf_counter()
        acked_ms = int(time.time() * 1000)
        # Current at the acknowledgement: a read right after it counts every
        # event (the partials stored so far plus those of newer events).
        read_ms = None
        checked = queries and SHAPES[0].startswith("SELECT url, count(*) AS hits")
        if checked:
            before = time.perf_counter()
            counted = rakam_server.call(port, keys, "/query/execute",
                           {"query": "SELECT sum(hits) FROM continuous.q0"}, key="read_key")["result"][0][0]
            read_ms = (time.perf_counter() - before) * 1000
            assert int(counted) == total + 1, f"read {counted} events right after the last ack, sent {total + 1}"
        # Caught up: every query's stored partials cover the last event.
        while queries and min(rakam_server.call(port, keys, "/continuous-query/get", {"table_name": f"q{i}"},
                                   key="read_key").get("covered_through") or 0
                              for i in range(queries)) < acked_ms:
            time.sleep(0.1)
        caught_up = time.perf_counter()
        cpu = rakam_server.cpu_seconds(server.pid) - cpu_before
        if checked:
            got = rakam_server.call(port, keys, "/query/execute",
                       {"query": "SELECT url, hits FROM continuous.q0 ORDER BY url", "limit": 100000},
                       key="read_key")["result"]
            want = rakam_server.call(port, keys, "/query/execute",
                        {"query": "SELECT url, count(*) FROM pageview GROUP BY url ORDER BY url",
                         "limit": 100000}, key="read_key")["result"]
            assert [[r[0], float(r[1])] for r in got] == [[r[0], float(r[1])] for r in want], "q0 disagrees"
        return total / (acked - started), acked - started, caught_up - acked, cpu, read_ms
    finally:
        rakam_server.stop(server)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.environ.get("RAKAM_BIN", "/var/cache/rakam-target/release/rakam"))
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--queries", default="0,10,50")
    ap.add_argument("--shapes", help="comma-separated indexes into SHAPES to cycle through (default: all)")
    ap.add_argument("--store", default="embedded", choices=["embedded", "postgres"])
    ap.add_argument("--url", help="PostgreSQL URL (--store postgres)")
    a = ap.parse_args()
    global SHAPES
    if a.shapes:
        SHAPES = [SHAPES[int(i)] for i in a.shapes.split(",")]
    raw = events(random.Random(42), a.events)
    bodies = rakam_server.ndjson_chunks(raw, a.batch)
    print(f"store: {a.store}; {a.events:,} events in requests of {a.batch:,}")
    print("| continuous queries | ingest (events/s) | ingest (s) | stored partials caught up after the last ack (s) | server CPU (s) | read of q0 right after the last ack (ms) |")
    print("|---:|---:|---:|---:|---:|---:|")
    baseline = None
    for count in [int(q) for q in a.queries.split(",")]:
        rate, seconds, lag, cpu, read_ms = run(a, bodies, a.events, count)
        baseline = baseline or rate
        read = "–" if read_ms is None else f"{read_ms:.0f}"
        print(f"| {count} | {rate:,.0f} ({rate / baseline:.0%}) | {seconds:.1f} | {lag:.1f} | {cpu:.1f} | {read} |",
              flush=True)


if __name__ == "__main__":
    main()

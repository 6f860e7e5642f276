#!/usr/bin/env python3
"""Refresh time of a materialized view (issue 16): the same aggregate as a
full view and as an incremental one over N events; then, --rounds times,
1 % more events are ingested and both views are refreshed through
/materialized-view/refresh. Prints the first builds and the median
refresh of each, and checks that both views agree with the query run
from scratch.

    python3 bench/view_refresh.py --events 1000000
    python3 bench/view_refresh.py --events 1000000 --store postgres --url postgres://postgres@127.0.0.1/bench
"""
import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import rakam_server  # noqa: E402

QUERY = ("SELECT url, country, count(*) AS hits, sum(n) AS total "
         "FROM pageview GROUP BY url, country")


def events(rng, count, start):
    lines = []
    for i in range(count):
        lines.append(json.dumps({
            "url": f"/page/{rng.randrange(1000)}",
            "country": f"c{rng.randrange(50)}",
            "n": rng.randrange(100),
            "_time": 1_700_000_000_000 + (start + i) * 1000,
        }))
    return ("\n".join(lines) + "\n").encode()


def ingest(port, keys, rng, count, start, chunk=50_000):
    headers = {"content-type": "application/x-ndjson", "write_key": keys["write_key"]}
    conn = rakam_server.connect(port)
    sent = 0
    while sent < count:
        n = min(chunk, count - sent)
        rakam_server.post(conn, "/event/bulk?collection=pageview", events(rng, n, start + sent), headers)
        sent += n




def timed_refresh(port, keys, name):
    started = time.perf_counter()
    view = rakam_server.call(port, keys, "/materialized-view/refresh", {"table_name": name})
    return (time.perf_counter() - started) * 1000, view


def rows(port, keys, sql):
    result = rakam_server.call(port, keys, "/query/execute", {"query": sql, "limit": 1_000_000}, key="read_key")
    return sorted(tuple(float(v) if isinstance(v, (int, float)) else v for v in row) for row in result["result"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.environ.get("RAKAM_BIN", "/var/cache/rakam-target/release/rakam"))
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--store", default="embedded", choices=["embedded", "postgres"])
    ap.add_argument("--url", help="PostgreSQL URL (--store postgres)")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="rakam-views-")
    extra = ["--store", "postgres", "--postgres-url", a.url] if a.store == "postgres" else []
    server, port = rakam_server.start(a.binary, os.path.join(work, "data"), extra)
    rng = random.Random(42)
    try:
        keys = json.loads(rakam_server.post(rakam_server.connect(port), "/project/create",
                                            json.dumps({"name": f"views{rng.randrange(10**9)}"}), {}))
        started = time.perf_counter()
        ingest(port, keys, rng, a.events, 0)
        print(f"ingested {a.events:,} events in {time.perf_counter() - started:.1f} s")
        first = {}
        for name, incremental in (("whole", False), ("increments", True)):
            # The first build starts with the creation; it is done when the
            # view shows its first refresh.
            started = time.perf_counter()
            rakam_server.call(port, keys, "/materialized-view/create",
                 {"table_name": name, "name": name, "query": QUERY, "incremental": incremental})
            while rakam_server.call(port, keys, "/materialized-view/get", {"table_name": name}, key="read_key")["refreshes"] < 1:
                time.sleep(0.005)
            first[name] = (time.perf_counter() - started) * 1000
        times = {"whole": [], "increments": []}
        total = a.events
        step = max(1, a.events // 100)
        for _ in range(a.rounds):
            ingest(port, keys, rng, step, total)
            total += step
            for name in times:
                elapsed, _ = timed_refresh(port, keys, name)
                times[name].append(elapsed)
        scratch = rows(port, keys, "SELECT url, country, count(*), sum(n) FROM pageview GROUP BY url, country")
        for name in times:
            summed = rows(port, keys, f"SELECT url, country, sum(hits), sum(total) FROM materialized.{name} "
                                      "GROUP BY url, country")
            assert summed == scratch, f"{name} disagrees with the query from scratch"
        print(f"store: {a.store}; view: {QUERY}")
        print(f"| view | first build (ms) | refresh after +1 % (median of {a.rounds}, ms) | all refreshes (ms) |")
        print("|---|---:|---:|---|")
        for name in ("whole", "increments"):
            print(f"| {'full' if name == 'whole' else 'incremental'} | {first[name]:.0f} | "
                  f"{statistics.median(times[name]):.0f} | {', '.join(f'{t:.0f}' for t in times[name])} |")
        print(f"both views equal the query from scratch over {total:,} events")
    finally:
        rakam_server.stop(server)


if __name__ == "__main__":
    main()

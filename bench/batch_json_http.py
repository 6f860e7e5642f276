#!/usr/bin/env python3
"""JSON batch ingest over HTTP (issue 13): N synthetic pageviews as Rakam
batch bodies (`{"api": {"api_key": ...}, "events": [...]}`, the key in the
body as Rakam's clients send it) to `/event/bulk` (JSON, all or nothing)
and to `/event/batch`, on two connections, against a fresh release server
each. Reports events/s and the server's CPU seconds per million events, and
checks every event was stored.

    python3 bench/batch_json_http.py --events 1000000
    python3 bench/batch_json_http.py --binary /tmp/rakam-before   # another build
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




def bodies(rng, total, per_request, key):
    out = []
    for start in range(0, total, per_request):
        events = [{"collection": "pageview", "properties": {
            "url": f"/page/{rng.randrange(200)}", "country": f"c{rng.randrange(50)}",
            "n": rng.randrange(100), "_user": f"u{rng.randrange(100_000)}",
            "_time": 1_700_000_000_000 + (start + i) * 100}}
            for i in range(min(per_request, total - start))]
        out.append(json.dumps({"api": {"api_key": key}, "events": events}).encode())
    return out


def run(binary, path, total, per_request):
    work = tempfile.mkdtemp(prefix="rakam-batch-")
    server, port = rakam_server.start(binary, os.path.join(work, "data"))
    try:
        keys = json.loads(rakam_server.post(rakam_server.connect(port), "/project/create",
                                            json.dumps({"name": "batch"}), {}))
        headers = {"content-type": "application/json"}
        # One event first: the collection and its columns exist.
        rakam_server.post(rakam_server.connect(port), path,
                          bodies(random.Random(1), 1, 1, keys["write_key"])[0], headers)
        payload = bodies(random.Random(42), total, per_request, keys["write_key"])
        cpu = rakam_server.cpu_seconds(server.pid)
        started = time.perf_counter()
        rakam_server.send_all(port, path, payload, headers)
        elapsed = time.perf_counter() - started
        cpu = rakam_server.cpu_seconds(server.pid) - cpu
        stored = json.loads(rakam_server.post(
            rakam_server.connect(port), "/query/execute",
            json.dumps({"query": "SELECT count(*) FROM pageview"}),
            {"content-type": "application/json", "read_key": keys["read_key"]}))["result"][0][0]
        assert int(stored) == total + 1, f"stored {stored}, sent {total + 1}"
        return total / elapsed, cpu / (total / 1e6)
    finally:
        rakam_server.stop(server)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.environ.get("RAKAM_BIN", "/var/cache/rakam-target/release/rakam"))
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--per-request", type=int, default=10_000)
    a = ap.parse_args()
    print(f"{a.binary}: {a.events:,} events, {a.per_request:,} per request, key in the body")
    print("| endpoint | events/s | server CPU-s per million |")
    print("|---|---:|---:|")
    for path in ("/event/bulk", "/event/batch"):
        rate, cpu = run(a.binary, path, a.events, a.per_request)
        print(f"| {path} | {rate:,.0f} | {cpu:.2f} |", flush=True)


if __name__ == "__main__":
    main()

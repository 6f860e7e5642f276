#!/usr/bin/env python3
"""Delivery latency of the live event stream (issue 16): one subscriber on
/stream/subscribe, events sent one request at a time to /event/collect (or
in batches with --batch), each carrying its send time. For every event the
subscriber receives, latency = arrival time - the time its request was
acknowledged, and also - the time it was sent. Prints p50/p99/max.

    python3 bench/stream_latency.py --events 2000
    python3 bench/stream_latency.py --events 200000 --batch 1000
"""
import argparse
import http.client
import json
import os
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import rakam_server  # noqa: E402


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", default=os.environ.get("RAKAM_BIN", "/var/cache/rakam-target/release/rakam"))
    ap.add_argument("--events", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=1, help="events per request (1: /event/collect)")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="rakam-stream-")
    server, port = rakam_server.start(a.binary, os.path.join(work, "data"))
    try:
        keys = json.loads(rakam_server.post(rakam_server.connect(port), "/project/create",
                                            json.dumps({"name": "latency"}), {}))
        acked = {}
        arrivals = {}
        done = threading.Event()

        stream = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        query = urllib.parse.urlencode({"data": json.dumps({"collections": [{"name": "tick"}], "columns": ["seq"]})})
        stream.request("GET", "/stream/subscribe?" + query,
                       headers={"accept": "text/event-stream", "read_key": keys["read_key"]})
        response = stream.getresponse()
        assert response.status == 200, response.status

        def read():
            while len(arrivals) < a.events:
                line = response.readline()
                if not line:
                    break
                if line.startswith(b"data:"):
                    now = time.perf_counter()
                    for event in json.loads(line[5:]):
                        arrivals[event["properties"]["seq"]] = now
            done.set()

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        conn = rakam_server.connect(port)
        sent = {}
        started = time.perf_counter()
        for first in range(0, a.events, a.batch):
            seqs = range(first, min(first + a.batch, a.events))
            t = time.perf_counter()
            if a.batch == 1:
                body = {"collection": "tick", "api": {"api_key": keys["write_key"]}, "properties": {"seq": first}}
                rakam_server.post(conn, "/event/collect", json.dumps(body), {"content-type": "application/json"})
            else:
                body = {"api": {"api_key": keys["write_key"]},
                        "events": [{"collection": "tick", "properties": {"seq": s}} for s in seqs]}
                rakam_server.post(conn, "/event/batch", json.dumps(body), {"content-type": "application/json"})
            ack = time.perf_counter()
            for s in seqs:
                sent[s], acked[s] = t, ack
        elapsed = time.perf_counter() - started
        done.wait(timeout=60)
    finally:
        rakam_server.stop(server)
    missing = a.events - len(arrivals)
    after_ack = [(arrivals[s] - acked[s]) * 1000 for s in arrivals]
    after_send = [(arrivals[s] - sent[s]) * 1000 for s in arrivals]
    print(f"{a.events:,} events in requests of {a.batch}: {a.events / elapsed:,.0f} events/s sent, "
          f"{len(arrivals):,} received, {missing} missing")
    for name, values in (("after the ack", after_ack), ("after the send", after_send)):
        print(f"  latency {name}: p50 {percentile(values, 0.5):.2f} ms, "
              f"p99 {percentile(values, 0.99):.2f} ms, max {max(values):.2f} ms")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Bulk NDJSON ingest over HTTP into a real `rakam serve`, side by side with the
peer loaders of ../shared/bench (same file, same machine).

Starts the release binary on a free port with a fresh data directory, creates a
project, POSTs the generator's NDJSON in chunks to /event/bulk over keep-alive
connections, and reports events/s, server CPU, RSS (idle and peak), on-disk
bytes per event, and ack-to-visible latency. Writes a peer-shaped result file
(`rakam-http-<N>.json`) that ../shared/bench/compare.py can read.

    python3 bench/ingest_http.py --data /tmp/evbench/data/events_1000000
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rakam_server  # noqa: E402


def proc_cpu_s(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_mem_kb(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def postgres_bytes(url):
    """Tables, partitions and indexes of every Rakam project in the database."""
    import psycopg2
    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute("""SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c
                       JOIN pg_namespace n ON n.oid = c.relnamespace
                       WHERE n.nspname LIKE 'rakam_%_data' AND c.relkind = 'r'""")
        return int(cur.fetchone()[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/evbench/data/events_1000000")
    ap.add_argument("--binary", default=os.environ.get("RAKAM_BIN", "/var/cache/rakam-target/release/rakam"))
    ap.add_argument("--batch-events", type=int, default=20000, help="events per HTTP request")
    ap.add_argument("--connections", type=int, default=2)
    ap.add_argument("--durability", default="fsync", choices=["fsync", "os"])
    ap.add_argument("--results", default="/tmp/evbench/results")
    ap.add_argument("--keep", action="store_true", help="keep the data directory")
    ap.add_argument("--postgres-url", default="",
                    help="ingest into the PostgreSQL backend in this (empty) database")
    a = ap.parse_args()

    meta = json.load(open(a.data + ".meta.json"))
    events = meta["events"]
    chunks = rakam_server.ndjson_chunks(open(a.data + ".ndjson", "rb").read(), a.batch_events)

    work = tempfile.mkdtemp(prefix="rakam-bench-")
    store = (["--store", "postgres", "--postgres-url", a.postgres_url] if a.postgres_url
             else ["--durability", a.durability])
    server, port = rakam_server.start(a.binary, work + "/data", store, wait_s=60)
    try:
        time.sleep(1.0)
        idle_rss_mb = proc_mem_kb(server.pid, "VmRSS") / 1024
        c = rakam_server.connect(port, timeout=600)
        keys = json.loads(rakam_server.post(c, "/project/create", json.dumps({"name": "bench"}), {}))
        headers = {"content-type": "application/x-ndjson", "write_key": keys["write_key"]}

        cpu_before = proc_cpu_s(server.pid)
        started = time.perf_counter()
        rakam_server.send_all(port, "/event/bulk", chunks, headers, a.connections)
        elapsed = time.perf_counter() - started
        cpu = proc_cpu_s(server.pid) - cpu_before
        # An idle keep-alive connection is closed after
        # server.header_read_timeout_secs: the load outlasts it.
        c = rakam_server.connect(port, timeout=600)
        read = {"content-type": "application/json", "read_key": keys["read_key"]}
        total = json.loads(rakam_server.post(c, "/query/execute", json.dumps({"query": "SELECT count(*) FROM _all"}), read))
        stored = total["result"][0][0]
        assert stored == events, (stored, events)

        # ack-to-visible: one event per request, polled until a query sees it
        latencies = []
        write = {"content-type": "application/json"}
        for n in range(20):
            body = json.dumps({"collection": "latency", "api": {"api_key": keys["write_key"]}, "properties": {"n": n}})
            rakam_server.post(c, "/event/collect", body, write)
            acked = time.perf_counter()
            while True:
                q = json.dumps({"query": f"SELECT count(*) FROM latency WHERE n = {n}"})
                if json.loads(rakam_server.post(c, "/query/execute", q, read))["result"][0][0] == 1:
                    break
            latencies.append((time.perf_counter() - acked) * 1000)
        peak_rss_mb = proc_mem_kb(server.pid, "VmHWM") / 1024
        # Requests the typed decoder left to the general path, by reason.
        conn = rakam_server.connect(port, timeout=60)
        conn.request("GET", "/metrics")
        metrics = conn.getresponse().read().decode()
        declined = {}
        for line in metrics.splitlines():
            if line.startswith("rakam_ingest_typed_declined_total{"):
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                declined[reason] = int(float(line.rsplit(" ", 1)[1]))
        # flush everything to Parquet (graceful stop) to measure bytes on disk
        server.terminate()
        server.wait(timeout=300)
        disk = postgres_bytes(a.postgres_url) if a.postgres_url else dir_bytes(work + "/data/tables")
    finally:
        if server.poll() is None:
            server.kill()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)

    load = {
        "events_per_s": round(events / elapsed),
        "wall_s": round(elapsed, 2),
        "server_cpu_s": round(cpu, 2),
        "events_per_cpu_s": round(events / max(cpu, 1e-9)),
        "batch_events": a.batch_events,
        "connections": a.connections,
        "durability": a.durability,
        "storage_bytes": disk,
        "bytes_per_event": round(disk / events, 1),
        "idle_rss_mb": round(idle_rss_mb, 1),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "ack_to_visible_ms_p50": round(statistics.median(latencies), 2),
        "ack_to_visible_ms_max": round(max(latencies), 2),
        "requests": len(chunks),
        "typed_declined": declined,
    }
    variant = "pg-ingest-http" if a.postgres_url else "http"
    result = {"engine": "rakam", "variant": variant, "version": "0.1.0", "events": events,
              "load": load, "queries": {}}
    os.makedirs(a.results, exist_ok=True)
    with open(os.path.join(a.results, f"rakam-{variant}-{events}.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Backpressure under overload: many clients post NDJSON bulks to a real
`rakam serve` as fast as they can (more than the machine can store), each
retrying a 503 after its `Retry-After`. Reports the offered and accepted
event rates, the share of 503 answers, the server's peak RSS, and checks
that exactly the acknowledged events are stored.

    python3 bench/overload_http.py --data /tmp/evbench/data/events_1000000 --clients 16 --seconds 30
"""
import argparse
import http.client
import json
import os
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rakam_server  # noqa: E402


def proc_mem_kb(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/evbench/data/events_1000000")
    ap.add_argument("--binary", default=os.environ.get("RAKAM_BIN", "/var/cache/rakam-target/release/rakam"))
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--batch-events", type=int, default=20000)
    ap.add_argument("--inflight-mb", type=int, default=0,
                    help="limits.max_inflight_bytes in MiB (default: the server's)")
    a = ap.parse_args()

    chunks = rakam_server.ndjson_chunks(open(a.data + ".ndjson", "rb").read(), a.batch_events)
    work = tempfile.mkdtemp(prefix="rakam-overload-")
    env_args = []
    if a.inflight_mb:
        os.environ["RAKAM_LIMITS__MAX_INFLIGHT_BYTES"] = str(a.inflight_mb << 20)
        os.environ["RAKAM_LIMITS__MAX_BULK_BYTES"] = str(min(a.inflight_mb, 256) << 20)
    server, port = rakam_server.start(a.binary, work + "/data", env_args, wait_s=60)
    counts = {"offered": 0, "accepted": 0, "refused": 0, "requests": 0}
    lock = threading.Lock()
    try:
        c = rakam_server.connect(port, timeout=600)
        keys = json.loads(rakam_server.post(c, "/project/create", json.dumps({"name": "overload"}), {}))
        headers = {"content-type": "application/x-ndjson", "write_key": keys["write_key"]}
        deadline = time.perf_counter() + a.seconds
        peak = [0]

        def client(number):
            conn = rakam_server.connect(port, timeout=600)
            index = number
            while time.perf_counter() < deadline:
                body = chunks[index % len(chunks)]
                events = body.count(b"\n")
                try:
                    conn.request("POST", "/event/bulk", body=body, headers=headers)
                    response = conn.getresponse()
                    response.read()
                    status = response.status
                except (OSError, http.client.HTTPException):
                    conn = rakam_server.connect(port, timeout=600)
                    status = 0
                with lock:
                    counts["offered"] += events
                    counts["requests"] += 1
                    if status == 200:
                        counts["accepted"] += events
                    elif status == 503:
                        counts["refused"] += 1
                    else:
                        raise RuntimeError(f"unexpected status {status}")
                if status == 200:
                    index += a.clients
                else:
                    time.sleep(float(response.getheader("retry-after", "1")) if status == 503 else 1)

        def watch():
            while time.perf_counter() < deadline + 5:
                peak[0] = max(peak[0], proc_mem_kb(server.pid, "VmRSS"))
                time.sleep(0.05)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(a.clients)]
        watcher = threading.Thread(target=watch)
        started = time.perf_counter()
        watcher.start()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - started
        read = {"content-type": "application/json", "read_key": keys["read_key"]}
        c = rakam_server.connect(port, timeout=600)  # the first one idled out
        stored = json.loads(rakam_server.post(c, "/query/execute",
                                              json.dumps({"query": "SELECT count(*) FROM _all"}), read))["result"][0][0]
        watcher.join()
        high_water = proc_mem_kb(server.pid, "VmHWM")
    finally:
        if server.poll() is None:
            server.kill()
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "clients": a.clients,
        "seconds": round(elapsed, 1),
        "offered_events_per_s": round(counts["offered"] / elapsed),
        "accepted_events_per_s": round(counts["accepted"] / elapsed),
        "refused_share": round(counts["refused"] / max(counts["requests"], 1), 3),
        "peak_rss_mb": round(max(peak[0], high_water) / 1024, 1),
        "acknowledged": counts["accepted"],
        "stored": stored,
    }
    print(json.dumps(result, indent=1))
    if stored != counts["accepted"]:
        print(f"MISMATCH: {stored} stored, {counts['accepted']} acknowledged", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Single events: `/event/collect` from many keep-alive connections (wrk),
each request one event with its key in the body, fsync on, against a real
`rakam serve`. Prints wrk's summary (requests/s, latency percentiles) and
checks that every answered request's event is stored.

    apt-get install wrk
    python3 bench/collect_wrk.py --connections 64 --seconds 20
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rakam_server  # noqa: E402

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"collection":"click","api":{"api_key":"%s"},"properties":{"_user":"u1","page":"/home","n":1}}'
done = function(summary, latency, requests)
  io.write(string.format("SUMMARY %%d %%d %%d %%d\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=os.environ.get("RAKAM_BIN", "/var/cache/rakam-target/release/rakam"))
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=int, default=20)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rakam-collect-")
    server, port = rakam_server.start(a.binary, work + "/data", [], wait_s=60)
    try:
        c = rakam_server.connect(port)
        keys = json.loads(rakam_server.post(c, "/project/create", json.dumps({"name": "collect"}), {}))
        script = os.path.join(work, "collect.lua")
        open(script, "w").write(LUA % keys["write_key"])
        out = subprocess.run(["wrk", "-t", str(a.threads), "-c", str(a.connections), "-d", f"{a.seconds}s",
                              "--latency", "-s", script, f"http://127.0.0.1:{port}/event/collect"],
                             capture_output=True, text=True, check=True).stdout
        print(out)
        requests, errors, p50_us, p99_us = map(int, re.search(r"SUMMARY (\d+) (\d+) (\d+) (\d+)", out).groups())
        c = rakam_server.connect(port)
        read = {"content-type": "application/json", "read_key": keys["read_key"]}
        stored = json.loads(rakam_server.post(c, "/query/execute",
                                              json.dumps({"query": "SELECT count(*) FROM click"}), read))["result"][0][0]
        print(json.dumps({"requests": requests, "errors": errors, "requests_per_s": round(requests / a.seconds),
                          "p50_ms": p50_us / 1000, "p99_ms": p99_us / 1000, "stored": stored}, indent=1))
        # wrk counts requests it sent; the last ones may be cut by its stop.
        if stored < requests - errors - a.connections:
            print(f"MISMATCH: {stored} stored, {requests - errors} answered", file=sys.stderr)
            sys.exit(1)
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

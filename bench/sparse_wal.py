#!/usr/bin/env python3
"""Write amplification of sparse events (issue 17, item 5): a collection
with 300 columns, then one NDJSON request of about 1.5 MB whose events each
set one of them. Prints the request's size and how many bytes the WAL grew.

    python3 bench/sparse_wal.py [--binary target/release/rakam]
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rakam_server  # noqa: E402


def dir_bytes(path):
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, files in os.walk(path) for name in files)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--binary", default=os.environ.get("RAKAM_BIN", "/var/cache/rakam-target/release/rakam"))
    ap.add_argument("--columns", type=int, default=300)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="rakam-sparse-")
    server, port = rakam_server.start(a.binary, work + "/data", [], wait_s=60)
    try:
        c = rakam_server.connect(port)
        keys = json.loads(rakam_server.post(c, "/project/create", json.dumps({"name": "sparse"}), {}))
        fields = [{"name": f"c{i}", "type": "STRING"} for i in range(a.columns)]
        rakam_server.post(c, "/project/schema/add", json.dumps({"collection": "wide", "fields": fields}),
                          {"content-type": "application/json", "master_key": keys["master_key"]})
        lines, size, n = [], 0, 0
        while size < 1_500_000:
            line = json.dumps({f"c{n % a.columns}": f"value-{n}"}) + "\n"
            lines.append(line)
            size += len(line)
            n += 1
        body = "".join(lines).encode()
        before = dir_bytes(work + "/data/wal")
        rakam_server.post(c, "/event/bulk?collection=wide", body,
                          {"content-type": "application/x-ndjson", "write_key": keys["write_key"]})
        grown = dir_bytes(work + "/data/wal") - before
        print(json.dumps({"events": n, "request_bytes": len(body), "wal_bytes": grown,
                          "wal_per_request_byte": round(grown / len(body), 1)}, indent=1))
    finally:
        server.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

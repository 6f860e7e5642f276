"""The server's memory while it exports a large result (issue 12, item 4):
loads N events, then exports them all as CSV, JSON and NDJSON through
/query/export, sampling the server's RSS while the file streams.

    cargo build --release
    python3 bench/export_http.py [--binary target/release/rakam] [--rows 10000000]
    python3 bench/export_http.py --postgres-url postgres://postgres@127.0.0.1/rakam_export
"""
import argparse
import json
import os
import tempfile
import threading
import time

import rakam_server

BATCH = 200_000


def load(port, write_key, rows):
    conn = rakam_server.connect(port)
    headers = {"content-type": "application/x-ndjson", "write_key": write_key}
    sent = 0
    while sent < rows:
        count = min(BATCH, rows - sent)
        body = "".join(
            '{"n":%d,"s":"user-%d","v":%d.5}\n' % (i, i % 1000, i % 97)
            for i in range(sent, sent + count))
        rakam_server.post(conn, "/event/bulk?collection=e", body.encode(), headers)
        sent += count


def export(port, pid, read_key, rows, export_type):
    samples = [rakam_server.rss_bytes(pid)]
    done = threading.Event()

    def sample():
        while not done.is_set():
            samples.append(rakam_server.rss_bytes(pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    conn = rakam_server.connect(port)
    body = json.dumps({"query": "SELECT * FROM e", "limit": rows, "export_type": export_type})
    started = time.perf_counter()
    conn.request("POST", "/query/export", body=body,
                 headers={"read_key": read_key, "content-type": "application/json"})
    response = conn.getresponse()
    size = 0
    while True:
        chunk = response.read(1 << 20)
        if not chunk:
            break
        size += len(chunk)
    elapsed = time.perf_counter() - started
    done.set()
    sampler.join()
    print(f"export {export_type} of {rows} rows: status {response.status}, {size / 1e6:.0f} MB in "
          f"{elapsed:.1f} s; server RSS {samples[0] >> 20} MiB before, peak {max(samples) >> 20} MiB")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "rakam"))
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--postgres-url", default="",
                        help="export from the PostgreSQL backend in this (empty) database")
    args = parser.parse_args()
    os.environ["RAKAM_QUERY__MAX_LIMIT"] = str(max(args.rows, 1_000_000))
    store = ["--store", "postgres", "--postgres-url", args.postgres_url] if args.postgres_url else []
    with tempfile.TemporaryDirectory() as data_dir:
        server, port = rakam_server.start(args.binary, data_dir, store)
        try:
            conn = rakam_server.connect(port)
            keys = json.loads(rakam_server.post(conn, "/project/create", json.dumps({"name": "bench"}),
                                                {"content-type": "application/json"}))
            load(port, keys["write_key"], args.rows)
            # The in-memory tail flushes to Parquet within
            # storage.flush_interval_secs (10): measure the export, not the tail.
            time.sleep(15)
            for export_type in ["CSV", "JSON", "NDJSON"]:
                export(port, server.pid, keys["read_key"], args.rows, export_type)
        finally:
            rakam_server.stop(server)


if __name__ == "__main__":
    main()

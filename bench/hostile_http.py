"""What hostile requests cost a running server (issue 11), on the release
binary: a keyless gzip bomb, /health while large bulk requests decode, and
statements deeper than the guard allows.

    cargo build --release
    python3 bench/hostile_http.py [--binary target/release/rakam] [--bulk-mb 100]

Prints one line per measurement; docs/benchmarks.md records a run.
"""
import argparse
import gzip
import io
import json
import os
import socket
import statistics
import tempfile
import threading
import time

import rakam_server

ITEM = b'{"collection":"p","properties":{"a":1,"b":"xxxxxxxxxxxxxxxx","c":[1,2,3]}},'


def gzip_repeated(prefix, target, suffix):
    out = io.BytesIO()
    block = ITEM * ((1 << 20) // len(ITEM))
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6) as gz:
        gz.write(prefix)
        written = len(prefix)
        while written < target:
            gz.write(block)
            written += len(block)
        gz.write(suffix)
    return out.getvalue()


def raw_post(port, path, headers, body):
    """Sends while reading, as the server may answer before the body is in;
    returns (status, seconds to the answer)."""
    started = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port))
    head = f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sock.sendall(head.encode())

    def send():
        try:
            view = memoryview(body)
            for i in range(0, len(body), 1 << 16):
                sock.sendall(view[i:i + (1 << 16)])
        except OSError:
            pass

    sender = threading.Thread(target=send)
    sender.start()
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    elapsed = time.perf_counter() - started
    sock.close()
    sender.join()
    status = int(answer.split(b" ")[1]) if answer.startswith(b"HTTP/") else 0
    return status, elapsed


def create_project(port):
    conn = rakam_server.connect(port)
    keys = json.loads(rakam_server.post(conn, "/project/create", json.dumps({"name": "bench"}),
                                        {"content-type": "application/json"}))
    return keys


def bomb(port, pid):
    body = gzip_repeated(b'{"events":[', 250 << 20, b"1]}")
    before = rakam_server.rss_bytes(pid)
    results = [None, None]

    def run(i):
        results[i] = raw_post(port, "/event/bulk",
                              {"content-type": "application/json", "content-encoding": "gzip"}, body)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    after = rakam_server.rss_bytes(pid)
    print(f"keyless gzip bomb ({len(body)} B compressed, 250 MB inflated) x2 in parallel: "
          f"statuses {[r[0] for r in results]}, answered in "
          f"{max(r[1] for r in results) * 1000:.1f} ms, RSS {before >> 20} -> {after >> 20} MiB")


def health_during_bulk(port, keys, megabytes):
    prefix = ('{"api":{"api_key":"%s"},"events":[' % keys["write_key"]).encode()
    body = gzip_repeated(prefix, megabytes << 20, b'{"collection":"p","properties":{}}]}')
    done = []

    def run():
        done.append(raw_post(port, "/event/bulk",
                             {"content-type": "application/json", "content-encoding": "gzip"}, body))

    threads = [threading.Thread(target=run) for _ in range(2)]
    started = time.perf_counter()
    [t.start() for t in threads]
    latencies = []
    conn = rakam_server.connect(port)
    while any(t.is_alive() for t in threads):
        t0 = time.perf_counter()
        conn.request("GET", "/health")
        conn.getresponse().read()
        latencies.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.02)
    [t.join() for t in threads]
    total = time.perf_counter() - started
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"/health during two {megabytes} MB gzip bulk requests ({total:.1f} s, statuses "
          f"{[d[0] for d in done]}): {len(latencies)} probes, median "
          f"{statistics.median(latencies):.2f} ms, p99 {p99:.2f} ms, max {latencies[-1]:.2f} ms")


def deep_statements(port, keys):
    conn = rakam_server.connect(port)
    for name, sql in [
        ("1,000-term sum", "SELECT " + "+".join(["1"] * 1000)),
        ("499,000-term sum (1 MB)", "SELECT " + "+".join(["1"] * 499_000)),
        ("1,000 UNION ALL", " UNION ALL ".join(["SELECT 1"] * 1000)),
        ("450-term sum (accepted)", "SELECT " + "+".join(["1"] * 450)),
    ]:
        body = json.dumps({"query": sql})
        t0 = time.perf_counter()
        conn.request("POST", "/query/execute", body=body,
                     headers={"read_key": keys["read_key"], "content-type": "application/json"})
        response = conn.getresponse()
        response.read()
        print(f"{name}: {response.status} in {(time.perf_counter() - t0) * 1000:.1f} ms")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(
        os.environ.get("CARGO_TARGET_DIR", "target"), "release", "rakam"))
    parser.add_argument("--bulk-mb", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        server, port = rakam_server.start(args.binary, data_dir)
        try:
            keys = create_project(port)
            bomb(port, server.pid)
            health_during_bulk(port, keys, args.bulk_mb)
            deep_statements(port, keys)
        finally:
            rakam_server.stop(server)


if __name__ == "__main__":
    main()

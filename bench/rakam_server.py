"""What the Rakam benchmark scripts share: start a `rakam serve` on a free
port and wait for it, post to it, split an NDJSON file into requests, and
send those requests on several keep-alive connections."""
import http.client
import signal
import socket
import subprocess
import threading
import time
import os


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(conn, path, body, headers):
    conn.request("POST", path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {data[:500]!r}")
    return data


def connect(port, timeout=3600):
    return http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)


def start(binary, data_dir, extra_args=(), wait_s=120):
    """Starts the server and returns (process, port) once /health answers."""
    port = free_port()
    # The data directory is the embedded store's; another backend takes none.
    store = [] if "--store" in extra_args else ["--data-dir", data_dir]
    server = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{port}", *store, *extra_args],
        env=dict(os.environ, RAKAM_LOG="warn"), stdout=subprocess.DEVNULL)
    deadline = time.time() + wait_s
    while True:
        try:
            c = connect(port, timeout=5)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return server, port
        except OSError:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                raise
            time.sleep(0.05)


def stop(server, timeout=600):
    """Graceful stop (the server flushes its log to Parquet)."""
    server.send_signal(signal.SIGINT)
    server.wait(timeout=timeout)


def ndjson_chunks(raw, batch_events):
    """`raw` split into request bodies of `batch_events` lines each."""
    chunks, begin, count = [], 0, 0
    position = raw.find(b"\n")
    while position != -1:
        count += 1
        if count == batch_events:
            chunks.append(raw[begin:position + 1])
            begin, count = position + 1, 0
        position = raw.find(b"\n", position + 1)
    if begin < len(raw):
        chunks.append(raw[begin:])
    return chunks


def send_all(port, path, bodies, headers, connections=2):
    """Posts every body, `connections` at a time; raises the first error."""
    queue, lock, errors = list(reversed(bodies)), threading.Lock(), []

    def worker():
        conn = connect(port)
        while True:
            with lock:
                if not queue or errors:
                    return
                body = queue.pop()
            try:
                post(conn, path, body, headers)
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)
                return

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def rss_bytes(pid):
    """A process's resident memory (Linux)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def call(port, keys, path, body, key="master_key"):
    """POSTs JSON `body` with one of the project's keys; the JSON answer."""
    import json
    return json.loads(post(connect(port), path, json.dumps(body),
                           {"content-type": "application/json", key: keys[key]}))


def cpu_seconds(pid):
    """User + system CPU seconds of a process so far (Linux)."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

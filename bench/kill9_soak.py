#!/usr/bin/env python3
"""kill -9 soak: mixed ingest (single events, batches, NDJSON bulk, and
concurrent schema evolution: every writer adds fields of its own) under
aggressive flush and compaction settings, killed with SIGKILL at a random
moment, restarted on the same data, checked: every acknowledged event is
stored exactly once, and no event is stored twice. Repeated `--trials`
times on one data directory (the store grows across trials).

    python3 bench/kill9_soak.py --trials 100 [--binary target/release/rakam]

Prints one line per trial and a summary; exits 1 on any loss or double.
"""
import argparse
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import rakam_server  # noqa: E402

AGGRESSIVE = {
    "RAKAM_STORAGE__EMBEDDED__FLUSH_ROWS": "2000",
    "RAKAM_STORAGE__EMBEDDED__FLUSH_INTERVAL_SECS": "1",
    "RAKAM_STORAGE__EMBEDDED__WAL_SEGMENT_BYTES": "262144",
    "RAKAM_STORAGE__EMBEDDED__COMPACTION_MIN_FILES": "2",
    "RAKAM_STORAGE__EMBEDDED__COMPACTION_SMALL_FILE_BYTES": "1048576",
}


def start(binary, data_dir):
    os.environ.update(AGGRESSIVE)
    return rakam_server.start(binary, data_dir)


def request(port, path, body, headers=None):
    conn = rakam_server.connect(port, timeout=30)
    conn.request("POST", path, body=body,
                 headers={"content-type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


class Writer(threading.Thread):
    """Sends one kind of request until stopped; remembers what was acked."""

    def __init__(self, port, key, kind, trial, number):
        super().__init__(daemon=True)
        self.port, self.key, self.kind = port, key, kind
        self.prefix = f"t{trial}w{number}"
        self.acked, self.sequence, self.stop = [], 0, False

    def events(self, count):
        out = []
        for _ in range(count):
            self.sequence += 1
            event_id = f"{self.prefix}-{self.sequence}"
            # A field of this writer's own, now and then a new one: schema
            # evolution races the other writers and the flushes.
            props = {"id": event_id, "n": self.sequence,
                     f"f_{self.prefix}_{self.sequence // 50}": self.sequence}
            out.append((event_id, props))
        return out

    def run(self):
        while not self.stop:
            try:
                if self.kind == "collect":
                    [(event_id, props)] = self.events(1)
                    body = json.dumps({"collection": "soak", "api": {"api_key": self.key},
                                       "properties": props})
                    status, _ = request(self.port, "/event/collect", body)
                    ids = [event_id]
                elif self.kind == "batch":
                    batch = self.events(200)
                    body = json.dumps({"api": {"api_key": self.key}, "events": [
                        {"collection": "soak", "properties": p} for _, p in batch]})
                    status, _ = request(self.port, "/event/batch", body)
                    ids = [i for i, _ in batch]
                else:
                    batch = self.events(2000)
                    body = "\n".join(json.dumps({"collection": "soak", "properties": p})
                                     for _, p in batch)
                    status, _ = request(self.port, "/event/bulk", body, {
                        "content-type": "application/x-ndjson", "master_key": self.key})
                    ids = [i for i, _ in batch]
                if status == 200:
                    self.acked.extend(ids)
            except OSError:
                return  # the server was killed


def query(port, read_key, sql):
    status, data = request(port, "/query/execute", json.dumps({
        "query": sql, "limit": 1000000}), {"read_key": read_key})
    if status != 200:
        raise RuntimeError(f"query failed: {status} {data[:300]!r}")
    return json.loads(data)["result"]


def count_by_id(port, read_key, trial):
    """This trial's ids and how often each is stored."""
    rows = query(port, read_key,
                 f"SELECT id, count(*) FROM soak WHERE id LIKE 't{trial}w%' GROUP BY id")
    return {row[0]: row[1] for row in rows}


def counts_by_trial(port, read_key):
    """Per earlier trial: rows and distinct ids stored."""
    rows = query(port, read_key,
                 "SELECT split_part(id, 'w', 1), count(*), count(DISTINCT id) FROM soak GROUP BY 1")
    return {row[0]: (row[1], row[2]) for row in rows}


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--binary", default=os.environ.get(
        "RAKAM_BIN", "/var/cache/rakam-target/release/rakam"))
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    data_dir = tempfile.mkdtemp(prefix="rakam-soak-")
    server, port = start(args.binary, data_dir)
    status, data = request(port, "/project/create", json.dumps({"name": "soak"}))
    keys = json.loads(data)
    acked_total, lost_total, doubled_total = 0, 0, 0
    stored_after = {}
    for trial in range(1, args.trials + 1):
        writers = [Writer(port, keys["write_key"], "collect", trial, 0),
                   Writer(port, keys["write_key"], "collect", trial, 1),
                   Writer(port, keys["write_key"], "batch", trial, 2),
                   Writer(port, keys["master_key"], "bulk", trial, 3)]
        for w in writers:
            w.start()
        time.sleep(rng.uniform(0.3, 2.5))
        server.send_signal(signal.SIGKILL)
        server.wait()
        for w in writers:
            w.stop = True
            w.join(timeout=30)
        server, port = start(args.binary, data_dir)
        acked_ids = [i for w in writers for i in w.acked]
        stored = count_by_id(port, keys["read_key"], trial)
        lost = [i for i in acked_ids if i not in stored]
        doubled = [i for i, c in stored.items() if c != 1]
        # Earlier trials' events: none lost or doubled by this restart.
        for name, (rows, distinct) in counts_by_trial(port, keys["read_key"]).items():
            before = stored_after.get(name)
            if rows != distinct:
                doubled.append(f"{name}: {rows - distinct} rows doubled")
            if before is not None and distinct < before:
                lost.append(f"{name}: {before - distinct} ids gone")
            stored_after[name] = distinct
        acked = len(acked_ids)
        acked_total += acked
        lost_total += len(lost)
        doubled_total += len(doubled)
        print(f"trial {trial:3}: acknowledged {acked:6}, stored {len(stored):6} of this trial's ids, "
              f"lost {len(lost)}, doubled {len(doubled)}", flush=True)
        if lost or doubled:
            print(f"  lost e.g. {lost[:5]}, doubled e.g. {doubled[:5]}", flush=True)
    rakam_server.stop(server)
    print(f"summary: {args.trials} kill -9 trials, {acked_total} events acknowledged, "
          f"{lost_total} lost, {doubled_total} doubled; data in {data_dir}")
    sys.exit(1 if lost_total or doubled_total else 0)


if __name__ == "__main__":
    main()

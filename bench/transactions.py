#!/usr/bin/env python3
"""Transactional vs idempotent produce, and read_committed vs
read_uncommitted consume, with one client (confluent-kafka / librdkafka)
against one broker, in one run.

  bench/transactions.py --veil target/release/veil [--records 200000] [--reps 3]

Starts a fresh broker per repetition (own data dir, loopback, default
`flush = "sync"`), and per scenario a fresh topic (1 partition, 100-byte
values). Scenarios:
  idempotent         enable.idempotence, acks=all, linger.ms=5
  txn-100 / txn-1000 the same producer settings in transactions of 100 /
                     1 000 records (begin, produce, commit; commit waits
                     for the markers' acknowledgement by the coordinator)
  consume-committed / consume-uncommitted
                     one consumer reading the txn-1000 topic from the start
Prints one JSON line per scenario and rep, then the medians.
"""

import argparse
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time

from confluent_kafka import Consumer, OFFSET_BEGINNING, Producer, TopicPartition

VALUE = b"x" * 100


def start(veil, data):
    proc = subprocess.Popen(
        [veil, "broker", "--data-dir", data, "--listen", "127.0.0.1:0",
         "--admin-listen", "127.0.0.1:0", "--print-addresses"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    found = {}
    for line in proc.stdout:
        parts = line.split()
        if len(parts) == 3 and parts[0] == "LISTENING":
            found[parts[1]] = parts[2]
        if "admin" in found and len(found) >= 2:
            break
    found.pop("admin")
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    return proc, next(iter(found.values()))


def create(veil, bootstrap, topic):
    subprocess.run([veil, "topics", "--bootstrap", bootstrap, "create", topic, "-p", "1"],
                   check=True, capture_output=True, timeout=60)


def produce(bootstrap, topic, records, per_txn):
    conf = {"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all",
            "linger.ms": 5, "queue.buffering.max.messages": 1000000}
    if per_txn:
        conf["transactional.id"] = f"bench-{topic}"
    p = Producer(conf)
    commits = []
    start = time.monotonic()
    if per_txn:
        p.init_transactions(30)
        sent = 0
        while sent < records:
            p.begin_transaction()
            for _ in range(min(per_txn, records - sent)):
                p.produce(topic, value=VALUE)
                sent += 1
            t = time.monotonic()
            p.commit_transaction(60)
            commits.append((time.monotonic() - t) * 1000)
    else:
        for i in range(records):
            while True:
                try:
                    p.produce(topic, value=VALUE)
                    break
                except BufferError:
                    p.poll(0.01)
            if i % 10000 == 0:
                p.poll(0)
        assert p.flush(120) == 0
    elapsed = time.monotonic() - start
    out = {"records_per_s": round(records / elapsed)}
    if commits:
        out["txn_per_s"] = round(len(commits) / elapsed, 1)
        out["commit_p50_ms"] = round(statistics.median(commits), 2)
        out["commit_p99_ms"] = round(sorted(commits)[int(len(commits) * 0.99) - 1], 2)
    return out


def consume(bootstrap, topic, records, isolation):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{isolation}",
                  "isolation.level": isolation, "enable.auto.commit": False,
                  "fetch.max.bytes": 52428800})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got = 0
    start = time.monotonic()
    deadline = start + 120
    while got < records and time.monotonic() < deadline:
        batch = c.consume(10000, 1.0)
        got += sum(1 for m in batch if m.error() is None)
    elapsed = time.monotonic() - start
    c.close()
    assert got >= records, (got, records)
    return {"records_per_s": round(got / elapsed)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--veil", required=True)
    ap.add_argument("--records", type=int, default=200000)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    results = {}
    for rep in range(args.reps):
        with tempfile.TemporaryDirectory(prefix="veil-bench-txn-") as d:
            proc, bootstrap = start(args.veil, os.path.join(d, "data"))
            try:
                for name, per_txn in [("idempotent", 0), ("txn-100", 100), ("txn-1000", 1000)]:
                    topic = f"{name}-{rep}"
                    create(args.veil, bootstrap, topic)
                    r = produce(bootstrap, topic, args.records, per_txn)
                    results.setdefault(name, []).append(r)
                    print(json.dumps({"rep": rep, "scenario": name, **r}), flush=True)
                for isolation in ["read_committed", "read_uncommitted"]:
                    name = "consume-" + isolation.split("_")[1]
                    r = consume(bootstrap, f"txn-1000-{rep}", args.records, isolation)
                    results.setdefault(name, []).append(r)
                    print(json.dumps({"rep": rep, "scenario": name, **r}), flush=True)
            finally:
                proc.kill()
                proc.wait()
    print("medians:")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(json.dumps({"scenario": name, **med}))


if __name__ == "__main__":
    main()

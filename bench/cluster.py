#!/usr/bin/env python3
"""Client side of bench/cluster.sh: metadata operations on the Kafka wire,
standard library only, so one node and three are measured with the same
client.

  cluster.py topics --bootstrap H:P --count N --concurrency C --prefix P
      CreateTopics v2, one 1-partition topic per request, C connections each
      sending one request at a time; prints one JSON line with the
      operations per second.
  cluster.py acls --bootstrap H:P --count N --concurrency C --prefix P
      the same with CreateAcls v1, one ALLOW READ binding per request.
  cluster.py until-written --bootstrap H:P[,H:P...] --since-ns T --name X
      creates topic X through any of the given nodes, retrying every 20 ms
      on errors, until one acknowledges; prints the milliseconds since T
      (a `date +%s%N` taken when the controller was killed).
"""

import argparse
import json
import socket
import struct
import threading
import time

CREATE_TOPICS = 19
CREATE_ACLS = 30
# Retriable while the quorum has no controller (NOT_CONTROLLER,
# REQUEST_TIMED_OUT) or the connection is gone.
RETRIABLE = {41, 7}


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def request(api_key, version, correlation_id, body):
    header = struct.pack(">hhi", api_key, version, correlation_id) + string("bench")
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf.extend(chunk)
    return bytes(buf)


def call(s, api_key, version, correlation_id, body):
    s.sendall(request(api_key, version, correlation_id, body))
    size = struct.unpack(">i", recv_exact(s, 4))[0]
    frame = recv_exact(s, size)
    assert struct.unpack(">i", frame[:4])[0] == correlation_id
    return frame[4:]


def read_string(b, pos):
    n = struct.unpack(">h", b[pos:pos + 2])[0]
    pos += 2
    if n < 0:
        return None, pos
    return b[pos:pos + n].decode(), pos + n


def create_topic(s, cid, name):
    """CreateTopics v2, one topic, 1 partition, default replication; the error code."""
    body = struct.pack(">i", 1) + string(name) + struct.pack(">ihii", 1, -1, 0, 0)
    body += struct.pack(">ib", 30000, 0)
    resp = call(s, CREATE_TOPICS, 2, cid, body)
    pos = 4 + 4  # throttle, topic count
    _, pos = read_string(resp, pos)
    return struct.unpack(">h", resp[pos:pos + 2])[0]


def create_acl(s, cid, name):
    """CreateAcls v1: ALLOW User:bench READ on topic `name` (literal); the error code."""
    body = struct.pack(">i", 1) + struct.pack(">b", 2) + string(name) + struct.pack(">b", 3)
    body += string("User:bench") + string("*") + struct.pack(">bb", 3, 3)
    resp = call(s, CREATE_ACLS, 1, cid, body)
    return struct.unpack(">h", resp[8:10])[0]


def connect(addr):
    host, port = addr.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def load(args, op):
    errors = []
    per = [args.count // args.concurrency + (1 if i < args.count % args.concurrency else 0)
           for i in range(args.concurrency)]

    def worker(w):
        s = connect(args.bootstrap)
        for i in range(per[w]):
            code = op(s, i + 1, f"{args.prefix}-{w}-{i}")
            if code != 0:
                errors.append(code)
        s.close()

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(args.concurrency)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    secs = time.monotonic() - start
    print(json.dumps({
        "ops": args.count, "concurrency": args.concurrency, "secs": round(secs, 3),
        "ops_per_sec": round(args.count / secs, 1), "errors": len(errors),
    }))


def until_written(args):
    nodes = args.bootstrap.split(",")
    deadline = time.monotonic() + 60
    attempt = 0
    while time.monotonic() < deadline:
        for addr in nodes:
            attempt += 1
            try:
                s = connect(addr)
                s.settimeout(15)
                code = create_topic(s, attempt, args.name)
                s.close()
            except OSError:
                continue
            if code == 0:
                ms = (time.time_ns() - args.since_ns) / 1e6
                print(json.dumps({"ms": round(ms, 1), "attempts": attempt, "via": addr}))
                return
            if code not in RETRIABLE:
                raise SystemExit(f"CreateTopics answered {code}")
        time.sleep(0.02)
    raise SystemExit("no metadata write succeeded within 60 s")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["topics", "acls", "until-written"])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--prefix", default="bench")
    p.add_argument("--since-ns", type=int, default=0)
    p.add_argument("--name", default="after-failover")
    args = p.parse_args()
    if args.mode == "topics":
        load(args, create_topic)
    elif args.mode == "acls":
        load(args, create_acl)
    else:
        until_written(args)


if __name__ == "__main__":
    main()

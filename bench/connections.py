#!/usr/bin/env python3
"""Client side of bench/connections.sh: hold many idle Kafka connections, or
measure an active producer's request latency. Standard library only.

  connections.py hold --bootstrap H:P --connections N --source 127.0.0.3
      opens N connections from that source address, sends ApiVersions v0 on
      each and reads the answer, prints READY and the seconds it took, then
      holds them until killed.
  connections.py latency --bootstrap H:P --topic T --rate R --seconds S
      one connection sending Produce v3 (acks=1, one 100-byte record per
      request) R times a second for S seconds, one request in flight;
      prints one JSON line with p50/p99/max round-trip milliseconds.
"""

import argparse
import json
import socket
import struct
import sys
import time


def crc32c(data):
    table = crc32c.table
    if table is None:
        table = []
        for i in range(256):
            c = i
            for _ in range(8):
                c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
            table.append(c)
        crc32c.table = table
    crc = 0xFFFFFFFF
    for b in data:
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


crc32c.table = None


def varint(n):
    n = (n << 1) ^ (n >> 63)  # zigzag
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def request(api_key, version, correlation_id, body):
    header = struct.pack(">hhi", api_key, version, correlation_id) + string("bench")
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def batch(value, ts):
    record_body = (
        b"\x00" + varint(0) + varint(0) + varint(-1) + varint(len(value)) + value + varint(0)
    )
    record = varint(len(record_body)) + record_body
    after_crc = (
        struct.pack(">hiqqqhii", 0, 0, ts, ts, -1, -1, -1, 1) + record
    )
    crc = crc32c(after_crc)
    after_length = struct.pack(">ibI", -1, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


def read_frame(s):
    size = struct.unpack(">i", recv_exact(s, 4))[0]
    return recv_exact(s, size)


def recv_exact(s, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the broker")
        buf += chunk
    return bytes(buf)


def parse(bootstrap):
    host, port = bootstrap.rsplit(":", 1)
    return host, int(port)


def hold(args):
    addr = parse(args.bootstrap)
    api_versions = request(18, 0, 1, b"")
    held = []
    started = time.monotonic()
    for i in range(args.connections):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((args.source, 0))
        s.connect(addr)
        s.sendall(api_versions)
        read_frame(s)
        held.append(s)
    print("READY %d %.1f" % (len(held), time.monotonic() - started), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def latency(args):
    s = socket.create_connection(parse(args.bootstrap))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    records = batch(b"x" * 100, int(time.time() * 1000))
    # transactional_id null, acks=1, timeout; one topic, one partition (0).
    body = (struct.pack(">hhi", -1, 1, 30000) + struct.pack(">i", 1) + string(args.topic)
            + struct.pack(">i", 1) + struct.pack(">ii", 0, len(records)) + records)
    interval = 1.0 / args.rate
    samples = []
    deadline = time.monotonic() + args.seconds
    next_at = time.monotonic()
    cid = 0
    while time.monotonic() < deadline:
        cid += 1
        t0 = time.monotonic()
        s.sendall(request(0, 3, cid, body))
        frame = read_frame(s)
        samples.append((time.monotonic() - t0) * 1000)
        if struct.unpack(">i", frame[:4])[0] != cid:
            sys.exit("correlation id mismatch")
        next_at += interval
        pause = next_at - time.monotonic()
        if pause > 0:
            time.sleep(pause)
    samples.sort()

    def pct(p):
        return round(samples[min(len(samples) - 1, int(len(samples) * p))], 3)

    print(json.dumps({"requests": len(samples), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                      "max_ms": round(samples[-1], 3)}), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    h = sub.add_parser("hold")
    h.add_argument("--bootstrap", required=True)
    h.add_argument("--connections", type=int, required=True)
    h.add_argument("--source", default="127.0.0.1")
    lat = sub.add_parser("latency")
    lat.add_argument("--bootstrap", required=True)
    lat.add_argument("--topic", required=True)
    lat.add_argument("--rate", type=float, default=500)
    lat.add_argument("--seconds", type=float, default=10)
    args = p.parse_args()
    hold(args) if args.mode == "hold" else latency(args)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Client side of bench/fetch.sh: the unread-fetch recipe of issue item 3.

  fetch.py unread --bootstrap H:P --topic T --pid BROKER_PID [--requests 8] [--seconds 5]
      writes REQUESTS pipelined Fetch v4 requests for partition 0 from
      offset 0 with max_bytes = partition_max_bytes = 2^31-1 and never reads
      the socket; samples the broker's VmRSS every 50 ms for SECONDS and
      prints one JSON line with the RSS before and the peak (MiB).
Standard library only.
"""

import argparse
import json
import socket
import struct
import time


def string(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


def fetch_v4(correlation_id, topic):
    header = struct.pack(">hhi", 1, 4, correlation_id) + string("bench")
    body = (struct.pack(">iiiib", -1, 0, 1, 2**31 - 1, 0) + struct.pack(">i", 1) + string(topic)
            + struct.pack(">i", 1) + struct.pack(">iqi", 0, 0, 2**31 - 1))
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def rss_mib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise SystemExit("no VmRSS")


def unread(args):
    host, port = args.bootstrap.rsplit(":", 1)
    before = rss_mib(args.pid)
    s = socket.create_connection((host, int(port)))
    s.sendall(b"".join(fetch_v4(i, args.topic) for i in range(args.requests)))
    peak = before
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        time.sleep(0.05)
        peak = max(peak, rss_mib(args.pid))
    s.close()
    print(json.dumps({"rss_before_mib": round(before, 1), "rss_peak_mib": round(peak, 1),
                      "grown_mib": round(peak - before, 1)}), flush=True)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    u = sub.add_parser("unread")
    u.add_argument("--bootstrap", required=True)
    u.add_argument("--topic", required=True)
    u.add_argument("--pid", type=int, required=True)
    u.add_argument("--requests", type=int, default=8)
    u.add_argument("--seconds", type=float, default=5)
    unread(p.parse_args())


if __name__ == "__main__":
    main()

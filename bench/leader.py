"""Prints the leader of partition 0 of a topic (first answering bootstrap
address), or with --in-sync N exits 0 iff node N is in its ISR. Raw Kafka
Metadata v1 over the standard library only, for bench/replication.sh."""
import socket
import struct
import sys


def metadata(addr, topic):
    host, port = addr.rsplit(":", 1)
    body = struct.pack(">i", 1) + struct.pack(">h", len(topic)) + topic.encode()
    client = b"veil-bench"
    header = struct.pack(">hhih", 3, 1, 1, len(client)) + client
    req = header + body
    with socket.create_connection((host, int(port)), timeout=3) as s:
        s.sendall(struct.pack(">i", len(req)) + req)
        size = struct.unpack(">i", recv(s, 4))[0]
        return recv(s, size)


def recv(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise OSError("closed")
        out += chunk
    return out


def parse(buf):
    pos = 4  # correlation id
    def i32():
        nonlocal pos
        v = struct.unpack_from(">i", buf, pos)[0]
        pos += 4
        return v
    def i16():
        nonlocal pos
        v = struct.unpack_from(">h", buf, pos)[0]
        pos += 2
        return v
    def string():
        nonlocal pos
        n = i16()
        v = buf[pos:pos + max(n, 0)].decode()
        pos += max(n, 0)
        return v
    for _ in range(i32()):  # brokers
        i32(); string(); i32(); string()
    i32()  # controller
    for _ in range(i32()):  # topics
        i16(); string(); pos += 1  # error, name, is_internal
        for _ in range(i32()):
            err, index, leader = i16(), i32(), i32()
            replicas = [i32() for _ in range(i32())]
            isr = [i32() for _ in range(i32())]
            if index == 0 and err == 0:
                return leader, isr
    return None


def main():
    addrs, topic = sys.argv[1].split(","), sys.argv[2]
    want = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--in-sync" else None
    for addr in addrs:
        try:
            found = parse(metadata(addr, topic))
        except OSError:
            continue
        if found is None or found[0] < 0:
            continue
        leader, isr = found
        if want is None:
            print(leader)
            return 0
        return 0 if want in isr else 1
    return 1


if __name__ == "__main__":
    sys.exit(main())

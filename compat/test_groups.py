"""Consumer groups with real clients: rebalances, session timeouts, static
membership, committed offsets across consumer and broker restarts."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata

from conftest import Broker, create_topic

# No initial rebalance delay, so tests do not wait 3 s per first join.
GROUP_ARGS = ["--set", "groups.initial_rebalance_delay_ms=0"]
SESSION_MS = 6000


@pytest.fixture
def gbroker():
    b = Broker(extra_args=GROUP_ARGS)
    yield b
    b.close()


def produce(broker, topic, partitions, per_partition):
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "enable.idempotence": False})
    for part in range(partitions):
        for i in range(per_partition):
            p.produce(topic, value=f"{part}:{i}".encode(), partition=part)
    assert p.flush(60) == 0


class Tracked:
    """A confluent consumer that records its assignment and revocations."""

    def __init__(self, broker, group, topic, **extra):
        self.assigned = set()
        self.revokes = 0
        conf = {"bootstrap.servers": broker.bootstrap, "group.id": group,
                "session.timeout.ms": SESSION_MS, "heartbeat.interval.ms": 500,
                "enable.auto.commit": False, "auto.offset.reset": "earliest",
                "max.poll.interval.ms": 20000}
        conf.update(extra)
        self.c = Consumer(conf)
        self.c.subscribe([topic], on_assign=self._assign, on_revoke=self._revoke)

    def _assign(self, _c, parts):
        self.assigned = {p.partition for p in parts}

    def _revoke(self, _c, parts):
        self.revokes += 1
        self.assigned = set()

    def poll(self):
        m = self.c.poll(0.1)
        assert m is None or m.error() is None or m.error().code() < 0, m.error()
        return m


def poll_until(consumers, cond, timeout=45):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in consumers:
            c.poll()
        if cond():
            return True
    return False


def test_two_consumers_split_six_partitions_then_one_takes_all(gbroker, topic_name):
    create_topic(gbroker, topic_name, 6)
    a = Tracked(gbroker, "g-split", topic_name)
    b = Tracked(gbroker, "g-split", topic_name)
    ok = poll_until([a, b], lambda: len(a.assigned) == 3 and len(b.assigned) == 3)
    assert ok, (a.assigned, b.assigned)
    assert a.assigned.isdisjoint(b.assigned)
    assert a.assigned | b.assigned == set(range(6))
    started = time.monotonic()
    b.c.close()
    assert poll_until([a], lambda: a.assigned == set(range(6)), timeout=30), a.assigned
    assert time.monotonic() - started < 20, "within the rebalance timeout"
    a.c.close()


CHILD = textwrap.dedent("""
    import sys
    from confluent_kafka import Consumer
    c = Consumer({"bootstrap.servers": sys.argv[1], "group.id": sys.argv[2],
                  "session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                  "enable.auto.commit": False, "max.poll.interval.ms": 20000})
    def on_assign(_c, parts):
        print("ASSIGNED", len(parts), flush=True)
    c.subscribe([sys.argv[3]], on_assign=on_assign)
    while True:
        c.poll(0.1)
""")


def test_killed_consumer_partitions_move_after_session_timeout(gbroker, topic_name):
    create_topic(gbroker, topic_name, 6)
    child = subprocess.Popen([sys.executable, "-c", CHILD, gbroker.bootstrap, "g-kill", topic_name],
                             stdout=subprocess.PIPE, text=True)
    try:
        a = Tracked(gbroker, "g-kill", topic_name)
        assert poll_until([a], lambda: len(a.assigned) == 3), a.assigned
        killed_at = time.monotonic()
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert poll_until([a], lambda: a.assigned == set(range(6)), timeout=40), a.assigned
        elapsed = time.monotonic() - killed_at
        assert elapsed >= SESSION_MS / 1000 - 1.5, f"moved after {elapsed:.1f}s, before the session timeout"
        a.c.close()
    finally:
        child.kill()


def consume_committing(consumer, want, commit_after):
    """Polls `want` messages, committing synchronously after `commit_after`."""
    got = []
    deadline = time.monotonic() + 45
    while len(got) < want and time.monotonic() < deadline:
        m = consumer.poll(0.2)
        if m is None or m.error():
            continue
        got.append(m.value().decode())
        if len(got) == commit_after:
            consumer.commit(asynchronous=False)
    return got


def test_commit_stop_restart_resumes_at_committed_offsets(gbroker, topic_name):
    create_topic(gbroker, topic_name, 2)
    produce(gbroker, topic_name, 2, 50)
    conf = {"bootstrap.servers": gbroker.bootstrap, "group.id": "g-resume",
            "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    c = Consumer(conf)
    c.subscribe([topic_name])
    first = consume_committing(c, 60, 60)
    c.close()
    committed = Consumer(conf).committed([TopicPartition(topic_name, p) for p in range(2)], timeout=30)
    assert sum(tp.offset for tp in committed) == 60
    c = Consumer(conf)
    c.subscribe([topic_name])
    rest = consume_committing(c, 40, 40)
    c.close()
    assert len(rest) == 40
    assert sorted(first + rest) == sorted(f"{p}:{i}" for p in range(2) for i in range(50)), "no gap, no repeat"


def test_static_member_restart_does_not_rebalance(gbroker, topic_name):
    create_topic(gbroker, topic_name, 6)
    static = {"group.instance.id": "static-a", "session.timeout.ms": 30000, "max.poll.interval.ms": 30000}
    a = Tracked(gbroker, "g-static", topic_name, **static)
    b = Tracked(gbroker, "g-static", topic_name)
    assert poll_until([a, b], lambda: len(a.assigned) == 3 and len(b.assigned) == 3), (a.assigned, b.assigned)
    before = set(a.assigned)
    revokes = b.revokes
    a.c.close()  # a static member does not leave the group on close
    a2 = Tracked(gbroker, "g-static", topic_name, **static)
    assert poll_until([a2, b], lambda: len(a2.assigned) == 3, timeout=30), a2.assigned
    poll_until([a2, b], lambda: False, timeout=3)
    assert a2.assigned == before, "the restarted member gets its old assignment back"
    assert b.revokes == revokes, "the other member saw no rebalance"
    assert len(b.assigned) == 3
    a2.c.close()
    b.c.close()


def test_kafka_python_group_consumes_everything_once_with_manual_commits(gbroker, topic_name):
    create_topic(gbroker, topic_name, 4)
    produce(gbroker, topic_name, 4, 100)
    seen = []
    for round_ in range(2):
        c = KafkaConsumer(topic_name, bootstrap_servers=gbroker.bootstrap, group_id="g-kp",
                          enable_auto_commit=False, auto_offset_reset="earliest",
                          session_timeout_ms=SESSION_MS, heartbeat_interval_ms=500)
        target = 200 if round_ == 0 else 400
        deadline = time.monotonic() + 60
        while len(seen) < target and time.monotonic() < deadline:
            batch = c.poll(timeout_ms=500, max_records=50)
            offsets = {}
            for tp, msgs in batch.items():
                for m in msgs:
                    seen.append(m.value.decode())
                    offsets[tp] = OffsetAndMetadata(m.offset + 1, "", -1)
            if offsets:
                c.commit(offsets)
        c.close()
    assert len(seen) == 400
    assert sorted(seen) == sorted(f"{p}:{i}" for p in range(4) for i in range(100)), "each record exactly once"


def test_coordinator_crash_keeps_offsets_and_group(gbroker, topic_name):
    create_topic(gbroker, topic_name, 3)
    produce(gbroker, topic_name, 3, 10)
    conf = {"bootstrap.servers": gbroker.bootstrap, "group.id": "g-crash",
            "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    c = Consumer(conf)
    c.subscribe([topic_name])
    consume_committing(c, 30, 30)
    c.close()
    gbroker.restart()  # SIGKILL, then start on the same data
    conf["bootstrap.servers"] = gbroker.bootstrap
    check = Consumer(conf)
    committed = check.committed([TopicPartition(topic_name, p) for p in range(3)], timeout=30)
    assert [tp.offset for tp in committed] == [10, 10, 10]
    check.close()
    from confluent_kafka.admin import AdminClient
    admin = AdminClient({"bootstrap.servers": gbroker.bootstrap})  # kept alive until the futures resolve
    groups = admin.list_consumer_groups().result(30)
    assert "g-crash" in {g.group_id for g in groups.valid}
    described = admin.describe_consumer_groups(["g-crash"])["g-crash"].result(30)
    assert described.state.name == "EMPTY"

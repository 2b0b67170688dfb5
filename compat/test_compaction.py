"""Compacted topics and topic-level compression with confluent-kafka (librdkafka):
100 000 updates over 1 000 keys read back as exactly the 1 000 latest values once the
cleaner ran, keyless records refused, and compression.type=gzip set, described and applied."""
import glob
import os
import struct
import time
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   NewTopic)

from conftest import Broker

# A quick cleaner: short rounds, and age-based rolls checked often (segment.ms below).
FAST_CLEANER = ["--set", "log.cleaner.backoff_ms=200",
                "--set", "log.retention_check_interval_ms=200"]


@pytest.fixture
def broker():
    b = Broker(extra_args=FAST_CLEANER)
    yield b
    b.close()


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def create(broker, name, config):
    a = admin(broker)
    a.create_topics([NewTopic(name, 1, 1, config=config)])[name].result(30)


def read_partition(broker, topic, isolation="read_committed"):
    """Every record of partition 0, from the beginning to the high watermark."""
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": str(uuid.uuid4()),
                  "enable.auto.commit": False, "enable.partition.eof": True,
                  "isolation.level": isolation})
    tp = TopicPartition(topic, 0, OFFSET_BEGINNING)
    _, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=30)
    c.assign([tp])
    got = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and high > 0:
        m = c.poll(0.5)
        if m is None:
            continue
        if m.error():
            assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
            break
        got.append(m)
    c.close()
    return got


def metric(broker, name, topic):
    body = urllib.request.urlopen(f"http://{broker.admin}/metrics", timeout=10).read().decode()
    values = [float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
              if line.startswith(name + "{") and f'topic="{topic}"' in line]
    return values[0] if values else None


def test_100k_updates_over_1000_keys_read_back_as_the_1000_latest(broker):
    topic = "device-twins"
    create(broker, topic, {"cleanup.policy": "compact", "segment.bytes": "65536",
                           "segment.ms": "2000", "min.cleanable.dirty.ratio": "0.01"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 10,
                  "compression.type": "lz4", "enable.idempotence": True})
    offsets = {}

    def delivered(err, msg):
        assert err is None, err
        offsets[msg.key()] = (msg.offset(), msg.value())

    # Deliveries of one key arrive in order, so `offsets` ends with each key's latest.
    for i in range(100_000):
        p.produce(topic, key=f"device-{i % 1000}".encode(), value=f"state-{i}".encode(),
                  on_delivery=delivered)
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(120) == 0
    assert len(offsets) == 1000
    assert offsets[b"device-0"][1] == b"state-99000"

    # The active segment rolls after segment.ms, then the cleaner covers everything.
    deadline = time.monotonic() + 90
    while True:
        got = read_partition(broker, topic)
        if len(got) == 1000 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert len(got) == 1000, f"{len(got)} records after cleaning"
    assert {m.key(): (m.offset(), m.value()) for m in got} == offsets
    assert [m.offset() for m in got] == sorted(m.offset() for m in got)
    assert metric(broker, "veil_log_cleaner_cleaned_bytes_total", topic) > 0
    assert metric(broker, "veil_log_cleaner_dirty_ratio", topic) is not None
    assert metric(broker, "veil_log_cleaner_lag_bytes", topic) is not None

    # Producing goes on as usual after cleaning; the new value wins.
    p.produce(topic, key=b"device-7", value=b"state-new")
    assert p.flush(30) == 0
    latest = {m.key(): m.value() for m in read_partition(broker, topic)}
    assert latest[b"device-7"] == b"state-new" and len(latest) == 1000


def test_a_pass_removes_aborted_transactions_records(broker):
    """Aborted records of a compacted topic are gone for every reader once the cleaner passed
    over them; committed records, including those of transactions, stay at their offsets."""
    topic = "twins-" + uuid.uuid4().hex[:8]
    create(broker, topic, {"cleanup.policy": "compact", "segment.bytes": "4096",
                           "segment.ms": "1000", "min.cleanable.dirty.ratio": "0.01"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": "twins-writer",
                  "linger.ms": 5})
    p.init_transactions(30)
    p.begin_transaction()
    for i in range(20):
        p.produce(topic, key=f"kept-{i}".encode(), value=f"committed-{i}".encode())
    p.commit_transaction(30)
    p.begin_transaction()
    for i in range(20):
        p.produce(topic, key=f"gone-{i}".encode(), value=f"aborted-{i}".encode())
    p.flush(30)
    p.abort_transaction(30)
    # Enough committed updates after them to roll segments past the aborted ones.
    for round_ in range(5):
        p.begin_transaction()
        for i in range(100):
            p.produce(topic, key=f"filler-{i}".encode(), value=f"v{round_}-{i}".encode())
        p.commit_transaction(30)

    def values():
        return [m.value().decode()
                for m in read_partition(broker, topic, isolation="read_uncommitted")]

    # read_uncommitted sees the aborted records until a pass removes them.
    deadline = time.monotonic() + 60
    got = values()
    while any(v.startswith("aborted-") for v in got) and time.monotonic() < deadline:
        time.sleep(1)
        got = values()
    assert not any(v.startswith("aborted-") for v in got), got
    assert [v for v in got if v.startswith("committed-")] == [f"committed-{i}" for i in range(20)]
    assert [v for v in got if v.startswith("v4-")] == [f"v4-{i}" for i in range(100)]
    assert metric(broker, "veil_log_cleaner_cleaned_bytes_total", topic) > 0


def test_keyless_records_are_refused_on_compacted_topics(broker):
    topic = "compacted-keys"
    create(broker, topic, {"cleanup.policy": "compact"})
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "retries": 0,
                  "enable.idempotence": False})
    errors = []
    # One batch each: a keyless record fails its whole batch, as in Kafka.
    p.produce(topic, value=b"no key", on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    p.produce(topic, key=b"k", value=b"keyed", on_delivery=lambda err, msg: errors.append(err))
    p.flush(30)
    assert errors[0] is not None and errors[0].code() == KafkaError.INVALID_RECORD, errors
    assert errors[1] is None
    # Kafka's list operations on cleanup.policy work too.
    a = admin(broker)
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    a.incremental_alter_configs([ConfigResource(
        ConfigResource.Type.TOPIC, topic,
        incremental_configs=[ConfigEntry("cleanup.policy", "delete",
                                         incremental_operation=AlterConfigOpType.APPEND)],
    )])[res].result(30)
    assert a.describe_configs([res])[res].result(30)["cleanup.policy"].value == "compact,delete"


def stored_codecs(broker, topic):
    """The codec id of every batch in the partition's segment files."""
    codecs = []
    for path in sorted(glob.glob(os.path.join(broker.dir, "data", f"{topic}-0", "*.log"))):
        data = open(path, "rb").read()
        pos = 0
        while pos + 61 <= len(data):
            (length,) = struct.unpack(">i", data[pos + 8:pos + 12])
            (attributes,) = struct.unpack(">h", data[pos + 21:pos + 23])
            codecs.append(attributes & 7)
            pos += 12 + length
    return codecs


def test_admin_creates_a_gzip_topic_describes_it_and_the_broker_recompresses(broker):
    topic = "gzip-topic"
    a = admin(broker)
    create(broker, topic, {"compression.type": "gzip", "compression.gzip.level": "9"})
    res = ConfigResource(ConfigResource.Type.TOPIC, topic)
    configs = a.describe_configs([res])[res].result(30)
    assert configs["compression.type"].value == "gzip"
    assert configs["compression.type"].source == 1  # DYNAMIC_TOPIC_CONFIG
    assert configs["compression.gzip.level"].value == "9"
    assert configs["compression.zstd.level"].value == "3"

    values = []
    for codec in ["none", "lz4", "gzip"]:
        p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "linger.ms": 5,
                      "compression.type": codec})
        for i in range(500):
            v = f"{codec}-{i}-" + "reading " * 8
            values.append(v.encode())
            p.produce(topic, key=str(i).encode(), value=v.encode())
        assert p.flush(30) == 0
    got = read_partition(broker, topic)
    assert [m.value() for m in got] == values
    codecs = stored_codecs(broker, topic)
    assert codecs and set(codecs) == {1}, codecs

    # Back to the producer's choice: later batches are stored as produced.
    a.incremental_alter_configs([ConfigResource(
        ConfigResource.Type.TOPIC, topic,
        incremental_configs=[ConfigEntry("compression.type", "producer",
                                         incremental_operation=AlterConfigOpType.SET)],
    )])[res].result(30)
    p = Producer({"bootstrap.servers": broker.bootstrap, "compression.type": "zstd"})
    p.produce(topic, key=b"z", value=b"zstd as produced " * 10)
    assert p.flush(30) == 0
    assert stored_codecs(broker, topic)[-1] == 4
    with pytest.raises(Exception):
        a.incremental_alter_configs([ConfigResource(
            ConfigResource.Type.TOPIC, topic,
            incremental_configs=[ConfigEntry("compression.type", "brotli",
                                             incremental_operation=AlterConfigOpType.SET)],
        )])[res].result(30)

"""confluent-kafka (librdkafka) producer, consumer and AdminClient."""
import time

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition, OFFSET_BEGINNING
from confluent_kafka.admin import (AdminClient, ConfigResource, ConfigEntry, AlterConfigOpType,
                                   NewPartitions, NewTopic, OffsetSpec)

from conftest import create_topic


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap})


def consume_all(broker, topic, partitions, expected, timeout=60):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "unused-no-commits",
                  "enable.auto.commit": False, "enable.partition.eof": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < expected and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got.append(m)
    c.close()
    return got


@pytest.mark.parametrize("compression", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_idempotence_off_round_trip_with_keys_headers_and_compression(broker, topic_name, compression):
    create_topic(broker, topic_name, 3)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "enable.idempotence": False,
                  "compression.type": compression, "linger.ms": 5})
    n = 3000
    for i in range(n):
        p.produce(topic_name, key=f"k{i % 17}", value=f"v{i}".encode(), headers=[("h", str(i).encode())])
    assert p.flush(60) == 0
    got = consume_all(broker, topic_name, 3, n)
    assert len(got) == n
    assert sorted(int(m.value()[1:]) for m in got) == list(range(n))
    for m in got:
        i = int(m.value()[1:])
        assert m.key() == f"k{i % 17}".encode()
        assert dict(m.headers()) == {"h": str(i).encode()}
    # Per-key order holds within a partition.
    by_key = {}
    for m in got:
        by_key.setdefault(m.key(), []).append(int(m.value()[1:]))
    assert all(v == sorted(v) for v in by_key.values())


def test_admin_create_describe_alter_partitions_delete(broker, topic_name):
    a = admin(broker)
    fs = a.create_topics([NewTopic(topic_name, 2, 1, config={"retention.ms": "3600000"})])
    fs[topic_name].result(30)
    with pytest.raises(KafkaException) as e:
        a.create_topics([NewTopic(topic_name, 2, 1)])[topic_name].result(30)
    assert "TOPIC_ALREADY_EXISTS" in str(e.value) or "already exists" in str(e.value)

    md = a.list_topics(timeout=30)
    assert len(md.topics[topic_name].partitions) == 2

    res = ConfigResource(ConfigResource.Type.TOPIC, topic_name)
    configs = a.describe_configs([res])[res].result(30)
    assert configs["retention.ms"].value == "3600000"
    assert configs["cleanup.policy"].value == "delete"

    a.incremental_alter_configs([ConfigResource(
        ConfigResource.Type.TOPIC, topic_name,
        incremental_configs=[ConfigEntry("retention.ms", "1000", incremental_operation=AlterConfigOpType.SET)],
    )])[res].result(30)
    assert a.describe_configs([res])[res].result(30)["retention.ms"].value == "1000"

    with pytest.raises(KafkaException):
        a.incremental_alter_configs([ConfigResource(
            ConfigResource.Type.TOPIC, topic_name,
            incremental_configs=[ConfigEntry("retention.ms", "later", incremental_operation=AlterConfigOpType.SET)],
        )])[res].result(30)

    a.create_partitions([NewPartitions(topic_name, 5)])[topic_name].result(30)
    assert len(a.list_topics(timeout=30).topics[topic_name].partitions) == 5

    a.delete_topics([topic_name])[topic_name].result(30)
    assert topic_name not in a.list_topics(timeout=30).topics


def test_list_offsets_and_delete_records(broker, topic_name):
    create_topic(broker, topic_name, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "enable.idempotence": False, "linger.ms": 0})
    for i in range(10):
        p.produce(topic_name, value=str(i).encode(), timestamp=1_000_000 + i * 1000)
        p.flush(30)
    a = admin(broker)
    tp = TopicPartition(topic_name, 0)
    earliest = a.list_offsets({tp: OffsetSpec.earliest()})[tp].result(30)
    latest = a.list_offsets({tp: OffsetSpec.latest()})[tp].result(30)
    assert (earliest.offset, latest.offset) == (0, 10)
    by_ts = a.list_offsets({tp: OffsetSpec.for_timestamp(1_004_500)})[tp].result(30)
    assert by_ts.offset == 5
    max_ts = a.list_offsets({tp: OffsetSpec.max_timestamp()})[tp].result(30)
    assert max_ts.offset == 9

    a.delete_records([TopicPartition(topic_name, 0, 4)])[TopicPartition(topic_name, 0, 4)].result(30)
    earliest = a.list_offsets({tp: OffsetSpec.earliest()})[tp].result(30)
    assert earliest.offset == 4
    got = consume_all(broker, topic_name, 1, 6)
    assert [int(m.value()) for m in got] == [4, 5, 6, 7, 8, 9]


def test_acks_all_survives_kill_9(broker, topic_name):
    create_topic(broker, topic_name, 1)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all", "enable.idempotence": False})
    delivered = []
    for i in range(200):
        p.produce(topic_name, value=str(i).encode(),
                  on_delivery=lambda err, m: delivered.append(m) if err is None else None)
    assert p.flush(60) == 0
    assert len(delivered) == 200
    broker.kill()
    broker.restart()
    got = consume_all(broker, topic_name, 1, 200)
    assert [int(m.value()) for m in got] == list(range(200))
    assert broker.terminate() == 0

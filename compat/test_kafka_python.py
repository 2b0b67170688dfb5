"""kafka-python producer, consumer and admin client."""
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError


def test_admin_produce_consume(broker, topic_name):
    a = KafkaAdminClient(bootstrap_servers=broker.bootstrap, request_timeout_ms=30000)
    a.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1)])
    try:
        a.create_topics([NewTopic(topic_name, num_partitions=2, replication_factor=1)])
        raise AssertionError("duplicate create must fail")
    except TopicAlreadyExistsError:
        pass
    assert topic_name in a.list_topics()

    p = KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all", linger_ms=5)
    for i in range(1000):
        p.send(topic_name, key=str(i % 7).encode(), value=str(i).encode(), partition=i % 2)
    p.flush(60)
    p.close()

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap, enable_auto_commit=False,
                      auto_offset_reset="earliest", consumer_timeout_ms=5000)
    c.assign([TopicPartition(topic_name, 0), TopicPartition(topic_name, 1)])
    c.seek_to_beginning()
    got = []
    deadline = time.monotonic() + 60
    while len(got) < 1000 and time.monotonic() < deadline:
        for recs in c.poll(timeout_ms=500).values():
            got.extend(recs)
    c.close()
    assert sorted(int(r.value) for r in got) == list(range(1000))
    for part in (0, 1):
        values = [int(r.value) for r in got if r.partition == part]
        assert values == sorted(values) and all(v % 2 == part for v in values)

    a.delete_topics([topic_name])
    assert topic_name not in a.list_topics()
    a.close()

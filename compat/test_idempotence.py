"""confluent-kafka's idempotent producer while the broker is SIGKILLed and
restarted mid-stream (on the same port, so the producer's bootstrap address
stays valid): every key's values arrive exactly once and in order."""
import threading
import time
from collections import defaultdict

from confluent_kafka import Consumer, OFFSET_BEGINNING, Producer, TopicPartition

from conftest import create_topic

KEYS = 20
VALUES = 500
PARTITIONS = 3


def consume_everything(broker, topic, expected, timeout=90):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "idempotence-check",
                  "enable.auto.commit": False, "enable.partition.eof": False})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got = []
    deadline = time.monotonic() + timeout
    # Read past `expected` for a moment too: a duplicate would show up there.
    quiet_until = None
    while time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            if len(got) >= expected:
                quiet_until = quiet_until or time.monotonic() + 2
                if time.monotonic() > quiet_until:
                    break
            continue
        assert m.error() is None, m.error()
        got.append(m)
    c.close()
    return got


def test_kill_9_mid_stream_loses_and_duplicates_nothing(broker, topic_name):
    create_topic(broker, topic_name, PARTITIONS)
    errors = []
    producer = Producer({
        "bootstrap.servers": broker.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 50,
        "retry.backoff.ms": 100,
        "reconnect.backoff.max.ms": 500,
        "delivery.timeout.ms": 120000,
    })

    def delivered(err, _msg):
        if err is not None:
            errors.append(err)

    def crash_twice():
        for _ in range(2):
            broker.kill()
            time.sleep(1)
            broker.start(same_port=True)
            time.sleep(1.5)

    crasher = threading.Thread(target=crash_twice)
    for v in range(VALUES):
        for k in range(KEYS):
            producer.produce(topic_name, key=f"k{k}", value=f"{v}".encode(), on_delivery=delivered)
        producer.poll(0)
        if v == 100:
            # Kill while batches are in flight; keep producing while the broker is down.
            crasher.start()
        time.sleep(0.01)
    crasher.join(timeout=120)
    assert producer.flush(120) == 0, "producer could not deliver everything"
    assert not errors, errors

    got = consume_everything(broker, topic_name, KEYS * VALUES)
    by_key = defaultdict(list)
    for m in got:
        by_key[m.key().decode()].append(int(m.value()))
    for k in range(KEYS):
        assert by_key[f"k{k}"] == list(range(VALUES)), f"k{k}: duplicates, gaps or reordering"
    assert len(got) == KEYS * VALUES

"""kcat (librdkafka) against a real broker: metadata, produce, consume."""
import json
import shutil
import subprocess

import pytest

from conftest import create_topic

pytestmark = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed")


def kcat(*args, input=None, timeout=60):
    return subprocess.run(["kcat", *args], input=input, capture_output=True, text=True, timeout=timeout)


def test_metadata_lists_broker_and_topics(broker, topic_name):
    create_topic(broker, topic_name, 3)
    out = kcat("-b", broker.bootstrap, "-L", "-J")
    assert out.returncode == 0, out.stderr
    meta = json.loads(out.stdout)
    assert [b["name"] for b in meta["brokers"]] == [broker.bootstrap]
    topic = next(t for t in meta["topics"] if t["topic"] == topic_name)
    assert len(topic["partitions"]) == 3


@pytest.mark.parametrize("codec", ["none", "gzip", "snappy", "lz4", "zstd"])
def test_produce_then_consume_every_codec(broker, topic_name, codec):
    create_topic(broker, topic_name, 1)
    lines = [f"key{i}:value-{i}-{'x' * (i % 50)}" for i in range(500)]
    out = kcat("-b", broker.bootstrap, "-P", "-t", topic_name, "-K:", "-z", codec,
               "-X", "acks=all", input="\n".join(lines) + "\n")
    assert out.returncode == 0, out.stderr
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic_name, "-o", "beginning", "-e",
               "-f", "%k:%s\\n", "-q")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == lines


def test_consume_from_an_offset_and_from_the_end(broker, topic_name):
    create_topic(broker, topic_name, 1)
    kcat("-b", broker.bootstrap, "-P", "-t", topic_name, input="\n".join(str(i) for i in range(20)) + "\n")
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic_name, "-o", "15", "-e", "-q")
    assert out.stdout.split() == [str(i) for i in range(15, 20)]
    out = kcat("-b", broker.bootstrap, "-C", "-t", topic_name, "-o", "-3", "-e", "-q")
    assert out.stdout.split() == ["17", "18", "19"]


def test_unknown_topic_is_reported(broker):
    out = kcat("-b", broker.bootstrap, "-C", "-t", "does-not-exist", "-e", "-q", timeout=30)
    assert out.returncode != 0 or "Unknown topic" in out.stderr or "UNKNOWN_TOPIC" in out.stderr

"""kafkajs, a Kafka client written independently of librdkafka, runs
transactions against Veil: commit, abort, offsets sent in a transaction,
and a read_committed consumer that sees only committed records, in order.
`scripts/test` installs Node.js and kafkajs (compat/kafkajs)."""
import json
import os
import subprocess

from conftest import create_topic

HERE = os.path.join(os.path.dirname(__file__), "kafkajs")


def test_kafkajs_transactions(broker, topic_name):
    assert os.path.isdir(os.path.join(HERE, "node_modules", "kafkajs")), \
        "kafkajs is not installed: run scripts/test (or npm ci --prefix compat/kafkajs)"
    create_topic(broker, topic_name, 1)
    out = subprocess.run(["node", os.path.join(HERE, "transactions.js"), broker.bootstrap,
                          topic_name], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr + "\n" + broker.log()[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["committed"] == ["c1", "c2", "c3"], result
    assert result["offset"] == "7", result

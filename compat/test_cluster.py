"""Three real `veil` nodes on 127.0.0.1/.2/.3 (every one a voter and a
broker) seen by real clients: confluent-kafka's AdminClient and `kcat -L`
list three brokers and a controller, and a topic with replication factor 3
has its three replicas on the three nodes."""
import json
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from conftest import Broker


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ready(node):
    try:
        with urllib.request.urlopen(f"http://{node.admin}/healthz", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def cluster():
    hosts = [f"127.0.0.{i}" for i in (1, 2, 3)]
    voters = ",".join(f'"{i}@{h}:{free_port(h)}"' for i, h in enumerate(hosts, 1))
    nodes = []
    try:
        for i, host in enumerate(hosts, 1):
            nodes.append(Broker(extra_args=[
                "--set", f"node_id={i}",
                "--set", f"cluster.voters=[{voters}]",
                "--set", "topics.default_replication_factor=3",
            ], host=host))
        deadline = time.monotonic() + 60
        while not all(ready(n) for n in nodes):
            assert time.monotonic() < deadline, "nodes not ready:\n" + "\n".join(n.log() for n in nodes)
            time.sleep(0.2)
        yield nodes
    finally:
        for n in nodes:
            n.close()


def test_admin_client_sees_three_brokers_a_controller_and_three_replicas(cluster):
    admin = AdminClient({"bootstrap.servers": cluster[1].bootstrap})
    described = admin.describe_cluster(request_timeout=15).result(timeout=30)
    assert sorted(n.id for n in described.nodes) == [1, 2, 3]
    assert described.controller is not None and described.controller.id in (1, 2, 3)
    listed = admin.list_topics(timeout=15)
    assert sorted(listed.brokers) == [1, 2, 3]
    assert listed.controller_id in (1, 2, 3)

    futures = admin.create_topics([NewTopic("replicated", num_partitions=3, replication_factor=3)])
    futures["replicated"].result(timeout=30)
    topic = admin.list_topics(topic="replicated", timeout=15).topics["replicated"]
    assert len(topic.partitions) == 3
    leaders = set()
    for p in topic.partitions.values():
        assert sorted(p.replicas) == [1, 2, 3], p
        assert sorted(p.isrs) == [1, 2, 3], p
        leaders.add(p.leader)
    assert leaders == {1, 2, 3}, "leadership is spread over the nodes"


@pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed")
def test_kcat_lists_three_brokers_and_a_controller(cluster):
    admin = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    admin.create_topics([NewTopic("seen-by-kcat", num_partitions=1, replication_factor=3)])[
        "seen-by-kcat"].result(timeout=30)
    for node in cluster:
        out = subprocess.run(["kcat", "-b", node.bootstrap, "-L"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert " 3 brokers:" in out.stdout, out.stdout
        assert out.stdout.count("(controller)") == 1, out.stdout
        for other in cluster:
            assert f"at {other.bootstrap}" in out.stdout, out.stdout
        out = subprocess.run(["kcat", "-b", node.bootstrap, "-L", "-J", "-t", "seen-by-kcat"],
                             capture_output=True, text=True, timeout=60)
        meta = json.loads(out.stdout)
        (topic,) = [t for t in meta["topics"] if t["topic"] == "seen-by-kcat"]
        replicas = sorted(r["id"] for r in topic["partitions"][0]["replicas"])
        assert replicas == [1, 2, 3], topic


def test_a_cluster_wide_broker_default_reaches_every_node(cluster):
    """kafka-configs --entity-type brokers --entity-default --alter, with
    kafka-python (librdkafka refuses the empty resource name locally), then
    each broker described with confluent-kafka."""
    from confluent_kafka.admin import ConfigResource, ConfigSource, ResourceType
    from kafka.admin import ConfigResource as KConfigResource
    from kafka.admin import ConfigResourceType, KafkaAdminClient

    legacy = KafkaAdminClient(bootstrap_servers=cluster[2].bootstrap)
    try:
        def alter(configs):
            resource = KConfigResource(ConfigResourceType.BROKER, "", configs=configs)
            (code, message, *_), = legacy.alter_configs([resource]).resources
            return code, message

        assert alter({"log.retention.ms": "86400000"}) == (0, None)
        code, message = alter({"num.partitions": "3"})
        assert code == 42 and "Cannot update these configs dynamically" in message, message
    finally:
        legacy.close()
    admin = AdminClient({"bootstrap.servers": cluster[0].bootstrap})
    for node_id in (1, 2, 3):
        deadline = time.monotonic() + 10
        while True:
            resource = ConfigResource(ResourceType.BROKER, str(node_id))
            configs = admin.describe_configs([resource])[resource].result(timeout=30)
            entry = configs["log.retention.ms"]
            if entry.value == "86400000":
                break
            assert time.monotonic() < deadline, f"node {node_id}: {entry}"
            time.sleep(0.2)
        assert entry.source == ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG.value, entry
        assert not entry.is_read_only
        assert configs["num.partitions"].is_read_only


def test_a_consumer_group_keeps_its_committed_offsets_when_its_coordinator_is_killed(cluster):
    """Two confluent-kafka consumers of one group commit synchronously while
    the coordinator of the group (the leader of its __consumer_offsets
    partition) is killed with SIGKILL: the group moves to another node,
    every commit acknowledged before the kill is still there, consuming
    goes on, and a fresh member of the group resumes at the committed end."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

    bootstrap = ",".join(n.bootstrap for n in cluster)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("work", num_partitions=4, replication_factor=3)])["work"].result(30)
    total = 400
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(total):
        producer.produce("work", key=str(i % 4).encode(), value=str(i).encode(), partition=i % 4)
    assert producer.flush(60) == 0

    def consumer():
        return Consumer({
            "bootstrap.servers": bootstrap, "group.id": "g", "enable.auto.commit": False,
            "auto.offset.reset": "earliest", "session.timeout.ms": 10000,
            "heartbeat.interval.ms": 1000,
        })

    consumers = [consumer(), consumer()]
    for c in consumers:
        c.subscribe(["work"])
    seen = set()
    acked = {}  # partition -> highest next-offset whose commit was acknowledged
    killed = None

    def commit(c, msg):
        tp = TopicPartition("work", msg.partition(), msg.offset() + 1)
        for _ in range(30):
            try:
                c.commit(offsets=[tp], asynchronous=False)
                acked[msg.partition()] = max(acked.get(msg.partition(), 0), msg.offset() + 1)
                return
            except KafkaException as e:
                # A rebalance took the partition away: its new owner reads
                # from the last acknowledged commit. Anything else is
                # retriable while the group moves to another coordinator.
                if e.args[0].code() in (KafkaError.REBALANCE_IN_PROGRESS,
                                        KafkaError.ILLEGAL_GENERATION,
                                        KafkaError.UNKNOWN_MEMBER_ID):
                    return
                time.sleep(0.5)
        raise AssertionError(f"commit of {tp} never acknowledged")

    deadline = time.monotonic() + 180
    while len(seen) < total:
        assert time.monotonic() < deadline, f"consumed {len(seen)} of {total}; acked {acked}"
        for c in consumers:
            msg = c.poll(0.2)
            if msg is None or msg.error():
                continue
            seen.add(int(msg.value()))
            commit(c, msg)
        if killed is None and len(seen) >= total // 3:
            described = admin.describe_consumer_groups(["g"])["g"].result(timeout=30)
            killed = described.coordinator.id
            before = dict(acked)
            cluster[killed - 1].kill()
    for c in consumers:
        c.close()
    assert killed is not None and before, "the coordinator was killed before any commit"

    # A new member of the group starts where the acknowledged commits left it.
    fresh = Consumer({"bootstrap.servers": bootstrap, "group.id": "g", "enable.auto.commit": False})
    committed = fresh.committed([TopicPartition("work", p) for p in range(4)], timeout=60)
    by_partition = {tp.partition: tp.offset for tp in committed}
    for p, offset in before.items():
        assert by_partition[p] >= offset, (p, by_partition, before)
    assert by_partition == {p: total // 4 for p in range(4)}, (by_partition, acked)
    fresh.close()
    described = admin.describe_consumer_groups(["g"])["g"].result(timeout=30)
    assert described.coordinator.id != killed


def test_transactions_survive_the_loss_of_their_coordinators_node(cluster):
    """Consume-transform-produce with a transactional confluent-kafka
    producer on three nodes; the controller (the transaction coordinator) is
    killed with SIGKILL while a transaction is open. The next controller
    finishes or aborts what was prepared, the producer re-initialises, and
    the output holds every input transformed exactly once, in order, with
    the group's offset at the end."""
    from confluent_kafka import Consumer, KafkaException, OFFSET_BEGINNING, Producer, TopicPartition

    bootstrap = ",".join(n.bootstrap for n in cluster)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for t in ("in", "out"):
        admin.create_topics([NewTopic(t, num_partitions=1, replication_factor=3)])[t].result(30)
    total = 300
    src = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True})
    for i in range(total):
        src.produce("in", value=str(i).encode())
    assert src.flush(60) == 0

    def committed():
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ctp"})
        got = c.committed([TopicPartition("in", 0)], timeout=60)[0].offset
        c.close()
        return max(got, 0)

    killed = None
    done = 0
    deadline = time.monotonic() + 240
    while done < total:
        assert time.monotonic() < deadline, f"transformed {done} of {total}"
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "ctp",
                      "isolation.level": "read_committed", "enable.auto.commit": False,
                      "auto.offset.reset": "earliest", "session.timeout.ms": 10000})
        c.subscribe(["in"])
        p = Producer({"bootstrap.servers": bootstrap, "transactional.id": "ctp-1",
                      "transaction.timeout.ms": 15000})
        try:
            p.init_transactions(90)
            while done < total and time.monotonic() < deadline:
                batch = [m for m in c.consume(25, 1.0) if m.error() is None]
                if not batch:
                    continue
                p.begin_transaction()
                for m in batch:
                    p.produce("out", value=str(int(m.value()) * 3).encode())
                if killed is None and done >= total // 3:
                    p.flush(30)
                    killed = admin.describe_cluster().result(30).controller.id
                    cluster[killed - 1].kill()
                p.send_offsets_to_transaction(
                    [TopicPartition("in", 0, batch[-1].offset() + 1)],
                    c.consumer_group_metadata(), 90)
                p.commit_transaction(90)
                done = batch[-1].offset() + 1
        except KafkaException:
            # The transaction could not complete across the failover: start
            # again from what the group committed (the rest was aborted).
            done = committed()
        finally:
            c.close()
    assert killed is not None
    assert committed() == total
    reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "check",
                       "isolation.level": "read_committed", "enable.auto.commit": False})
    reader.assign([TopicPartition("out", 0, OFFSET_BEGINNING)])
    got = []
    quiet = time.monotonic() + 60
    while time.monotonic() < quiet and len(got) < total:
        m = reader.poll(0.5)
        if m is not None and m.error() is None:
            got.append(int(m.value()))
    reader.close()
    assert got == [i * 3 for i in range(total)], (len(got), got[:20])
    survivors = ",".join(n.bootstrap for i, n in enumerate(cluster, 1) if i != killed)
    after = AdminClient({"bootstrap.servers": survivors})
    assert after.describe_cluster().result(60).controller.id != killed

"""Three real nodes on 127.0.0.1-3 with inter-node mTLS from `veil certs
init --nodes`: they form a quorum and turn ready, a replicated topic shows
the replication and controller families on /metrics, and a node stopped
with SIGTERM (a rolling restart's first step) exits cleanly within the
grace period the deployments give it."""
import socket
import time

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from conftest import Broker, veil, wait_for
from manifests import shutdown_budget_s

IDS = [1, 2, 3]


def free_port(ip):
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def values(text, name):
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    pki = tmp_path_factory.mktemp("pki")
    veil("certs", "init", "--dir", str(pki), "--nodes", "1,2,3",
         "--hosts", "127.0.0.1,127.0.0.2,127.0.0.3")
    voters = [f"{i}@127.0.0.{i}:{free_port(f'127.0.0.{i}')}" for i in IDS]
    nodes = {}
    try:
        for i in IDS:
            d = tmp_path_factory.mktemp(f"node-{i}")
            nodes[i] = Broker(f"""
node_id = {i}
data_dir = "{d}/data"
log_format = "json"
[[listeners]]
name = "PLAINTEXT"
bind = "127.0.0.{i}:0"
[admin]
bind = "127.0.0.{i}:0"
[topics]
default_replication_factor = 3
[network]
shutdown_timeout_ms = 20000
[cluster]
voters = {voters!r}
[cluster.tls]
cert_file = "{pki}/node-{i}.pem"
key_file = "{pki}/node-{i}-key.pem"
ca_file = "{pki}/ca.pem"
""".replace("'", '"'), dir=str(d))
        for n in nodes.values():
            wait_for(lambda: n.http_get("/healthz")[0] == 200, timeout=60, what="a ready node")
        yield nodes
    finally:
        for n in nodes.values():
            n.stop()


def test_a_replicated_topic_shows_replication_and_controller_metrics(cluster):
    bootstrap = ",".join(n.listeners["PLAINTEXT"] for n in cluster.values())
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic("replicated", 3, 3)])["replicated"].result(30)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    for i in range(30):
        p.produce("replicated", value=f"r{i}", partition=i % 3)
    assert p.flush(30) == 0

    def scrape():
        return {i: n.http_get("/metrics")[1] for i, n in cluster.items()}

    def settled():
        texts = scrape()
        lags = [s for t in texts.values() for s in values(t, "veil_replica_lag_messages")]
        under = sum(s.value for t in texts.values() for s in values(t, "veil_under_replicated_partitions"))
        return len(lags) == 6 and under == 0
    wait_for(settled, timeout=60, what="every follower in sync")
    texts = scrape()
    assert sum(values(t, "veil_controller_active")[0].value for t in texts.values()) == 1
    assert {values(t, "veil_brokers_registered")[0].value for t in texts.values()} == {3}
    assert all(s.value == 0 for t in texts.values() for s in values(t, "veil_replica_lag_messages"))
    for t in texts.values():
        assert values(t, "veil_under_min_isr_partitions")[0].value == 0


def test_sigterm_stops_a_node_cleanly_within_the_grace_period(cluster):
    node = cluster[3]
    started = time.monotonic()
    assert node.stop() == 0, node.log()
    took = time.monotonic() - started
    assert took < shutdown_budget_s({"network": {"shutdown_timeout_ms": 20000}}), took

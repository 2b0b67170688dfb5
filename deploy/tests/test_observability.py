"""A live broker's /metrics and logs: the exposition parses with a
Prometheus parser, promtool's lint accepts it, every family of
deploy/metrics.txt is there with its type (and nothing else), the new
families count what they should, and JSON logs are one object per line
with no secret in them."""
import json
import os
import subprocess

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families

from conftest import DEPLOY, Broker, require_tool, veil, wait_for

ADMIN_PASSWORD = "admin-Pw-7c1e9d"
WRONG_PASSWORD = "wrong-Pw-55ab20"
SCRAM_PASSWORD = "bob-Scram-Pw-0f3d8e"
SECRETS = [ADMIN_PASSWORD, WRONG_PASSWORD, SCRAM_PASSWORD]


def documented():
    """{name: (type, conditional)} from deploy/metrics.txt: conditional families
    (marked `cluster` or `compacted`) have series only on some brokers."""
    out = {}
    with open(os.path.join(DEPLOY, "metrics.txt")) as f:
        for line in f:
            words = line.split("#", 1)[0].split()
            if words:
                out[words[0]] = (words[1], words[2:] in (["cluster"], ["compacted"]))
    return out


def expected_families():
    return {name: kind for name, (kind, _) in documented().items()}


def family_name(f):
    # The parser drops a counter's _total suffix from the family name.
    return f.name + "_total" if f.type == "counter" else f.name


def sasl(broker, user="admin", password=ADMIN_PASSWORD, **extra):
    return {
        "bootstrap.servers": broker.listeners["SASL"],
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": password,
        **extra,
    }


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """A broker that has seen produce, fetch, a consumer group, a failed
    login, an ACL denial and a SCRAM user change; a consumer stays connected
    while /metrics is scraped."""
    d = tmp_path_factory.mktemp("observed")
    users = veil("user", "hash-plain", "admin", "--iterations", "4096",
                 env={"VEIL_USER_PASSWORD": ADMIN_PASSWORD}).stdout
    (d / "plain-users.toml").write_text(users)
    config = f"""
data_dir = "{d}/data"
log_format = "json"
[[listeners]]
name = "PLAIN"
bind = "127.0.0.1:0"
[[listeners]]
name = "SASL"
protocol = "SASL_PLAINTEXT"
bind = "127.0.0.1:0"
sasl_mechanisms = ["PLAIN", "SCRAM-SHA-256"]
[admin]
bind = "127.0.0.1:0"
[sasl]
plain_users_file = "{d}/plain-users.toml"
max_failure_delay_ms = 100
[authorizer]
enabled = true
super_users = ["User:admin"]
[groups]
initial_rebalance_delay_ms = 0
"""
    broker = Broker(config, env={"VEIL_LOG": "debug"}, dir=str(d))
    try:
        admin = AdminClient(sasl(broker))
        for f in admin.create_topics([NewTopic("telemetry", 2, 1)]).values():
            f.result(30)
        p = Producer(sasl(broker, acks="all"))
        for i in range(20):
            p.produce("telemetry", key=f"k{i}", value=f"reading {i}", partition=i % 2)
        assert p.flush(30) == 0

        c = Consumer(sasl(broker, **{"group.id": "dashboards", "enable.auto.commit": False,
                                    "auto.offset.reset": "earliest"}))
        c.assign([TopicPartition("telemetry", 0, 0)])
        got = []
        while len(got) < 4:
            m = c.poll(10)
            assert m is not None, "no record within 10 s"
            assert m.error() is None, m.error()
            got.append(m)
        c.commit(message=got[-1], asynchronous=False)

        # A wrong password, and an anonymous client that may do nothing.
        bad = AdminClient(sasl(broker, password=WRONG_PASSWORD))
        with pytest.raises(KafkaException):
            bad.list_topics(timeout=5)
        anon = AdminClient({"bootstrap.servers": broker.listeners["PLAIN"]})
        with pytest.raises(KafkaException):
            anon.create_topics([NewTopic("forbidden", 1, 1)])["forbidden"].result(30)

        veil("user", "-b", broker.listeners["SASL"], "add", "bob", env={
            "VEIL_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "VEIL_SASL_MECHANISM": "PLAIN",
            "VEIL_USER": "admin", "VEIL_PASSWORD": ADMIN_PASSWORD,
            "VEIL_USER_PASSWORD": SCRAM_PASSWORD})

        status, text = broker.http_get("/metrics")
        assert status == 200
        yield broker, text
        c.close()
    finally:
        broker.stop()


def samples(text, name, **labels):
    out = []
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                out.append(s.value)
    return out


def test_metrics_parse_and_name_exactly_the_documented_families(observed):
    _, text = observed
    families = {family_name(f): f.type for f in text_string_to_metric_families(text)}
    want = expected_families()
    cluster_only = {n for n, (_, c) in documented().items() if c}
    missing = {n: k for n, k in want.items() if n not in families and n not in cluster_only}
    assert not missing, f"families missing from /metrics: {missing}"
    wrong = {n: (families[n], k) for n, k in want.items() if n in families and families[n] != k}
    assert not wrong, f"families of another type (exported, documented): {wrong}"
    undocumented = sorted(n for n in families if n.startswith("veil_") and n not in want)
    assert not undocumented, f"exported but not in deploy/metrics.txt: {undocumented}"


def test_promtool_lint_accepts_the_exposition(observed):
    promtool = require_tool("promtool")
    _, text = observed
    p = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_new_families_count_what_they_say(observed):
    _, text = observed
    assert samples(text, "veil_topic_bytes_in_total", topic="telemetry")[0] > 0
    assert samples(text, "veil_topic_bytes_out_total", topic="telemetry")[0] > 0
    assert samples(text, "veil_partition_log_segments", topic="telemetry", partition="0") == [1]
    assert samples(text, "veil_group_commit_batch_records_count")[0] >= 1
    assert samples(text, "veil_group_lag", group="dashboards", topic="telemetry", partition="0") == [6]
    assert samples(text, "veil_sasl_authentications_total", mechanism="PLAIN", result="failure")[0] >= 1
    assert samples(text, "veil_sasl_authentications_total", mechanism="SCRAM-SHA-256", result="failure") == [0]
    assert sum(samples(text, "veil_authorization_decisions_total", decision="deny")) >= 1
    assert samples(text, "veil_connections", listener="SASL", principal_class="sasl")[0] >= 1
    assert samples(text, "veil_blind_resolves_total", result="refused") == [0]
    assert samples(text, "veil_data_dir_capacity_bytes")[0] >= samples(text, "veil_data_dir_available_bytes")[0] > 0
    assert samples(text, "veil_build_info")[0] == 1


def test_connections_leave_the_gauge_when_they_close(observed):
    import socket
    broker, _ = observed

    def anonymous():
        _, text = broker.http_get("/metrics")
        return sum(samples(text, "veil_connections", listener="PLAIN", principal_class="anonymous"))
    before = anonymous()
    host, port = broker.listeners["PLAIN"].rsplit(":", 1)
    conns = [socket.create_connection((host, int(port))) for _ in range(3)]
    wait_for(lambda: anonymous() == before + 3, what="three more anonymous connections")
    for c in conns:
        c.close()
    wait_for(lambda: anonymous() == before, what="the closed connections to leave veil_connections")


def test_json_logs_are_one_object_per_line_without_secrets(observed):
    broker, _ = observed
    log = broker.log()
    lines = [l for l in log.splitlines() if l.strip()]
    assert len(lines) > 10
    events = []
    for line in lines:
        e = json.loads(line)
        assert {"timestamp", "level", "target"} <= e.keys(), line
        events.append(e)
    assert any(e.get("message") == "SASL authentication failed" for e in events), "debug events logged"
    for secret in SECRETS:
        assert secret not in log, f"a password appears in the log"

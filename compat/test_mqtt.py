"""The MQTT front end with real MQTT clients (Debian's mosquitto_pub and
mosquitto_sub, Python's paho-mqtt) and a Kafka client (confluent-kafka) on
the same topics: MQTT 3.1.1 and 5.0 publishes at QoS 0 and 1 read by a Kafka
consumer and by MQTT subscribers, Kafka records delivered to MQTT
subscribers, wildcards, retained messages, a persistent session that
missed messages while away, kill -9 after PUBACK, refusals with their
reason codes (unmapped topic, wrong password, no credentials, ACL deny,
no client certificate), MQTT 3.1 and QoS 2, and MQTTS."""
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition, OFFSET_BEGINNING

from conftest import BIN, Broker, create_topic

paho = pytest.importorskip("paho.mqtt.client")
from paho.mqtt.properties import Properties  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402

mosquitto = pytest.mark.skipif(shutil.which("mosquitto_pub") is None,
                               reason="mosquitto-clients not installed")

MAPPINGS = """
[[mqtt.mappings]]
filter = "factory/+/line/#"
topic = "telemetry"

[[mqtt.mappings]]
filter = "alarms/+/#"
topic = "alarms"
key = "site-{1}"
"""


def write_config(d, body):
    path = os.path.join(d, "veil.toml")
    with open(path, "w") as f:
        f.write(body)
    return path


def mqtt_port(broker, name="MQTT"):
    host, port = broker.listeners[f"mqtt:{name}"].rsplit(":", 1)
    return host, int(port)


@pytest.fixture
def mqtt_broker():
    d = tempfile.mkdtemp(prefix="veil-mqtt-")
    config = write_config(d, """
[mqtt]
enabled = true
[[mqtt.listeners]]
name = "MQTT"
bind = "127.0.0.1:0"
allow_anonymous = true
""" + MAPPINGS)
    b = Broker(extra_args=["--config", config])
    create_topic(b, "telemetry", 1)
    create_topic(b, "alarms", 1)
    yield b
    b.close()
    shutil.rmtree(d, ignore_errors=True)


def consume(broker, topic, expected, timeout=30):
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "g-" + uuid.uuid4().hex,
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
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


def mosquitto_pub(host, port, *args, timeout=30):
    return subprocess.run(["mosquitto_pub", "-h", host, "-p", str(port), *args],
                          capture_output=True, text=True, timeout=timeout)


class Client:
    """A paho client that records what it receives and every ack."""

    def __init__(self, host, port, client_id=None, v5=False, clean=True, expiry=None,
                 user=None, password=None):
        self.v5 = v5
        proto = paho.MQTTv5 if v5 else paho.MQTTv311
        kwargs = {} if v5 else {"clean_session": clean}
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2,
                             client_id=client_id or "c-" + uuid.uuid4().hex[:8],
                             protocol=proto, **kwargs)
        if user is not None:
            self.c.username_pw_set(user, password)
        self.messages = []
        self.lock = threading.Condition()
        self.connack = None
        self.session_present = None
        self.subacks = {}
        self.pubacks = {}
        self.c.on_connect = self._on_connect
        self.c.on_message = self._on_message
        self.c.on_subscribe = self._on_subscribe
        self.c.on_publish = self._on_publish
        self.c.on_disconnect = self._on_disconnect
        self.disconnect_reason = None
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            if expiry is not None:
                props.SessionExpiryInterval = expiry
        self.c.connect(host, port, keepalive=30,
                       clean_start=clean if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                       properties=props)
        self.c.loop_start()
        self.wait(lambda: self.connack is not None, "CONNACK")

    def _on_connect(self, client, userdata, flags, reason, properties):
        with self.lock:
            self.connack = reason
            self.session_present = flags.session_present
            self.lock.notify_all()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append(msg)
            self.lock.notify_all()

    def _on_subscribe(self, client, userdata, mid, reasons, properties):
        with self.lock:
            self.subacks[mid] = reasons
            self.lock.notify_all()

    def _on_publish(self, client, userdata, mid, reason, properties):
        with self.lock:
            self.pubacks[mid] = reason
            self.lock.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        with self.lock:
            self.disconnect_reason = reason
            self.lock.notify_all()

    def wait(self, cond, what, timeout=20):
        with self.lock:
            assert self.lock.wait_for(cond, timeout), f"no {what} within {timeout}s"

    def subscribe(self, topic, qos=1):
        _, mid = self.c.subscribe(topic, qos)
        self.wait(lambda: mid in self.subacks, "SUBACK")
        return self.subacks[mid]

    def publish(self, topic, payload, qos=1, retain=False, props=None):
        info = self.c.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if qos > 0:
            self.wait(lambda: info.mid in self.pubacks, "PUBACK")
            return self.pubacks[info.mid]
        return None

    def received(self, n, timeout=20):
        self.wait(lambda: len(self.messages) >= n, f"{n} messages", timeout)
        return list(self.messages)

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


@mosquitto
@pytest.mark.parametrize("version", ["mqttv311", "mqttv5"])
@pytest.mark.parametrize("qos", ["0", "1"])
def test_mosquitto_pub_is_read_by_a_kafka_consumer(mqtt_broker, version, qos):
    host, port = mqtt_port(mqtt_broker)
    args = ["-V", version, "-q", qos, "-t", "factory/7/line/3/temp", "-m", "21.5"]
    if version == "mqttv5":
        args += ["-D", "publish", "user-property", "unit", "C"]
    out = mosquitto_pub(host, port, *args)
    assert out.returncode == 0, out.stderr
    got = consume(mqtt_broker, "telemetry", 1)
    assert [(m.key(), m.value()) for m in got] == [(b"factory/7/line/3/temp", b"21.5")]
    if version == "mqttv5":
        assert dict(got[0].headers()) == {"unit": b"C"}


def test_key_template_and_paho_v5_properties_round_trip(mqtt_broker):
    host, port = mqtt_port(mqtt_broker)
    sub = Client(host, port, v5=True)
    assert [r.value for r in sub.subscribe("alarms/#")] == [1]
    pub = Client(host, port, v5=True)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("severity", "high")]
    props.ContentType = "text/plain"
    assert pub.publish("alarms/berlin/fire", b"smoke", props=props).value == 0
    # Kafka: the key from the rule's template, the MQTT topic in a header.
    got = consume(mqtt_broker, "alarms", 1)
    assert got[0].key() == b"site-berlin"
    headers = dict(got[0].headers())
    assert headers["mqtt.topic"] == b"alarms/berlin/fire"
    assert headers["severity"] == b"high"
    # MQTT: the topic, payload and properties as published.
    m = sub.received(1)[0]
    assert (m.topic, m.payload, m.qos) == ("alarms/berlin/fire", b"smoke", 1)
    assert m.properties.UserProperty == [("severity", "high")]
    assert m.properties.ContentType == "text/plain"
    pub.close()
    sub.close()


def test_kafka_records_reach_mqtt_subscribers_by_wildcard(mqtt_broker):
    host, port = mqtt_port(mqtt_broker)
    plus = Client(host, port)
    assert [r.value for r in plus.subscribe("factory/+/line/1", qos=1)] == [1]
    hash_ = Client(host, port, v5=True)
    hash_.subscribe("factory/#", qos=0)
    p = Producer({"bootstrap.servers": mqtt_broker.bootstrap, "acks": "all"})
    for key, value in [("factory/1/line/1", "a"), ("factory/2/line/1", "b"),
                       ("factory/1/line/2", "c"), ("elsewhere", "x")]:
        p.produce("telemetry", key=key, value=value, headers=[("unit", b"C")])
    assert p.flush(30) == 0
    got = [(m.topic, m.payload) for m in plus.received(2)]
    assert got == [("factory/1/line/1", b"a"), ("factory/2/line/1", b"b")]
    got = hash_.received(3)
    # In order per partition; a key that no rule maps to this topic is never delivered.
    assert [(m.topic, m.payload, m.qos) for m in got] == [
        ("factory/1/line/1", b"a", 0), ("factory/2/line/1", b"b", 0), ("factory/1/line/2", b"c", 0)]
    assert got[0].properties.UserProperty == [("unit", "C")]
    time.sleep(0.5)
    assert len(plus.messages) == 2 and len(hash_.messages) == 3
    plus.close()
    hash_.close()


@mosquitto
def test_kafka_record_to_mosquitto_sub(mqtt_broker):
    host, port = mqtt_port(mqtt_broker)
    sub = subprocess.Popen(["mosquitto_sub", "-h", host, "-p", str(port), "-q", "1", "-v",
                            "-t", "factory/+/line/#", "-C", "1", "-W", "30"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p = Producer({"bootstrap.servers": mqtt_broker.bootstrap, "acks": "all"})
    # mosquitto_sub says nothing once subscribed: produce until it has one.
    deadline = time.monotonic() + 30
    while sub.poll() is None and time.monotonic() < deadline:
        p.produce("telemetry", key="factory/9/line/4", value="42")
        p.flush(10)
        time.sleep(0.3)
    out, err = sub.communicate(timeout=30)
    assert sub.returncode == 0, err
    assert out.strip() == "factory/9/line/4 42"


@mosquitto
def test_retained_message_reaches_a_later_subscriber(mqtt_broker):
    host, port = mqtt_port(mqtt_broker)
    out = mosquitto_pub(host, port, "-q", "1", "-r", "-t", "factory/1/line/1/state", "-m", "on")
    assert out.returncode == 0, out.stderr
    sub = subprocess.run(["mosquitto_sub", "-h", host, "-p", str(port), "-v", "-t", "factory/#",
                          "-C", "1", "-W", "20", "-F", "%t %p %r"],
                         capture_output=True, text=True, timeout=30)
    assert sub.returncode == 0, sub.stderr
    assert sub.stdout.strip() == "factory/1/line/1/state on 1"


@pytest.mark.parametrize("v5", [False, True])
def test_persistent_session_receives_what_it_missed(mqtt_broker, v5):
    host, port = mqtt_port(mqtt_broker)
    cid = "device-" + uuid.uuid4().hex[:6]
    # MQTT 3.1.1: clean_session = false; MQTT 5: a clean start with a session expiry.
    dev = Client(host, port, client_id=cid, v5=v5, clean=v5, expiry=300)
    assert not dev.session_present
    dev.subscribe("factory/+/line/#", qos=1)
    dev.close()
    pub = Client(host, port)
    for i in range(5):
        assert pub.publish(f"factory/{i}/line/1", f"m{i}".encode()) is not None
    pub.close()
    dev = Client(host, port, client_id=cid, v5=v5, clean=False, expiry=300)
    assert dev.session_present
    got = dev.received(5)
    assert [(m.topic, m.payload) for m in got] == [(f"factory/{i}/line/1", f"m{i}".encode())
                                                   for i in range(5)]
    dev.close()
    # A clean start forgets the session.
    dev = Client(host, port, client_id=cid, v5=v5, clean=True, expiry=0)
    assert not dev.session_present
    dev.close()


def test_persistent_session_survives_a_broker_restart(mqtt_broker):
    host, port = mqtt_port(mqtt_broker)
    cid = "device-" + uuid.uuid4().hex[:6]
    dev = Client(host, port, client_id=cid, clean=False)
    dev.subscribe("factory/#", qos=1)
    dev.close()
    p = Producer({"bootstrap.servers": mqtt_broker.bootstrap, "acks": "all"})
    p.produce("telemetry", key="factory/5/line/5", value="while away")
    assert p.flush(30) == 0
    mqtt_broker.terminate()
    mqtt_broker.start()
    host, port = mqtt_port(mqtt_broker)
    dev = Client(host, port, client_id=cid, clean=False)
    assert dev.session_present
    assert [(m.topic, m.payload) for m in dev.received(1)] == [("factory/5/line/5", b"while away")]
    dev.close()


def test_kill_after_puback_loses_nothing(mqtt_broker):
    host, port = mqtt_port(mqtt_broker)
    pub = Client(host, port)
    n = 200
    infos = [pub.c.publish(f"factory/1/line/{i % 4}", f"r{i}".encode(), qos=1) for i in range(n)]
    pub.wait(lambda: len(pub.pubacks) == n, f"{n} PUBACKs", timeout=60)
    assert all(pub.pubacks[i.mid].value == 0 for i in infos)
    mqtt_broker.proc.kill()
    mqtt_broker.proc.wait(timeout=30)
    mqtt_broker.start()
    got = consume(mqtt_broker, "telemetry", n)
    assert sorted(m.value() for m in got) == sorted(f"r{i}".encode() for i in range(n))


def test_unmapped_topics_are_refused_with_a_reason(mqtt_broker):
    host, port = mqtt_port(mqtt_broker)
    c5 = Client(host, port, v5=True)
    reason = c5.publish("nowhere/at/all", b"x")
    assert reason.value == 0x90, reason  # Topic Name invalid
    # Subscriptions no rule maps are refused too.
    assert [r.value for r in c5.subscribe("nowhere/#")] == [0x8F]
    c5.close()
    if shutil.which("mosquitto_pub"):
        # MQTT 3.1.1 has no reason codes: the connection is closed.
        out = mosquitto_pub(host, port, "-q", "1", "-t", "nowhere/at/all", "-m", "x")
        assert out.returncode != 0
    assert consume(mqtt_broker, "telemetry", 1, timeout=3) == []


def test_oversized_packets_are_refused(mqtt_broker):
    host, port = mqtt_port(mqtt_broker)
    c = Client(host, port, v5=True)
    c.c.publish("factory/1/line/1", b"x" * (2 * 1024 * 1024), qos=1)
    c.wait(lambda: c.disconnect_reason is not None, "DISCONNECT")
    assert c.disconnect_reason.value == 0x95  # Packet too large
    c.c.loop_stop()


ADMIN_PW = "admin-" + uuid.uuid4().hex
ALICE_PW = "alice-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def secured():
    """Password and certificate logins, ACLs on, MQTT and MQTTS (mTLS)."""
    d = tempfile.mkdtemp(prefix="veil-mqtt-sec-")
    pki = os.path.join(d, "pki")
    out = subprocess.run([BIN, "certs", "init", "--dir", pki, "--clients", "carol"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    users = subprocess.run([BIN, "user", "hash-plain", "admin"], capture_output=True, text=True,
                           timeout=60, env={**os.environ, "VEIL_USER_PASSWORD": ADMIN_PW})
    assert users.returncode == 0, users.stderr
    with open(os.path.join(d, "plain-users.toml"), "w") as f:
        f.write(users.stdout)
    config = write_config(d, f"""
[[listeners]]
name = "SASL"
protocol = "SASL_PLAINTEXT"
bind = "127.0.0.1:0"
[sasl]
plain_users_file = "{d}/plain-users.toml"
max_failure_delay_ms = 200
[authorizer]
enabled = true
super_users = ["User:admin"]

[mqtt]
enabled = true
[[mqtt.listeners]]
name = "MQTT"
bind = "127.0.0.1:0"
[[mqtt.listeners]]
name = "MQTTS"
bind = "127.0.0.1:0"
[mqtt.listeners.tls]
cert_file = "{pki}/broker.pem"
key_file = "{pki}/broker-key.pem"
ca_file = "{pki}/ca.pem"
client_auth = "required"
principal_mapping_rules = ["RULE:^CN=([^,]+),.*$/$1/", "DEFAULT"]
""" + MAPPINGS)
    # The Kafka listener first: `--listen` replaces the first [[listeners]] bind.
    broker = Broker(extra_args=["--config", config])
    sasl = broker.listeners["SASL"]
    login = {**os.environ, "VEIL_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "VEIL_SASL_MECHANISM": "PLAIN",
             "VEIL_USER": "admin", "VEIL_PASSWORD": ADMIN_PW}

    def veil(*args, env=None):
        out = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60,
                             env={**login, **(env or {})})
        assert out.returncode == 0, out.stderr
        return out

    # A SCRAM user, created over the Kafka protocol like any other.
    veil("user", "-b", sasl, "add", "alice", env={"VEIL_USER_PASSWORD": ALICE_PW})
    veil("topics", "--bootstrap", sasl, "create", "telemetry", "-p", "1")
    veil("topics", "--bootstrap", sasl, "create", "alarms", "-p", "1")
    # alice may write telemetry but not read it; carol (certificate) may read it.
    veil("acl", "-b", sasl, "add", "--topic", "telemetry", "--allow-principal", "User:alice",
         "--operation", "write")
    veil("acl", "-b", sasl, "add", "--topic", "telemetry", "--allow-principal", "User:carol",
         "--operation", "read")
    yield {"broker": broker, "pki": pki}
    broker.close()
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("v5", [False, True])
def test_scram_user_publishes_and_acls_decide(secured, v5):
    host, port = mqtt_port(secured["broker"])
    alice = Client(host, port, v5=v5, user="alice", password=ALICE_PW)
    assert alice.connack.value == 0
    # WRITE on telemetry: accepted; nothing on alarms: refused.
    assert alice.publish("factory/1/line/1", b"ok").value == 0
    if v5:
        assert alice.publish("alarms/x/y", b"no").value == 0x87
        # No READ on telemetry: the subscription is refused.
        assert [r.value for r in alice.subscribe("factory/#")] == [0x87]
    else:
        assert [r.value for r in alice.subscribe("factory/#")] == [0x80]
    alice.close()


# paho reports MQTT 3.1.1 return codes 4 and 5 as the MQTT 5 codes 0x86 and 0x87.
@pytest.mark.parametrize("v5,user,password,code", [
    (True, "alice", "wrong", 0x86), (True, "nobody", "x", 0x86), (True, None, None, 0x87),
    (False, "alice", "wrong", 0x86), (False, None, None, 0x87)])
def test_bad_credentials_are_refused_with_the_right_code(secured, v5, user, password, code):
    host, port = mqtt_port(secured["broker"])
    c = Client(host, port, v5=v5, user=user, password=password)
    assert c.connack.value == code
    c.c.loop_stop()


@mosquitto
def test_mqtts_with_a_device_certificate(secured):
    host, port = mqtt_port(secured["broker"], "MQTTS")
    pki = secured["pki"]
    tls = ["--cafile", f"{pki}/ca.pem", "--insecure"]
    # No client certificate: the TLS handshake fails.
    out = mosquitto_pub(host, port, *tls, "-q", "1", "-t", "factory/1/line/1", "-m", "x")
    assert out.returncode != 0
    # carol's certificate: principal User:carol, who may read but not write.
    sub = subprocess.Popen(["mosquitto_sub", "-h", host, "-p", str(port), *tls,
                            "--cert", f"{pki}/carol.pem", "--key", f"{pki}/carol-key.pem",
                            "-q", "1", "-t", "factory/#", "-C", "1", "-W", "30", "-v"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    alice = Client(*mqtt_port(secured["broker"]), user="alice", password=ALICE_PW)
    deadline = time.monotonic() + 30
    while sub.poll() is None and time.monotonic() < deadline:
        alice.publish("factory/2/line/2", b"tls")
        time.sleep(0.3)
    out, err = sub.communicate(timeout=30)
    assert sub.returncode == 0, err
    assert out.strip() == "factory/2/line/2 tls"
    alice.close()
    denied = mosquitto_pub(host, port, *tls, "--cert", f"{pki}/carol.pem",
                           "--key", f"{pki}/carol-key.pem", "-V", "mqttv5", "-q", "1",
                           "-t", "factory/1/line/1", "-m", "x")
    # mosquitto_pub reports the PUBACK's reason code and still exits 0.
    assert "Not authorized" in denied.stderr, denied.stderr


@mosquitto
def test_protocol_levels_and_qos_2(mqtt_broker):
    host, port = mqtt_port(mqtt_broker)
    # MQTT 3.1 (level 3) is refused with return code 1.
    out = mosquitto_pub(host, port, "-V", "mqttv31", "-t", "factory/1/line/1", "-m", "old")
    assert out.returncode != 0 and "unacceptable protocol version" in out.stderr, out.stderr
    # MQTT 5 clients are told Maximum QoS 1.
    out = mosquitto_pub(host, port, "-V", "mqttv5", "-q", "2", "-t", "factory/1/line/1", "-m", "v5")
    assert "QoS not supported" in out.stderr, out.stderr
    # MQTT 3.1.1 QoS 2 completes its handshake and is stored once.
    out = mosquitto_pub(host, port, "-q", "2", "-t", "factory/1/line/1", "-m", "q2")
    assert out.returncode == 0, out.stderr
    got = consume(mqtt_broker, "telemetry", 2, timeout=5)
    assert [m.value() for m in got] == [b"q2"]


@mosquitto
def test_a_topics_compression_type_applies_to_mqtt_records(mqtt_broker):
    """MQTT records go through the same produce policy as Kafka ones: on a
    topic with compression.type=gzip they are stored as gzip batches."""
    mqtt_broker.veil("topics", "--bootstrap", mqtt_broker.bootstrap, "alter", "alarms",
                     "--set", "compression.type=gzip")
    host, port = mqtt_port(mqtt_broker)
    out = mosquitto_pub(host, port, "-q", "1", "-t", "alarms/9/door", "-m", "open")
    assert out.returncode == 0, out.stderr
    got = consume(mqtt_broker, "alarms", 1)
    assert [(m.key(), m.value()) for m in got] == [(b"site-9", b"open")]
    log = os.path.join(mqtt_broker.dir, "data", "alarms-0", "00000000000000000000.log")
    with open(log, "rb") as f:
        batch = f.read()
    attributes = int.from_bytes(batch[21:23], "big")
    assert attributes & 0x07 == 1, f"codec {attributes & 0x07}, not gzip"

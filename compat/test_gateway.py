"""`veil gateway` with real MQTT clients: paho-mqtt devices publish at QoS 0
and 1 through a gateway run by alice and subscribe with wildcards on a
second gateway run by bob (another key of the same tenant); the remote
broker's disk and log never show an MQTT topic, a clear topic name or a
payload."""
import os
import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest

from conftest import BIN, Broker

PASSPHRASE = "kms passphrase for the gateway test"
DEVICE, DEVICE_PW = "device-1", "device-1-password"


def veil(*args, env=None, input=None):
    out = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "VEIL_LOG": "warn", **(env or {})}, input=input)
    assert out.returncode == 0, f"veil {' '.join(args)}: {out.stderr}"
    return out.stdout


def plain_entry(user, password):
    return veil("user", "hash-plain", user, "--iterations", "4096",
                env={"VEIL_USER_PASSWORD": password})


class Gateway:
    def __init__(self, d, name, user, bootstrap, key):
        devices = os.path.join(d, f"{name}-devices.toml")
        with open(devices, "w") as f:
            f.write(plain_entry(DEVICE, DEVICE_PW))
        config = os.path.join(d, f"{name}.toml")
        with open(config, "w") as f:
            f.write(f'''
users_file = "{devices}"
data_dir = "{d}/{name}-data"

[mqtt]
[[mqtt.listeners]]
name = "MQTT"
bind = "127.0.0.1:0"
[[mqtt.mappings]]
filter = "plant-py/+/line/#"
topic = "py-clear-telemetry"
''')
        self.log_path = os.path.join(d, f"{name}.log")
        self.proc = subprocess.Popen(
            [BIN, "gateway", "--config", config, "--key-file", key, "--bootstrap", bootstrap,
             "--security-protocol", "SASL_PLAINTEXT", "--sasl-mechanism", "PLAIN",
             "--user", user, "--print-addresses"],
            stdout=subprocess.PIPE, stderr=open(self.log_path, "wb"), text=True,
            env={**os.environ, "VEIL_PASSWORD": f"{user}-pw", "VEIL_LOG": "info"})
        found = {}

        def read():
            for line in self.proc.stdout:
                if line.startswith("LISTENING mqtt:MQTT "):
                    found["addr"] = line.split()[2]
                    return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(60)
        assert "addr" in found, "gateway did not start:\n" + self.log()
        self.port = int(found["addr"].rsplit(":", 1)[1])

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def close(self):
        self.proc.kill()
        self.proc.wait(30)


def device(port, client_id):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    c.username_pw_set(DEVICE, DEVICE_PW)
    connected = threading.Event()
    c.on_connect = lambda _c, _u, _f, reason, _p: reason == 0 and connected.set()
    c.connect("127.0.0.1", port)
    c.loop_start()
    # paho does not queue a SUBSCRIBE sent before the CONNACK.
    assert connected.wait(30), "the gateway did not accept the device"
    return c


@pytest.fixture
def setup():
    d = __import__("tempfile").mkdtemp(prefix="veil-gateway-")
    users = os.path.join(d, "plain-users.toml")
    with open(users, "w") as f:
        for u in ("admin", "alice", "bob"):
            f.write(plain_entry(u, f"{u}-pw"))
    config = os.path.join(d, "veil.toml")
    with open(config, "w") as f:
        f.write(f'''
[[listeners]]
name = "SASL"
protocol = "SASL_PLAINTEXT"
bind = "127.0.0.1:0"
[sasl]
plain_users_file = "{users}"
''')
    broker = Broker(extra_args=["--config", config])
    kms = os.path.join(d, "kms")
    kenv = {"VEIL_KMS_DIR": kms, "VEIL_KMS_PASSPHRASE": PASSPHRASE}
    veil("kms", "init", "--kid", "tenant-k1", "--tenant", "plant", "--bits", "2048",
         "--insecure-fast-kdf", env=kenv)
    for u in ("alice", "bob"):
        veil("kms", "add-user", u, "--bootstrap", broker.bootstrap, "--security-protocol",
             "SASL_PLAINTEXT", "--sasl-mechanism", "PLAIN", "--user", "admin",
             env={**kenv, "VEIL_PASSWORD": "admin-pw"})
    gateways = []
    try:
        for name, u in (("gw-a", "alice"), ("gw-b", "bob")):
            gateways.append(Gateway(d, name, u, broker.bootstrap, os.path.join(kms, f"{u}.key")))
        yield broker, gateways
    finally:
        for g in gateways:
            g.close()
        broker.close()


def test_paho_devices_through_two_gateways_leave_nothing_clear_on_the_broker(setup):
    broker, (a, b) = setup
    got, subscribed = [], threading.Event()
    sub = device(b.port, "py-sub")
    sub.on_message = lambda _c, _u, m: got.append((m.topic, m.payload.decode(), m.qos))
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.subscribe("plant-py/+/line/#", qos=1)
    assert subscribed.wait(30)
    time.sleep(1)
    pub = device(a.port, "py-pub")
    sent = []
    for i in range(6):
        topic, payload = f"plant-py/{i % 2}/line/{i}/temp", f"py-secret-reading-{i}"
        info = pub.publish(topic, payload, qos=i % 2)
        info.wait_for_publish(30)
        assert info.is_published()
        sent.append((topic, payload))
    deadline = time.monotonic() + 60
    while len(got) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.2)
    pub.loop_stop()
    sub.loop_stop()
    assert sorted((t, p) for t, p, _ in got) == sorted(sent), got

    needles = [b"plant-py", b"py-clear-telemetry", b"py-secret-reading", b"line/"]
    seen = 0
    for root, _, files in os.walk(os.path.join(broker.dir, "data")):
        for name in files:
            with open(os.path.join(root, name), "rb") as f:
                data = f.read()
            seen += len(data)
            for n in needles:
                assert n not in data, f"{n!r} in {os.path.join(root, name)}"
    assert seen > 0
    log = broker.log().encode()
    for n in needles:
        assert n not in log, f"{n!r} in the broker log"

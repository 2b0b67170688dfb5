"""TLS, mTLS and SASL with real clients (kcat and confluent-kafka): correct
credentials work end to end; wrong passwords, unknown users, missing,
expired or foreign-CA client certificates and plaintext clients on a TLS
port are refused. A recording proxy checks nothing travels in clear."""
import datetime
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient

from conftest import BIN, Broker

kcat_missing = pytest.mark.skipif(shutil.which("kcat") is None, reason="kcat not installed")

ADMIN_PW = "admin-" + uuid.uuid4().hex
ALICE_PW = "alice-" + uuid.uuid4().hex


def run(*args, env=None, input=None):
    out = subprocess.run(args, capture_output=True, text=True, timeout=60,
                         env={**os.environ, **(env or {})}, input=input)
    return out


def sign_extra_certs(d):
    """An expired client certificate from the dev CA, and one from another CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Veil development"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write(stem, cert, key):
        with open(os.path.join(d, stem + ".pem"), "wb") as f:
            f.write(cert.public_bytes(serialization.Encoding.PEM))
        with open(os.path.join(d, stem + "-key.pem"), "wb") as f:
            f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))

    def leaf(cn, issuer_name, issuer_key, start, end):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
                .sign(issuer_key, hashes.SHA256()))
        return cert, key

    now = datetime.datetime.now(datetime.timezone.utc)
    with open(os.path.join(d, "ca.pem"), "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(os.path.join(d, "ca-key.pem"), "rb") as f:
        ca_key = serialization.load_pem_private_key(f.read(), None)
    write("expired", *leaf("expired", ca.subject, ca_key, now - datetime.timedelta(days=30),
                           now - datetime.timedelta(days=1)))
    other_key = ec.generate_private_key(ec.SECP256R1())
    write("foreign", *leaf("foreign", name("Another CA"), other_key,
                           now - datetime.timedelta(days=1), now + datetime.timedelta(days=30)))


class Proxy:
    """A loopback TCP proxy that records every byte in both directions."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.target = None
        self.captured = bytearray()
        self.lock = threading.Lock()
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self.pump, args=(a, b), daemon=True).start()

    def pump(self, src, dst):
        try:
            while data := src.recv(65536):
                with self.lock:
                    self.captured += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


@pytest.fixture(scope="module")
def env():
    d = tempfile.mkdtemp(prefix="veil-security-")
    pki = os.path.join(d, "pki")
    out = run(BIN, "certs", "init", "--dir", pki, "--clients", "alice")
    assert out.returncode == 0, out.stderr
    assert "ssl.certificate.location=" in out.stdout
    sign_extra_certs(pki)
    users = run(BIN, "user", "hash-plain", "admin", env={"VEIL_USER_PASSWORD": ADMIN_PW})
    assert users.returncode == 0, users.stderr
    assert ADMIN_PW not in users.stdout
    with open(os.path.join(d, "plain-users.toml"), "w") as f:
        f.write(users.stdout)
    proxy = Proxy()
    tls = f'cert_file = "{pki}/broker.pem"\nkey_file = "{pki}/broker-key.pem"\n'
    config = os.path.join(d, "veil.toml")
    with open(config, "w") as f:
        f.write(f"""
[[listeners]]
name = "SSL"
protocol = "SSL"
bind = "127.0.0.1:0"
advertised = "127.0.0.1:{proxy.port}"
[listeners.tls]
{tls}
[[listeners]]
name = "MTLS"
protocol = "SSL"
bind = "127.0.0.1:0"
[listeners.tls]
{tls}ca_file = "{pki}/ca.pem"
client_auth = "required"

[[listeners]]
name = "SASL_SSL"
protocol = "SASL_SSL"
bind = "127.0.0.1:0"
[listeners.tls]
{tls}
[sasl]
plain_users_file = "{d}/plain-users.toml"
max_failure_delay_ms = 300

[topics]
auto_create = true
""")
    broker = Broker(extra_args=["--config", config])
    host, port = broker.listeners["SSL"].rsplit(":", 1)
    proxy.target = (host, int(port))
    sasl = broker.listeners["SASL_SSL"]
    login = {"VEIL_SECURITY_PROTOCOL": "SASL_SSL", "VEIL_SSL_CA": f"{pki}/ca.pem",
             "VEIL_SASL_MECHANISM": "PLAIN", "VEIL_USER": "admin", "VEIL_PASSWORD": ADMIN_PW}
    out = run(BIN, "user", "-b", sasl, "add", "alice", env={**login, "VEIL_USER_PASSWORD": ALICE_PW})
    assert out.returncode == 0, out.stderr
    out = run(BIN, "user", "-b", sasl, "list", env=login)
    assert "alice" in out.stdout and "SCRAM-SHA-512" in out.stdout, out.stderr
    yield {"broker": broker, "pki": pki, "proxy": proxy}
    proxy.close()
    broker.close()
    shutil.rmtree(d, ignore_errors=True)


def settings(env, listener, cert=None, mechanism=None, user=None, password=None):
    """librdkafka properties for a listener, as kcat -X and confluent-kafka take them."""
    pki = env["pki"]
    s = {"bootstrap.servers": env["broker"].listeners[listener],
         "ssl.ca.location": f"{pki}/ca.pem"}
    if listener == "SSL":
        s["bootstrap.servers"] = f"127.0.0.1:{env['proxy'].port}"
    if mechanism:
        s.update({"security.protocol": "sasl_ssl", "sasl.mechanisms": mechanism,
                  "sasl.username": user, "sasl.password": password})
    else:
        s["security.protocol"] = "ssl"
    if cert:
        s.update({"ssl.certificate.location": f"{pki}/{cert}.pem",
                  "ssl.key.location": f"{pki}/{cert}-key.pem"})
    return s


def kcat(s, *args, input=None):
    x = []
    for k, v in s.items():
        x += ["-b", v] if k == "bootstrap.servers" else ["-X", f"{k}={v}"]
    return subprocess.run(["kcat", *x, *args], input=input, capture_output=True, text=True,
                          timeout=60)


def kcat_round_trip(s):
    topic = "sec-" + uuid.uuid4().hex[:8]
    out = kcat(s, "-P", "-t", topic, input="hello-secure\n")
    assert out.returncode == 0, out.stderr
    out = kcat(s, "-C", "-e", "-o", "beginning", "-t", topic, "-c", "1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "hello-secure"


GOOD = [("SSL", None, None, None, None),
        ("MTLS", "alice", None, None, None),
        ("SASL_SSL", None, "SCRAM-SHA-512", "alice", ALICE_PW),
        ("SASL_SSL", None, "SCRAM-SHA-256", "alice", ALICE_PW),
        ("SASL_SSL", None, "PLAIN", "admin", ADMIN_PW)]
TLS_REFUSED = [("MTLS", None), ("MTLS", "expired"), ("MTLS", "foreign")]
SASL_REFUSED = [(m, u, p) for m in ("SCRAM-SHA-512", "PLAIN")
                for (u, p) in (("alice", "wrong-password"), ("nobody", ALICE_PW))]


@kcat_missing
@pytest.mark.parametrize("listener,cert,mechanism,user,password", GOOD)
def test_kcat_works_with_right_credentials(env, listener, cert, mechanism, user, password):
    kcat_round_trip(settings(env, listener, cert, mechanism, user, password))


@kcat_missing
@pytest.mark.parametrize("listener,cert", TLS_REFUSED)
def test_kcat_refused_without_a_valid_client_certificate(env, listener, cert):
    out = kcat(settings(env, listener, cert), "-L", "-m", "5")
    assert out.returncode != 0
    assert "SSL" in out.stderr or "alert" in out.stderr, out.stderr


@kcat_missing
@pytest.mark.parametrize("mechanism,user,password", SASL_REFUSED)
def test_kcat_refused_with_bad_sasl_credentials(env, mechanism, user, password):
    out = kcat(settings(env, "SASL_SSL", None, mechanism, user, password), "-L", "-m", "5")
    assert out.returncode != 0
    assert "SASL authentication error" in out.stderr, out.stderr
    assert "invalid credentials" in out.stderr, out.stderr


@kcat_missing
def test_kcat_plaintext_on_a_tls_port_is_refused(env):
    out = subprocess.run(["kcat", "-b", env["broker"].listeners["MTLS"], "-L", "-m", "5"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0


def confluent_round_trip(s, topic=None, payload=None):
    topic = topic or "sec-" + uuid.uuid4().hex[:8]
    payload = payload or b"hello-confluent"
    p = Producer(s)
    p.produce(topic, payload)
    assert p.flush(30) == 0
    c = Consumer({**s, "group.id": "g-" + uuid.uuid4().hex[:6], "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    try:
        from confluent_kafka import TopicPartition
        c.assign([TopicPartition(topic, 0, 0)])
        msg = c.poll(30)
        assert msg is not None and msg.error() is None, msg and msg.error()
        assert msg.value() == payload
    finally:
        c.close()


def confluent_errors(s):
    """Errors reported while trying to fetch metadata with settings `s`."""
    errors = []
    a = AdminClient({**s, "error_cb": errors.append})
    with pytest.raises(Exception):
        a.list_topics(timeout=8)
    # error_cb runs from poll().
    for _ in range(10):
        if errors:
            break
        a.poll(0.5)
    return errors


@pytest.mark.parametrize("listener,cert,mechanism,user,password", GOOD)
def test_confluent_works_with_right_credentials(env, listener, cert, mechanism, user, password):
    confluent_round_trip(settings(env, listener, cert, mechanism, user, password))


@pytest.mark.parametrize("listener,cert", TLS_REFUSED)
def test_confluent_refused_without_a_valid_client_certificate(env, listener, cert):
    errors = confluent_errors(settings(env, listener, cert))
    assert errors, "expected a transport error"
    assert any(e.code() in (KafkaError._TRANSPORT, KafkaError._SSL, KafkaError._ALL_BROKERS_DOWN)
               for e in errors), errors


@pytest.mark.parametrize("mechanism,user,password", SASL_REFUSED)
def test_confluent_refused_with_bad_sasl_credentials(env, mechanism, user, password):
    errors = confluent_errors(settings(env, "SASL_SSL", None, mechanism, user, password))
    auth = [e for e in errors if e.code() == KafkaError._AUTHENTICATION]
    assert auth, errors
    assert "invalid credentials" in auth[0].str()


def test_confluent_plaintext_on_a_tls_port_is_refused(env):
    errors = confluent_errors({"bootstrap.servers": env["broker"].listeners["SASL_SSL"]})
    assert errors


def test_recorded_ssl_session_shows_neither_payload_nor_topic(env):
    proxy = env["proxy"]
    with proxy.lock:
        proxy.captured.clear()
    topic = "clear-topic-" + uuid.uuid4().hex
    payload = ("clear-payload-" + uuid.uuid4().hex).encode()
    confluent_round_trip(settings(env, "SSL"), topic, payload)
    with proxy.lock:
        captured = bytes(proxy.captured)
    assert len(captured) > 1000, "the proxy saw the session"
    assert payload not in captured
    assert topic.encode() not in captured
    assert b"clear-" not in captured

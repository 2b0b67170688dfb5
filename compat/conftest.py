"""Fixtures shared by the real-client suites: a real `veil` broker per test,
on ephemeral loopback ports, with its own data directory."""
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid

import pytest

BIN = os.environ.get("VEIL_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "target", "debug", "veil"
)


class Broker:
    def __init__(self, extra_args=(), host="127.0.0.1"):
        self.dir = tempfile.mkdtemp(prefix="veil-compat-")
        self.extra_args = list(extra_args)
        # The loopback address its listeners bind (127.0.0.x for clusters).
        self.host = host
        self.proc = None
        self.bootstrap = None
        self.admin = None
        self.start()

    def start(self, same_port=False):
        """Start the broker. `same_port=True` listens on the Kafka port it had
        before (clients keep their bootstrap address across a restart); the
        port may still be held briefly after a kill, so binding is retried."""
        listen = self.bootstrap if same_port and self.bootstrap else f"{self.host}:0"
        deadline = time.monotonic() + 60
        while True:
            if self._spawn(listen, deadline):
                return
            retry = same_port and self._exited()
            if not retry or time.monotonic() + 0.2 >= deadline:
                self.proc.kill()
                raise RuntimeError("broker did not start:\n" + self.log())
            time.sleep(0.2)

    def _exited(self):
        try:
            self.proc.wait(timeout=5)
            return True
        except subprocess.TimeoutExpired:
            return False

    def _spawn(self, listen, deadline):
        log = open(os.path.join(self.dir, "broker.log"), "ab")
        self.proc = subprocess.Popen(
            [BIN, "broker", "--data-dir", os.path.join(self.dir, "data"),
             "--listen", listen, "--admin-listen", f"{self.host}:0",
             "--print-addresses", *self.extra_args],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
        )
        found = {}

        def read():
            for line in self.proc.stdout:
                parts = line.split()
                if len(parts) == 3 and parts[0] == "LISTENING":
                    found[parts[1]] = parts[2]
                if "admin" in found and len(found) >= 2:
                    return

        t = threading.Thread(target=read, daemon=True)
        t.start()
        t.join(timeout=max(0, deadline - time.monotonic()))
        if "admin" not in found or len(found) < 2:
            return False
        self.admin = found.pop("admin")
        # Every Kafka listener by name (all are printed before "admin").
        self.listeners = dict(found)
        self.bootstrap = next(iter(found.values()))
        return True

    def log(self):
        with open(os.path.join(self.dir, "broker.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def restart(self, same_port=False):
        self.kill()
        self.start(same_port=same_port)

    def veil(self, *args, check=True):
        out = subprocess.run([BIN, *args], capture_output=True, text=True, timeout=60)
        if check and out.returncode != 0:
            raise AssertionError(f"veil {' '.join(args)} failed: {out.stderr}")
        return out

    def close(self):
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def broker():
    b = Broker()
    yield b
    b.close()


@pytest.fixture
def topic_name():
    return "t-" + uuid.uuid4().hex[:10]


def create_topic(broker, name, partitions=1, *configs):
    args = ["topics", "--bootstrap", broker.bootstrap, "create", name, "-p", str(partitions)]
    for c in configs:
        args += ["--config", c]
    broker.veil(*args)

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
    def __init__(self, extra_args=()):
        self.dir = tempfile.mkdtemp(prefix="veil-compat-")
        self.extra_args = list(extra_args)
        self.proc = None
        self.bootstrap = None
        self.admin = None
        self.start()

    def start(self):
        log = open(os.path.join(self.dir, "broker.log"), "ab")
        self.proc = subprocess.Popen(
            [BIN, "broker", "--data-dir", os.path.join(self.dir, "data"),
             "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
             "--print-addresses", *self.extra_args],
            stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True,
        )
        found = {}
        deadline = time.monotonic() + 60

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
        if "admin" not in found:
            self.proc.kill()
            raise RuntimeError("broker did not start:\n" + self.log())
        self.admin = found.pop("admin")
        self.bootstrap = next(iter(found.values()))

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

    def restart(self):
        self.kill()
        self.start()

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

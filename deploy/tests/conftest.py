"""Shared pieces of the deployment and observability tests: where things
are, and a real `veil` broker started from a TOML config."""
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEPLOY = os.path.join(ROOT, "deploy")
BIN = os.path.abspath(os.environ.get("VEIL_BIN") or os.path.join(ROOT, "target", "debug", "veil"))


def require_tool(name):
    """The path of a command-line tool. scripts/test installs every tool these
    tests use and sets VEIL_DEPLOY_TESTS_STRICT=1, so there a missing tool
    fails; elsewhere the test is skipped."""
    path = shutil.which(name)
    if path:
        return path
    if os.environ.get("VEIL_DEPLOY_TESTS_STRICT") == "1":
        pytest.fail(f"{name} is not installed (scripts/test installs it)")
    pytest.skip(f"{name} is not installed")


class Broker:
    """`veil broker` with a config file, on ephemeral loopback ports. `argv`
    replaces the command (e.g. to run the binary inside a chroot)."""

    def __init__(self, config, env=None, argv=None, dir=None):
        self.dir = dir or tempfile.mkdtemp(prefix="veil-deploy-")
        self.config_path = os.path.join(self.dir, "veil.toml")
        with open(self.config_path, "w") as f:
            f.write(config)
        self.log_path = os.path.join(self.dir, "broker.log")
        argv = argv or [BIN, "broker", "--config", self.config_path]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [*argv, "--print-addresses"],
            stdout=subprocess.PIPE, stderr=open(self.log_path, "wb"),
            stdin=subprocess.DEVNULL, text=True, env=full_env,
        )
        self.listeners = {}
        reader = threading.Thread(target=self._read, daemon=True)
        reader.start()
        reader.join(timeout=60)
        if "admin" not in self.listeners:
            self.stop()
            raise RuntimeError("broker did not start:\n" + self.log())
        self.admin = self.listeners.pop("admin")

    def _read(self):
        for line in self.proc.stdout:
            parts = line.split()
            if len(parts) == 3 and parts[0] == "LISTENING":
                self.listeners[parts[1]] = parts[2]
                if parts[1] == "admin":
                    return

    def http_get(self, path):
        import urllib.error
        import urllib.request
        try:
            with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self):
        """SIGTERM and wait; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def veil(*args, env=None, check=True, input=None):
    """Runs the veil binary; returns the completed process."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    full_env.update(env or {})
    p = subprocess.run([BIN, *args], capture_output=True, text=True, env=full_env,
                       input=input, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"veil {' '.join(args)} failed:\n{p.stdout}\n{p.stderr}")
    return p


def wait_for(predicate, timeout=30, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")

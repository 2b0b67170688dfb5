"""The static binary in an empty chroot that holds exactly what the
container image holds (target/dist/rootfs from scripts/dist, as
deploy/Containerfile copies it): it starts as the image's non-root user,
answers the image's health check, and serves a produce/consume round trip
to clients outside and its own client subcommands inside."""
import os
import re
import shutil
import subprocess
import time

import pytest
from confluent_kafka import Consumer, Producer

from conftest import DEPLOY, Broker

ROOTFS = os.environ.get("VEIL_ROOTFS")
USER = "65532:65532"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    strict = os.environ.get("VEIL_DEPLOY_TESTS_STRICT") == "1"
    if not ROOTFS:
        if strict:
            pytest.fail("VEIL_ROOTFS is not set (scripts/test runs scripts/dist first)")
        pytest.skip("set VEIL_ROOTFS to target/dist/rootfs (scripts/dist) to run")
    if os.geteuid() != 0:
        if strict:
            pytest.fail("chroot needs root")
        pytest.skip("chroot needs root")
    root = tmp_path_factory.mktemp("image") / "rootfs"
    shutil.copytree(ROOTFS, root, symlinks=True)
    # As `COPY --chown=65532:65532` leaves the data volume.
    os.chown(root / "var" / "lib" / "veil", 65532, 65532)
    return root


def contents(root):
    out = set()
    for d, dirs, files in os.walk(root):
        for name in files + [x for x in dirs if not os.listdir(os.path.join(d, x))]:
            out.add(os.path.relpath(os.path.join(d, name), root))
    return out


def test_the_rootfs_is_what_the_containerfile_copies(root):
    assert contents(root) == {"veil", "etc/ssl/certs/ca-certificates.crt", "var/lib/veil"}
    with open(os.path.join(DEPLOY, "Containerfile")) as f:
        text = f.read()
    copied = set(re.findall(r"^COPY (?:--chown=\S+ )?rootfs/(\S+) /\1$", text, re.M))
    assert copied == {"veil", "etc/ssl/certs/ca-certificates.crt", "var/lib/veil"}
    assert re.search(r"^FROM scratch$", text, re.M)
    assert re.search(rf"^USER {USER}$", text, re.M)
    assert 'HEALTHCHECK' in text and '["/veil", "health"]' in text
    # Fully static: no program interpreter, no shared libraries.
    elf = subprocess.run(["readelf", "-lW", "-dW", str(root / "veil")], capture_output=True, text=True).stdout
    assert "interpreter" not in elf and "(NEEDED)" not in elf


def inside(root, *args, **kw):
    return subprocess.run(["chroot", f"--userspec={USER}", str(root), "/veil", *args],
                          capture_output=True, text=True, timeout=60, **kw)


def test_round_trip_in_an_empty_chroot(root):
    # Mounted at /etc/veil/veil.toml, as the image expects.
    config_dir = root / "etc" / "veil"
    config_dir.mkdir()
    config = """
data_dir = "/var/lib/veil"
log_format = "json"
[[listeners]]
name = "PLAINTEXT"
bind = "127.0.0.1:0"
[admin]
bind = "127.0.0.1:0"
"""
    argv = ["chroot", f"--userspec={USER}", str(root), "/veil", "broker", "--config", "/etc/veil/veil.toml"]
    broker = Broker(config, argv=argv, dir=str(config_dir))
    try:
        bootstrap = broker.listeners["PLAINTEXT"]
        health = inside(root, "health", "--address", broker.admin)
        assert health.returncode == 0 and health.stdout.strip() == "ok", health.stderr

        made = inside(root, "topics", "--bootstrap", bootstrap, "create", "chrooted", "-p", "1")
        assert made.returncode == 0, made.stderr

        # In: the static binary's own producer (librdkafka, linked in).
        produced = inside(root, "produce", "--bootstrap", bootstrap, "--topic", "chrooted",
                          input="".join(f"inside {i}\n" for i in range(5)))
        assert produced.returncode == 0, produced.stderr
        # And a client outside, with acks=all (an fsync inside the chroot).
        p = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
        for i in range(5):
            p.produce("chrooted", value=f"outside {i}")
        assert p.flush(30) == 0

        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "out",
                      "auto.offset.reset": "earliest"})
        c.subscribe(["chrooted"])
        got = []
        deadline = time.monotonic() + 60
        while len(got) < 10 and time.monotonic() < deadline:
            m = c.poll(1)
            if m is not None and not m.error():
                got.append(m.value().decode())
        c.close()
        assert sorted(got) == sorted([f"inside {i}" for i in range(5)] + [f"outside {i}" for i in range(5)])

        consumed = inside(root, "consume", "--bootstrap", bootstrap, "--topic", "chrooted",
                          "--from-beginning", "--max-messages", "10", "--timeout-ms", "30000")
        assert consumed.returncode == 0, consumed.stderr
        assert consumed.stdout.split("\n")[:10] == [f"inside {i}" for i in range(5)] + [f"outside {i}" for i in range(5)]

        # The data landed on the volume, owned by the image's user.
        segs = [f for d, _, fs in os.walk(root / "var/lib/veil") for f in fs if f.endswith(".log")]
        assert segs
        assert broker.stop() == 0, broker.log()
    finally:
        broker.stop()


def test_the_built_image_runs_as_non_root_with_a_health_check_and_a_volume():
    path = os.environ.get("VEIL_IMAGE_INSPECT")
    if not path:
        pytest.skip("no image was built (scripts/test builds one with buildah when it can)")
    import json
    with open(path) as f:
        config = json.load(f)["Docker"]["config"]
    assert config["User"] == USER
    assert config["Healthcheck"]["Test"] == ["CMD", "/veil", "health"]
    assert list(config["Volumes"]) == ["/var/lib/veil"]
    assert config["Entrypoint"] == ["/veil"]
    assert config["Cmd"] == ["broker", "--config", "/etc/veil/veil.toml"]

"""deploy/compose: the compose file parses, its pki service is a `veil
certs init` whose output holds every certificate and key the nodes and the
bootstrap service name (through their mounts), each node presents its own
node certificate, and each node's effective config is one the broker
accepts. (No container runtime runs here; compose itself is not started.)"""
import os
import tomllib

import pytest
import yaml

from conftest import DEPLOY, veil
from manifests import certificate, common_name, dns_names, named_files, override, shutdown_budget_s

COMPOSE = os.path.join(DEPLOY, "compose")
NODES = ["veil-1", "veil-2", "veil-3"]


@pytest.fixture(scope="module")
def compose():
    with open(os.path.join(COMPOSE, "compose.yaml")) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def pki(compose, tmp_path_factory):
    """Runs the pki service's command with the host's veil; returns a
    function mapping a path inside a container (through its `pki` volume
    mount) to the generated file."""
    svc = compose["services"]["pki"]
    args = list(svc["command"])
    assert args[:2] == ["certs", "init"]
    dir_in_container = args[args.index("--dir") + 1]
    assert f"pki:{dir_in_container}" in svc["volumes"]
    out = tmp_path_factory.mktemp("pki")
    args[args.index("--dir") + 1] = str(out)
    veil(*args)
    # A second start keeps what the first made.
    before = (out / "ca.pem").read_bytes()
    veil(*args)
    assert (out / "ca.pem").read_bytes() == before

    def host_path(service, path):
        mounts = [v.split(":") for v in compose["services"][service]["volumes"]]
        for m in mounts:
            if m[0] == "pki" and path.startswith(m[1] + "/"):
                return str(out / os.path.relpath(path, m[1]))
        raise AssertionError(f"{service}: {path} is not on the pki volume")
    return host_path


def node_config(compose, name):
    svc = compose["services"][name]
    mounts = dict(reversed(v.split(":")[:2]) for v in svc["volumes"])
    source = mounts["/etc/veil/veil.toml"]
    with open(os.path.join(COMPOSE, source), "rb") as f:
        config = tomllib.load(f)
    return override(config, svc["environment"]), svc


def test_nodes_start_after_the_pki_and_stop_within_their_grace(compose):
    for name in NODES:
        config, svc = node_config(compose, name)
        assert svc["depends_on"]["pki"]["condition"] == "service_completed_successfully"
        assert svc["command"] == ["broker", "--config", "/etc/veil/veil.toml"]
        grace = int(svc["stop_grace_period"].rstrip("s"))
        assert grace >= shutdown_budget_s(config), f"{name}: stop_grace_period {grace}s"
    boot = compose["services"]["bootstrap-admin"]
    assert boot["depends_on"]["veil-1"]["condition"] == "service_healthy"
    published = [p.split(":")[0] for s in compose["services"].values() for p in s.get("ports", [])]
    assert len(published) == len(set(published)), "host ports are unique"


def test_every_certificate_path_exists_in_the_veil_certs_init_output(compose, pki):
    for name in NODES:
        config, _ = node_config(compose, name)
        files = named_files(config)
        assert len(files) >= 7, files
        for path in files:
            assert os.path.isfile(pki(name, path)), f"{name}: {path} is not made by the pki service"
    env = compose["services"]["bootstrap-admin"]["environment"]
    for key in ("VEIL_SSL_CA", "VEIL_SSL_CERT", "VEIL_SSL_KEY"):
        assert os.path.isfile(pki("bootstrap-admin", env[key])), key


def test_each_node_presents_its_own_certificate_for_the_names_it_is_dialled_by(compose, pki):
    for name in NODES:
        config, _ = node_config(compose, name)
        node_id = config["node_id"]
        tls = config["cluster"]["tls"]
        cert = certificate(pki(name, tls["cert_file"]))
        assert common_name(cert) == f"node-{node_id}", name
        host = config["cluster"]["advertised"].rsplit(":", 1)[0]
        assert host in dns_names(cert), f"{name}: {host} not in the node certificate"
        voters = {v.split("@")[0]: v.split("@")[1] for v in config["cluster"]["voters"]}
        assert voters[str(node_id)] == config["cluster"]["advertised"]
        broker_names = set()
        for l in config["listeners"]:
            broker_names |= dns_names(certificate(pki(name, l["tls"]["cert_file"])))
            assert l["advertised"].rsplit(":", 1)[0] in broker_names, (name, l["name"])
    admin = certificate(pki("bootstrap-admin", compose["services"]["bootstrap-admin"]["environment"]["VEIL_SSL_CERT"]))
    config, _ = node_config(compose, "veil-1")
    assert f"User:CN={common_name(admin)},O=Veil development" in config["authorizer"]["super_users"]


def test_the_broker_accepts_each_nodes_config(compose):
    for name in NODES:
        svc = compose["services"][name]
        p = veil("broker", "--config", os.path.join(COMPOSE, "veil.toml"), "--check-config",
                 env={k: str(v) for k, v in svc["environment"].items()})
        assert "configuration is valid" in p.stdout, p.stdout

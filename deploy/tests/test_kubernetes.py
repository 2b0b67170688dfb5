"""deploy/kubernetes: every manifest (and what the kustomization's
generators make) validates offline against the Kubernetes 1.31 schemas in
strict mode; the secrets hold what `veil certs init` writes and every file
the pods name; each pod's effective config is one the broker accepts; and
the StatefulSet's probes, grace period, identity and services fit together.

Kustomize itself cannot be installed from the registries this project uses,
so the kustomization is checked here field by field instead of rendered."""
import os
import re
import tomllib

import kubernetes_validate
import pytest
import yaml

from conftest import DEPLOY, veil
from manifests import certificate, common_name, dns_names, named_files, override, shutdown_budget_s

K8S = os.path.join(DEPLOY, "kubernetes")
VERSION = "1.31.0"
ORDINALS = [0, 1, 2]


@pytest.fixture(scope="module")
def kustomization():
    with open(os.path.join(K8S, "kustomization.yaml")) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def resources(kustomization):
    docs = []
    for r in kustomization["resources"]:
        with open(os.path.join(K8S, r)) as f:
            docs += [d for d in yaml.safe_load_all(f) if d]
    return docs


def find(resources, kind, name):
    for d in resources:
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(f"no {kind} {name}")


@pytest.fixture(scope="module")
def secrets(kustomization, tmp_path_factory):
    """The secretGenerator's secrets, from a real `veil certs init` with the
    documented arguments: {secret name: {key: file}}."""
    out = tmp_path_factory.mktemp("secrets")
    with open(os.path.join(K8S, "hosts.txt")) as f:
        hosts = f.read().strip()
    veil("certs", "init", "--dir", str(out), "--nodes", ",".join(map(str, ORDINALS)),
         "--clients", "admin", "--hosts", hosts)
    (out / "admin-password").write_text("not-a-real-password")
    made = {}
    for gen in kustomization["secretGenerator"]:
        keys = {}
        for entry in gen["files"]:
            key, _, path = entry.rpartition("=")
            assert path.startswith("secrets/"), path
            file = out / os.path.relpath(path, "secrets")
            assert file.is_file(), f"{gen['name']}: veil certs init does not make {path}"
            keys[key or os.path.basename(path)] = str(file)
        made[gen["name"]] = keys
    return made


def test_every_manifest_validates_against_the_kubernetes_schemas(resources, kustomization, secrets):
    generated = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": g["name"]},
                  "data": {os.path.basename(f): "x" for f in g["files"]}}
                 for g in kustomization["configMapGenerator"]]
    generated += [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                   "type": "Opaque", "data": {k: "eA==" for k in keys}}
                  for name, keys in secrets.items()]
    kinds = set()
    for doc in resources + generated:
        kubernetes_validate.validate(doc, VERSION, strict=True)
        kinds.add(doc["kind"])
    assert {"StatefulSet", "Service", "PodDisruptionBudget", "Job", "Namespace"} <= kinds
    for r in kustomization["resources"]:
        assert os.path.isfile(os.path.join(K8S, r))


def test_the_statefulset_runs_three_ready_checked_non_root_nodes_apart(resources):
    sts = find(resources, "StatefulSet", "veil")
    spec, pod = sts["spec"], sts["spec"]["template"]["spec"]
    assert spec["replicas"] == len(ORDINALS)
    assert spec["podManagementPolicy"] == "Parallel"
    labels = sts["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= labels.items()
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    term = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    assert mounts["data"] == "/var/lib/veil"
    assert [t["metadata"]["name"] for t in spec["volumeClaimTemplates"]] == ["data"]
    pdb = find(resources, "PodDisruptionBudget", "veil")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    headless = find(resources, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True


def pod_env(container, ordinal):
    """The container's environment as the kubelet expands it for a pod."""
    known = {"POD_NAME": f"veil-{ordinal}", "HOST_IP": "192.0.2.10", "VEIL_NODE_ID": str(ordinal)}
    env = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = re.sub(r"\$\((\w+)\)", lambda m: {**known, **env}[m.group(1)], e["value"])
        else:
            env[e["name"]] = known[e["name"]]
    return env


def pod_config(sts, ordinal):
    c = sts["spec"]["template"]["spec"]["containers"][0]
    with open(os.path.join(K8S, "veil.toml"), "rb") as f:
        config = tomllib.load(f)
    return override(config, pod_env(c, ordinal)), c


def test_each_pods_files_are_in_its_secret_and_its_certificate_is_its_own(resources, secrets):
    sts = find(resources, "StatefulSet", "veil")
    pod = sts["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for ordinal in ORDINALS:
        config, c = pod_config(sts, ordinal)
        assert config["node_id"] == ordinal
        tls_mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/etc/veil/tls")
        secret = secrets[volumes[tls_mount["name"]]["secret"]["secretName"]]
        for path in named_files(config):
            assert path.startswith("/etc/veil/tls/"), path
            assert os.path.basename(path) in secret, f"pod {ordinal}: {path} not in the secret"
        node_cert = certificate(secret[os.path.basename(config["cluster"]["tls"]["cert_file"])])
        assert common_name(node_cert) == f"node-{ordinal}"
        voter = next(v for v in config["cluster"]["voters"] if v.startswith(f"{ordinal}@"))
        assert config["cluster"]["advertised"] == voter.split("@")[1]
        assert voter.split("@")[1].rsplit(":", 1)[0] in dns_names(node_cert)
        broker_names = dns_names(certificate(secret["broker.pem"]))
        assert config["listeners"][0]["advertised"].rsplit(":", 1)[0] in broker_names


def test_the_broker_accepts_each_pods_config(resources):
    sts = find(resources, "StatefulSet", "veil")
    for ordinal in ORDINALS:
        c = sts["spec"]["template"]["spec"]["containers"][0]
        env = {k: v for k, v in pod_env(c, ordinal).items() if k.startswith("VEIL_")}
        p = veil("broker", "--config", os.path.join(K8S, "veil.toml"), "--check-config", env=env)
        assert f"configuration is valid (node {ordinal})" in p.stdout


def test_grace_period_covers_a_controlled_shutdown(resources):
    sts = find(resources, "StatefulSet", "veil")
    config, _ = pod_config(sts, 0)
    grace = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= shutdown_budget_s(config) + 10, (grace, shutdown_budget_s(config))


def test_each_pod_has_an_external_listener_of_its_own(resources):
    sts = find(resources, "StatefulSet", "veil")
    for ordinal in ORDINALS:
        config, _ = pod_config(sts, ordinal)
        svc = find(resources, "Service", f"veil-{ordinal}-external")
        assert svc["spec"]["selector"] == {"statefulset.kubernetes.io/pod-name": f"veil-{ordinal}"}
        port = svc["spec"]["ports"][0]
        external = next(l for l in config["listeners"] if l["name"] == "EXTERNAL")
        assert external["bind"].endswith(f":{port['port']}")
        assert external["advertised"] == f"192.0.2.10:{port['nodePort']}"


def test_the_bootstrap_job_adds_the_admin_with_the_admin_certificate(resources, secrets):
    job = find(resources, "Job", "veil-bootstrap-admin")
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["args"] == ["user", "add", "admin"]
    env = {e["name"]: e for e in c["env"]}
    ref = env["VEIL_USER_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["key"] in secrets[ref["name"]]
    secret = secrets[pod["volumes"][0]["secret"]["secretName"]]
    for key in ("VEIL_SSL_CA", "VEIL_SSL_CERT", "VEIL_SSL_KEY"):
        assert os.path.basename(env[key]["value"]) in secret
    assert common_name(certificate(secret["admin.pem"])) == "admin"
    with open(os.path.join(K8S, "veil.toml"), "rb") as f:
        config = tomllib.load(f)
    assert "User:CN=admin,O=Veil development" in config["authorizer"]["super_users"]
    host = env["VEIL_BOOTSTRAP"]["value"].rsplit(":", 1)[0]
    assert host in dns_names(certificate(secrets["veil-tls"]["broker.pem"]))

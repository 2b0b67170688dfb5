"""The Grafana dashboard and the alerting rules reference only metric
families a broker exports (deploy/metrics.txt, which test_observability.py
checks against a live broker); the dashboard is what generate.py writes;
promtool accepts the rules and their unit tests pass."""
import importlib.util
import json
import os
import re
import subprocess

import yaml

from conftest import DEPLOY, require_tool
from test_observability import expected_families

# Prometheus' own series that rules may use.
BUILTIN = {"up"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def referenced(expr):
    """Metric names in a PromQL expression: identifiers that are neither
    functions, keywords, label names nor template variables."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)            # string literals
    expr = re.sub(r"\{[^}]*\}", "{}", expr)                      # label matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\[[^\]]*\]", "[]", expr)                     # ranges
    names = set()
    for m in re.finditer(r"(?<![\w$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()", expr):
        word = m.group(1)
        if word in {"and", "or", "unless", "bool", "offset", "inf", "nan"}:
            continue
        names.add(word)
    return names


def family_of(name, families):
    if name in families:
        return name
    for suffix in HISTOGRAM_SUFFIXES:
        base = name[: -len(suffix)] if name.endswith(suffix) else None
        if base and families.get(base) == "histogram":
            return base
    return None


def check_exprs(exprs, where):
    families = expected_families()
    unknown = set()
    for expr in exprs:
        for name in referenced(expr):
            if name not in BUILTIN and family_of(name, families) is None:
                unknown.add(name)
    assert not unknown, f"{where} references metrics no broker exports: {sorted(unknown)}"


def dashboard_exprs(d):
    return [t["expr"] for p in d["panels"] for t in p.get("targets", [])]


def test_the_reference_extraction_sees_through_promql():
    assert referenced('sum by (le, api) (rate(veil_x_bucket{api="a b"}[5m])) / on (api) veil_y') == {"veil_x_bucket", "veil_y"}
    assert referenced('up{job="veil"} == 0 and veil_z > 1') == {"up", "veil_z"}


def test_dashboard_references_only_exported_metrics():
    with open(os.path.join(DEPLOY, "grafana", "veil.json")) as f:
        d = json.load(f)
    exprs = dashboard_exprs(d)
    assert len(exprs) >= 20
    check_exprs(exprs, "grafana/veil.json")
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for p in d["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == "${datasource}", p["title"]
            assert p["targets"], p["title"]


def test_dashboard_is_what_the_generator_writes():
    path = os.path.join(DEPLOY, "grafana", "generate.py")
    spec = importlib.util.spec_from_file_location("generate", path)
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    with open(os.path.join(DEPLOY, "grafana", "veil.json")) as f:
        assert f.read() == generate.render(), "run python3 deploy/grafana/generate.py"


def test_alerts_reference_only_exported_metrics():
    with open(os.path.join(DEPLOY, "prometheus", "alerts.yml")) as f:
        rules = yaml.safe_load(f)
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    check_exprs(exprs, "prometheus/alerts.yml")
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    for wanted in ["VeilBrokerDown", "VeilOfflinePartitions", "VeilUnderReplicatedPartitions",
                   "VeilUnderMinIsrPartitions", "VeilFsyncSlow",
                   "VeilConsumerLagGrowing", "VeilAuthenticationFailureBurst", "VeilDiskAlmostFull"]:
        assert wanted in names


def test_promtool_checks_the_rules_and_their_unit_tests_pass():
    promtool = require_tool("promtool")
    d = os.path.join(DEPLOY, "prometheus")
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        p = subprocess.run([promtool, *args], cwd=d, capture_output=True, text=True)
        assert p.returncode == 0, f"promtool {' '.join(args)}:\n{p.stdout}\n{p.stderr}"


def test_every_alert_has_a_unit_test():
    d = os.path.join(DEPLOY, "prometheus")
    with open(os.path.join(d, "alerts.yml")) as f:
        alerts = {r["alert"] for g in yaml.safe_load(f)["groups"] for r in g["rules"]}
    with open(os.path.join(d, "alerts_test.yml")) as f:
        tests = yaml.safe_load(f)["tests"]
    firing = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert alerts - firing == set(), f"alerts no test makes fire: {sorted(alerts - firing)}"

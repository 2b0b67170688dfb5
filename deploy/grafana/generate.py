#!/usr/bin/env python3
"""Writes veil.json, the Grafana dashboard over Veil's /metrics.

    python3 deploy/grafana/generate.py     # after editing the panels below

The dashboard is generated so that every panel has the same shape; a test
(deploy/tests/test_dashboard.py) checks that veil.json matches this file and
references only metric families listed in deploy/metrics.txt.
"""

import json
import pathlib

RATE = "$__rate_interval"
SEL = 'instance=~"$instance"'

ROWS = [
    ("Throughput", [
        ("Requests per second by API", "reqps",
         [(f"sum by (api) (rate(veil_requests_total{{{SEL}}}[{RATE}]))", "{{api}}")]),
        ("Bytes in by topic", "Bps",
         [(f"sum by (topic) (rate(veil_topic_bytes_in_total{{{SEL}}}[{RATE}]))", "{{topic}}")]),
        ("Bytes out by topic", "Bps",
         [(f"sum by (topic) (rate(veil_topic_bytes_out_total{{{SEL}}}[{RATE}]))", "{{topic}}")]),
        ("Network bytes per broker", "Bps",
         [(f"sum by (instance) (rate(veil_network_bytes_in_total{{{SEL}}}[{RATE}]))", "in {{instance}}"),
          (f"sum by (instance) (rate(veil_network_bytes_out_total{{{SEL}}}[{RATE}]))", "out {{instance}}")]),
        ("Batches appended by topic", "ops",
         [(f"sum by (topic) (rate(veil_produced_batches_total{{{SEL}}}[{RATE}]))", "{{topic}}")]),
        ("Error responses by API and code", "ops",
         [(f"sum by (api, code) (rate(veil_errors_total{{{SEL}}}[{RATE}]))", "{{api}} {{code}}")]),
    ]),
    ("Latency", [
        ("Request latency p99 by API", "s",
         [(f"histogram_quantile(0.99, sum by (api, le) (rate(veil_request_duration_seconds_bucket{{{SEL}}}[{RATE}])))", "{{api}}")]),
        ("Request latency p50 by API", "s",
         [(f"histogram_quantile(0.5, sum by (api, le) (rate(veil_request_duration_seconds_bucket{{{SEL}}}[{RATE}])))", "{{api}}")]),
        ("fsync latency", "s",
         [(f"histogram_quantile(0.99, sum by (instance, le) (rate(veil_fsync_duration_seconds_bucket{{{SEL}}}[{RATE}])))", "p99 {{instance}}"),
          (f"histogram_quantile(0.5, sum by (instance, le) (rate(veil_fsync_duration_seconds_bucket{{{SEL}}}[{RATE}])))", "p50 {{instance}}")]),
        ("Offsets per group commit (mean)", "short",
         [(f"sum by (instance) (rate(veil_group_commit_batch_records_sum{{{SEL}}}[{RATE}])) / sum by (instance) (rate(veil_group_commit_batch_records_count{{{SEL}}}[{RATE}]))", "{{instance}}")]),
    ]),
    ("Consumers", [
        ("Consumer lag by group and topic", "short",
         [(f"sum by (group, topic) (veil_group_lag{{{SEL}}})", "{{group}} {{topic}}")]),
        ("Lag growth per minute", "short",
         [(f"sum by (group, topic) (deriv(veil_group_lag{{{SEL}}}[5m])) * 60", "{{group}} {{topic}}")]),
    ]),
    ("Storage", [
        ("Log size by partition", "bytes",
         [(f"sum by (topic, partition) (veil_partition_log_size_bytes{{{SEL}}})", "{{topic}}[{{partition}}]")]),
        ("Segments by partition", "short",
         [(f"sum by (topic, partition) (veil_partition_log_segments{{{SEL}}})", "{{topic}}[{{partition}}]")]),
        ("Data disk free", "percentunit",
         [(f"veil_data_dir_available_bytes{{{SEL}}} / veil_data_dir_capacity_bytes{{{SEL}}}", "{{instance}}")]),
        ("Offline partitions and failed fsyncs", "short",
         [(f"sum(veil_offline_partitions{{{SEL}}})", "offline partitions"),
          (f"sum(increase(veil_fsync_failures_total{{{SEL}}}[{RATE}]))", "failed fsyncs")]),
    ]),
    ("Replication", [
        ("Under-replicated and under-min-ISR partitions", "short",
         [(f"sum(veil_under_replicated_partitions{{{SEL}}})", "under-replicated"),
          (f"sum(veil_under_min_isr_partitions{{{SEL}}})", "below min.insync.replicas")]),
        ("ISR shrinks and expansions", "ops",
         [(f"sum by (instance) (rate(veil_isr_shrinks_total{{{SEL}}}[{RATE}]))", "shrinks {{instance}}"),
          (f"sum by (instance) (rate(veil_isr_expands_total{{{SEL}}}[{RATE}]))", "expansions {{instance}}")]),
        ("Largest follower lag by topic", "short",
         [(f"max by (topic) (veil_replica_lag_messages{{{SEL}}})", "{{topic}}")]),
        ("Follower lag by replica", "short",
         [(f"max by (replica) (veil_replica_lag_messages{{{SEL}}})", "replica {{replica}}")]),
    ]),
    ("Cluster health", [
        ("Controller", "short",
         [(f"max(veil_controller_id{{{SEL}}})", "controller id"),
          (f"sum(veil_controller_active{{{SEL}}})", "active controllers")]),
        ("Brokers registered and fenced", "short",
         [(f"max(veil_brokers_registered{{{SEL}}})", "registered"),
          (f"max(veil_brokers_fenced{{{SEL}}})", "fenced")]),
        ("Metadata applied index", "short",
         [(f"veil_metadata_applied_index{{{SEL}}}", "{{instance}}")]),
        ("Brokers up", "short",
         [(f'sum(up{{job="veil", {SEL}}})', "up")]),
    ]),
    ("Security", [
        ("SASL logins by mechanism and result", "ops",
         [(f"sum by (mechanism, result) (rate(veil_sasl_authentications_total{{{SEL}}}[{RATE}]))", "{{mechanism}} {{result}}")]),
        ("Failed TLS handshakes by listener", "ops",
         [(f"sum by (listener) (rate(veil_tls_handshake_failures_total{{{SEL}}}[{RATE}]))", "{{listener}}")]),
        ("ACL denials by operation and resource", "ops",
         [(f'sum by (operation, resource_type) (rate(veil_authorization_decisions_total{{decision="deny", {SEL}}}[{RATE}]))', "{{operation}} {{resource_type}}")]),
        ("Blind resolves and revocations", "ops",
         [(f"sum by (result) (rate(veil_blind_resolves_total{{{SEL}}}[{RATE}]))", "resolve {{result}}"),
          (f"sum(rate(veil_blind_revocations_total{{{SEL}}}[{RATE}]))", "revocations")]),
        ("Connections by listener and principal class", "short",
         [(f"sum by (listener, principal_class) (veil_connections{{{SEL}}})", "{{listener}} {{principal_class}}")]),
        ("Refused connections by listener", "ops",
         [(f"sum by (listener) (rate(veil_connections_rejected_total{{{SEL}}}[{RATE}]))", "{{listener}}")]),
    ]),
]

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def panel(pid, title, unit, targets, x, y):
    return {
        "id": pid,
        "type": "timeseries",
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"},
                    "tooltip": {"mode": "multi"}},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
             "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def dashboard():
    panels, pid, y = [], 1, 0
    for row_title, row_panels in ROWS:
        panels.append({"id": pid, "type": "row", "title": row_title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        pid, y = pid + 1, y + 1
        for i, (title, unit, targets) in enumerate(row_panels):
            panels.append(panel(pid, title, unit, targets, 12 * (i % 2), y + 8 * (i // 2)))
            pid += 1
        y += 8 * ((len(row_panels) + 1) // 2)
    return {
        "uid": "veil-overview",
        "title": "Veil",
        "description": "Throughput, latency, consumer lag, storage, replication, cluster health and security events of Veil brokers.",
        "tags": ["veil", "kafka"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-3h", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            {"name": "instance", "label": "Broker", "type": "query", "datasource": DATASOURCE,
             "query": {"query": "label_values(veil_build_info, instance)", "refId": "instance"},
             "definition": "label_values(veil_build_info, instance)",
             "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2,
             "current": {"text": "All", "value": "$__all"}, "hide": 0, "sort": 1},
        ]},
        "annotations": {"list": []},
        "panels": panels,
    }


def render():
    return json.dumps(dashboard(), indent=2) + "\n"


if __name__ == "__main__":
    out = pathlib.Path(__file__).with_name("veil.json")
    out.write_text(render())
    print(f"wrote {out}")

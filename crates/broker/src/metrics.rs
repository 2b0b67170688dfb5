//! Prometheus metrics. Labels carry API names, error codes, listener
//! names, principal classes and physical topic names only; never payloads,
//! principals, secrets or client ids.
//!
//! Names follow Prometheus conventions: the `veil_` prefix, base units in
//! the name (`_seconds`, `_bytes`), `_total` on counters only. The families
//! alerts and dashboards rely on are listed in `deploy/metrics.txt`, which a
//! test checks against a live broker's `/metrics`.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

#[derive(Debug, Clone)]
pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    pub errors: IntCounterVec,
    pub bytes_in: IntCounter,
    pub bytes_out: IntCounter,
    /// Record bytes appended, by topic.
    pub topic_bytes_in: IntCounterVec,
    /// Record bytes sent in Fetch responses, by topic.
    pub topic_bytes_out: IntCounterVec,
    /// Open connections by listener and principal class (see [`ConnectionGauge`]).
    pub connections: IntGaugeVec,
    pub connections_rejected: IntCounterVec,
    pub fsync_seconds: Histogram,
    /// Offsets made durable by one group-commit fsync.
    pub group_commit_records: Histogram,
    pub fsync_failures: IntCounter,
    pub log_end_offset: IntGaugeVec,
    pub log_start_offset: IntGaugeVec,
    pub log_size_bytes: IntGaugeVec,
    pub log_segments: IntGaugeVec,
    /// Compacted partitions: bytes the cleaner has not cleaned yet (its lag), and their share.
    pub cleaner_lag_bytes: IntGaugeVec,
    pub cleaner_dirty_ratio: GaugeVec,
    /// Bytes of segments the cleaner read and rewrote, by topic.
    pub cleaner_cleaned_bytes: IntCounterVec,
    pub cleaner_removed_records: IntCounterVec,
    pub cleaner_passes: IntCounter,
    /// Free and total space of the file system holding `data_dir`.
    pub data_dir_available_bytes: IntGauge,
    pub data_dir_capacity_bytes: IntGauge,
    /// Partitions whose log could not be opened (Kafka's OfflinePartitionsCount).
    pub offline_partitions: IntGauge,
    /// Consumer lag: high watermark minus committed offset, per group and partition.
    pub group_lag: IntGaugeVec,
    pub produced_records: IntCounterVec,
    /// SASL logins by mechanism and result (never by user).
    pub sasl_authentications: IntCounterVec,
    /// TLS handshakes that failed or timed out, by listener.
    pub tls_handshake_failures: IntCounterVec,
    /// Access checks by outcome; no principal label, to bound cardinality.
    pub authorization: IntCounterVec,
    /// BlindResolve answers: resolved, unknown (no such topic for the
    /// token's key epoch) or refused (no share, revoked, rate limited...).
    pub blind_resolves: IntCounterVec,
    /// Server shares revoked through BlindShareRevoke.
    pub blind_revocations: IntCounter,
    /// 1, labelled with the running version.
    pub build_info: IntGaugeVec,
    /// The controller this node knows (-1: none).
    pub controller_id: IntGauge,
    /// 1 on the controller (Kafka's ActiveControllerCount).
    pub controller_active: IntGauge,
    /// Metadata entries applied on this node.
    pub metadata_applied_index: IntGauge,
    /// Registered brokers, and how many of them are fenced.
    pub brokers_registered: IntGauge,
    pub brokers_fenced: IntGauge,
    /// ISR changes this node (as leader) committed.
    pub isr_shrinks: IntCounter,
    pub isr_expands: IntCounter,
    /// Partitions led here with fewer in-sync replicas than replicas.
    pub under_replicated_partitions: IntGauge,
    /// Partitions led here whose ISR is below min.insync.replicas (acks=all fails).
    pub under_min_isr_partitions: IntGauge,
    /// Messages each follower is behind the leader's log end, by partition and follower.
    pub replica_lag: IntGaugeVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure here is a programming error
    // caught by the first test run.
    r.unwrap_or_else(|e| panic!("invalid metric definition: {e}"))
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("veil".into()), None).unwrap_or_default();
        let latency_buckets = vec![
            0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
            1.0, 2.5, 5.0, 10.0, 30.0,
        ];
        let m = Metrics {
            requests: must(IntCounterVec::new(
                Opts::new("requests_total", "Kafka requests handled, by API"),
                &["api"],
            )),
            request_seconds: must(HistogramVec::new(
                HistogramOpts::new(
                    "request_duration_seconds",
                    "Time from request decoded to response ready, by API",
                )
                .buckets(latency_buckets.clone()),
                &["api"],
            )),
            errors: must(IntCounterVec::new(
                Opts::new(
                    "errors_total",
                    "Error codes returned in responses, by API and Kafka error code",
                ),
                &["api", "code"],
            )),
            bytes_in: must(IntCounter::new(
                "network_bytes_in_total",
                "Request bytes read",
            )),
            bytes_out: must(IntCounter::new(
                "network_bytes_out_total",
                "Response bytes written",
            )),
            topic_bytes_in: must(IntCounterVec::new(
                Opts::new(
                    "topic_bytes_in_total",
                    "Record bytes appended to the topic's partitions",
                ),
                &["topic"],
            )),
            topic_bytes_out: must(IntCounterVec::new(
                Opts::new(
                    "topic_bytes_out_total",
                    "Record bytes of the topic sent in Fetch responses",
                ),
                &["topic"],
            )),
            connections: must(IntGaugeVec::new(
                Opts::new(
                    "connections",
                    "Open connections, by listener and principal class (anonymous, \
                     unauthenticated, sasl, certificate, node)",
                ),
                &["listener", "principal_class"],
            )),
            connections_rejected: must(IntCounterVec::new(
                Opts::new(
                    "connections_rejected_total",
                    "Connections refused because a connection limit was reached, by listener",
                ),
                &["listener"],
            )),
            fsync_seconds: must(Histogram::with_opts(
                HistogramOpts::new(
                    "fsync_duration_seconds",
                    "fdatasync latency of partition logs",
                )
                .buckets(latency_buckets),
            )),
            group_commit_records: must(Histogram::with_opts(
                HistogramOpts::new(
                    "group_commit_batch_records",
                    "Offsets made durable by one group-commit fdatasync",
                )
                .buckets(vec![
                    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0, 10000.0,
                    100_000.0,
                ]),
            )),
            fsync_failures: must(IntCounter::new(
                "fsync_failures_total",
                "Failed fsyncs (each poisons its partition)",
            )),
            log_end_offset: must(IntGaugeVec::new(
                Opts::new("partition_log_end_offset", "Next offset to be written"),
                &["topic", "partition"],
            )),
            log_start_offset: must(IntGaugeVec::new(
                Opts::new("partition_log_start_offset", "First offset still readable"),
                &["topic", "partition"],
            )),
            group_lag: must(IntGaugeVec::new(
                Opts::new(
                    "group_lag",
                    "High watermark minus the group's committed offset",
                ),
                &["group", "topic", "partition"],
            )),
            log_size_bytes: must(IntGaugeVec::new(
                Opts::new(
                    "partition_log_size_bytes",
                    "Bytes on disk in the partition's segments",
                ),
                &["topic", "partition"],
            )),
            log_segments: must(IntGaugeVec::new(
                Opts::new("partition_log_segments", "Segments of the partition's log"),
                &["topic", "partition"],
            )),
            cleaner_lag_bytes: must(IntGaugeVec::new(
                Opts::new(
                    "log_cleaner_lag_bytes",
                    "Cleanable bytes of a compacted partition not cleaned yet",
                ),
                &["topic", "partition"],
            )),
            cleaner_dirty_ratio: must(GaugeVec::new(
                Opts::new(
                    "log_cleaner_dirty_ratio",
                    "Dirty share of a compacted partition's cleanable bytes",
                ),
                &["topic", "partition"],
            )),
            cleaner_cleaned_bytes: must(IntCounterVec::new(
                Opts::new(
                    "log_cleaner_cleaned_bytes_total",
                    "Segment bytes the log cleaner read and rewrote",
                ),
                &["topic"],
            )),
            cleaner_removed_records: must(IntCounterVec::new(
                Opts::new(
                    "log_cleaner_removed_records_total",
                    "Records the log cleaner removed (superseded keys, expired tombstones)",
                ),
                &["topic"],
            )),
            cleaner_passes: must(IntCounter::new(
                "log_cleaner_passes_total",
                "Log cleaner passes installed",
            )),
            data_dir_available_bytes: must(IntGauge::new(
                "data_dir_available_bytes",
                "Bytes available to the broker on the file system holding data_dir",
            )),
            data_dir_capacity_bytes: must(IntGauge::new(
                "data_dir_capacity_bytes",
                "Size in bytes of the file system holding data_dir",
            )),
            offline_partitions: must(IntGauge::new(
                "offline_partitions",
                "Partitions whose log could not be opened; they answer KAFKA_STORAGE_ERROR",
            )),
            produced_records: must(IntCounterVec::new(
                Opts::new(
                    "produced_batches_total",
                    "Record batches appended, by topic",
                ),
                &["topic"],
            )),
            authorization: must(IntCounterVec::new(
                Opts::new(
                    "authorization_decisions_total",
                    "ACL decisions, by decision (allow, deny), operation and resource type",
                ),
                &["decision", "operation", "resource_type"],
            )),
            blind_resolves: must(IntCounterVec::new(
                Opts::new(
                    "blind_resolves_total",
                    "BlindResolve requests, by result (resolved, unknown, refused)",
                ),
                &["result"],
            )),
            blind_revocations: must(IntCounter::new(
                "blind_revocations_total",
                "Blind server shares revoked",
            )),
            build_info: must(IntGaugeVec::new(
                Opts::new("build_info", "Always 1; the version label names the build"),
                &["version"],
            )),
            controller_id: must(IntGauge::new(
                "controller_id",
                "The node this one knows as controller (-1: none)",
            )),
            controller_active: must(IntGauge::new(
                "controller_active",
                "1 while this node is the controller (leads the metadata quorum)",
            )),
            metadata_applied_index: must(IntGauge::new(
                "metadata_applied_index",
                "Metadata log entries applied on this node",
            )),
            brokers_registered: must(IntGauge::new(
                "brokers_registered",
                "Brokers registered with the controller",
            )),
            brokers_fenced: must(IntGauge::new(
                "brokers_fenced",
                "Registered brokers that are fenced (not heard from, or catching up)",
            )),
            isr_shrinks: must(IntCounter::new(
                "isr_shrinks_total",
                "ISR shrinks committed by partitions this node leads",
            )),
            isr_expands: must(IntCounter::new(
                "isr_expands_total",
                "ISR expansions committed by partitions this node leads",
            )),
            under_replicated_partitions: must(IntGauge::new(
                "under_replicated_partitions",
                "Partitions led here whose ISR is smaller than their replica set",
            )),
            under_min_isr_partitions: must(IntGauge::new(
                "under_min_isr_partitions",
                "Partitions led here whose ISR is below min.insync.replicas",
            )),
            replica_lag: must(IntGaugeVec::new(
                Opts::new(
                    "replica_lag_messages",
                    "Offsets a follower is behind the leader's log end",
                ),
                &["topic", "partition", "replica"],
            )),
            sasl_authentications: must(IntCounterVec::new(
                Opts::new(
                    "sasl_authentications_total",
                    "SASL authentications, by mechanism and result",
                ),
                &["mechanism", "result"],
            )),
            tls_handshake_failures: must(IntCounterVec::new(
                Opts::new(
                    "tls_handshake_failures_total",
                    "TLS handshakes that failed or timed out, by listener",
                ),
                &["listener"],
            )),
            registry,
        };
        must(m.registry.register(Box::new(m.requests.clone())));
        must(m.registry.register(Box::new(m.request_seconds.clone())));
        must(m.registry.register(Box::new(m.errors.clone())));
        must(m.registry.register(Box::new(m.bytes_in.clone())));
        must(m.registry.register(Box::new(m.bytes_out.clone())));
        must(m.registry.register(Box::new(m.topic_bytes_in.clone())));
        must(m.registry.register(Box::new(m.topic_bytes_out.clone())));
        must(m.registry.register(Box::new(m.connections.clone())));
        must(
            m.registry
                .register(Box::new(m.connections_rejected.clone())),
        );
        must(m.registry.register(Box::new(m.fsync_seconds.clone())));
        must(
            m.registry
                .register(Box::new(m.group_commit_records.clone())),
        );
        must(m.registry.register(Box::new(m.fsync_failures.clone())));
        must(m.registry.register(Box::new(m.log_end_offset.clone())));
        must(m.registry.register(Box::new(m.log_start_offset.clone())));
        must(m.registry.register(Box::new(m.log_size_bytes.clone())));
        must(m.registry.register(Box::new(m.log_segments.clone())));
        must(m.registry.register(Box::new(m.cleaner_lag_bytes.clone())));
        must(m.registry.register(Box::new(m.cleaner_dirty_ratio.clone())));
        must(
            m.registry
                .register(Box::new(m.cleaner_cleaned_bytes.clone())),
        );
        must(
            m.registry
                .register(Box::new(m.cleaner_removed_records.clone())),
        );
        must(m.registry.register(Box::new(m.cleaner_passes.clone())));
        must(m.registry.register(Box::new(m.offline_partitions.clone())));
        must(m.registry.register(Box::new(m.group_lag.clone())));
        must(m.registry.register(Box::new(m.produced_records.clone())));
        must(
            m.registry
                .register(Box::new(m.sasl_authentications.clone())),
        );
        must(
            m.registry
                .register(Box::new(m.tls_handshake_failures.clone())),
        );
        must(m.registry.register(Box::new(m.authorization.clone())));
        must(m.registry.register(Box::new(m.isr_shrinks.clone())));
        must(m.registry.register(Box::new(m.isr_expands.clone())));
        must(m.registry.register(Box::new(m.replica_lag.clone())));
        must(m.registry.register(Box::new(m.blind_resolves.clone())));
        must(m.registry.register(Box::new(m.blind_revocations.clone())));
        must(m.registry.register(Box::new(m.build_info.clone())));
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        for result in ["resolved", "unknown", "refused"] {
            m.blind_resolves.with_label_values(&[result]);
        }
        for g in [
            &m.under_replicated_partitions,
            &m.under_min_isr_partitions,
            &m.controller_id,
            &m.controller_active,
            &m.metadata_applied_index,
            &m.brokers_registered,
            &m.brokers_fenced,
            &m.data_dir_available_bytes,
            &m.data_dir_capacity_bytes,
        ] {
            must(m.registry.register(Box::new(g.clone())));
        }
        m
    }

    /// Creates the series alerts rely on before their first event, so a
    /// rate over them exists from the start: logins per offered mechanism.
    pub fn init_series(&self, config: &crate::config::Config) {
        for l in config.listeners.iter().filter(|l| l.protocol.uses_sasl()) {
            for mechanism in l.mechanisms() {
                for result in ["success", "failure"] {
                    self.sasl_authentications
                        .with_label_values(&[&mechanism, result]);
                }
            }
        }
        for l in &config.listeners {
            self.tls_handshake_failures.with_label_values(&[&l.name]);
            self.connections_rejected.with_label_values(&[&l.name]);
        }
    }

    /// Counts a non-zero error code in a response.
    pub fn error(&self, api: &str, code: i16) {
        if code != 0 {
            self.errors
                .with_label_values(&[api, &code.to_string()])
                .inc();
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_err()
        {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Who holds a connection, as far as `veil_connections` tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrincipalClass {
    /// A listener without authentication (PLAINTEXT, or SSL without a
    /// client certificate).
    Anonymous,
    /// A SASL listener's client that has not logged in (yet).
    Unauthenticated,
    /// Logged in with SASL.
    Sasl,
    /// Identified by its TLS client certificate.
    Certificate,
    /// Another node, on the inter-node listener.
    Node,
}

impl PrincipalClass {
    pub fn label(self) -> &'static str {
        match self {
            PrincipalClass::Anonymous => "anonymous",
            PrincipalClass::Unauthenticated => "unauthenticated",
            PrincipalClass::Sasl => "sasl",
            PrincipalClass::Certificate => "certificate",
            PrincipalClass::Node => "node",
        }
    }
}

/// One open connection counted in `veil_connections{listener,
/// principal_class}`: it moves to another class when the connection
/// authenticates and leaves the gauge when dropped.
#[derive(Debug)]
pub struct ConnectionGauge {
    gauge: IntGaugeVec,
    listener: String,
    class: PrincipalClass,
}

impl ConnectionGauge {
    pub fn open(metrics: &Metrics, listener: &str, class: PrincipalClass) -> ConnectionGauge {
        let gauge = metrics.connections.clone();
        gauge.with_label_values(&[listener, class.label()]).inc();
        ConnectionGauge {
            gauge,
            listener: listener.to_owned(),
            class,
        }
    }

    pub fn set_class(&mut self, class: PrincipalClass) {
        if class != self.class {
            self.gauge
                .with_label_values(&[&self.listener, self.class.label()])
                .dec();
            self.gauge
                .with_label_values(&[&self.listener, class.label()])
                .inc();
            self.class = class;
        }
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        self.gauge
            .with_label_values(&[&self.listener, self.class.label()])
            .dec();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

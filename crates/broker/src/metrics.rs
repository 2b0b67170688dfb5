//! Prometheus metrics. Labels carry API names, error codes and physical
//! topic names only; never payloads, principals' secrets or client ids.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
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
    pub connections: IntGauge,
    pub connections_rejected: IntCounter,
    pub fsync_seconds: Histogram,
    pub fsync_failures: IntCounter,
    pub log_end_offset: IntGaugeVec,
    pub log_start_offset: IntGaugeVec,
    pub log_size_bytes: IntGaugeVec,
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
            connections: must(IntGauge::new("connections", "Open client connections")),
            connections_rejected: must(IntCounter::new(
                "connections_rejected_total",
                "Connections refused because the connection limit was reached",
            )),
            fsync_seconds: must(Histogram::with_opts(
                HistogramOpts::new(
                    "fsync_duration_seconds",
                    "fdatasync latency of partition logs",
                )
                .buckets(latency_buckets),
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
                    "partition_size_bytes",
                    "Bytes on disk in the partition's segments",
                ),
                &["topic", "partition"],
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
                    "authorization_total",
                    "ACL decisions, by decision, operation and resource type",
                ),
                &["decision", "operation", "resource_type"],
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
        must(m.registry.register(Box::new(m.connections.clone())));
        must(
            m.registry
                .register(Box::new(m.connections_rejected.clone())),
        );
        must(m.registry.register(Box::new(m.fsync_seconds.clone())));
        must(m.registry.register(Box::new(m.fsync_failures.clone())));
        must(m.registry.register(Box::new(m.log_end_offset.clone())));
        must(m.registry.register(Box::new(m.log_start_offset.clone())));
        must(m.registry.register(Box::new(m.log_size_bytes.clone())));
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
        for g in [
            &m.under_replicated_partitions,
            &m.under_min_isr_partitions,
            &m.controller_id,
            &m.controller_active,
            &m.metadata_applied_index,
            &m.brokers_registered,
            &m.brokers_fenced,
        ] {
            must(m.registry.register(Box::new(g.clone())));
        }
        m
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

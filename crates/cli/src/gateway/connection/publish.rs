//! PUBLISH from a device: checks, sealing and queueing for the remote
//! broker, and the answer — PUBACK (PUBREC for MQTT 3 QoS 2) once the
//! remote broker acknowledged it with acks=all, a reason code, or a close.

use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use tokio::io::AsyncWrite;
use veil_broker::mqtt::codec::{Message, Outbound, Reason, Version};
use veil_broker::mqtt::front_end::{self, Close};
use veil_broker::mqtt::ingest;
use veil_client::blind_data::delivered;

use super::super::Gateway;
use super::{Conn, Durable};

impl<W: AsyncWrite + Unpin> Conn<W> {
    pub(super) async fn publish(
        &mut self,
        pkid: u16,
        message: Message,
        durable: &mut FuturesOrdered<Durable>,
        publish_timeout: Duration,
    ) -> Result<(), Close> {
        front_end::check_publish(self.version, &message)?;
        if message.qos == 2 && self.qos2.contains(&pkid) {
            // A resend before PUBREL: sent once already.
            return self.send(front_end::stored(pkid, 2));
        }
        let queued = match send(&self.gateway, &message).await {
            Ok(f) => f,
            Err(Refused::Unmapped) => {
                return self.refuse(
                    pkid,
                    message.qos,
                    Reason::TopicNameInvalid,
                    "no mapping rule matches the topic",
                );
            }
            Err(Refused::Final(why)) => {
                return self.refuse(pkid, message.qos, Reason::UnspecifiedError, &why)
            }
            // Not final: close without an answer so the device sends it again.
            Err(Refused::Transient(why)) => {
                return Err(Close::because(Reason::ImplementationSpecificError, why))
            }
        };
        if message.retain && self.gateway.retained.set(&message).is_err() {
            tracing::debug!(client_id = %self.client_id, "retained message store full");
        }
        let qos = message.qos;
        if qos == 0 {
            tokio::spawn(report_failure(queued));
            return Ok(());
        }
        if qos == 2 {
            self.qos2.insert(pkid);
        }
        durable.push_back(Box::pin(async move {
            let result = match tokio::time::timeout(publish_timeout, delivered(queued)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => {
                    Err("the remote broker did not acknowledge the record in time".to_owned())
                }
            };
            (pkid, qos, result)
        }));
        Ok(())
    }

    /// A publish not taken: a reason code where MQTT 5 has one, else the
    /// connection closes (MQTT 3 has no way to say no).
    fn refuse(&mut self, pkid: u16, qos: u8, reason: Reason, why: &str) -> Result<(), Close> {
        tracing::debug!(client_id = %self.client_id, why, "MQTT publish refused");
        if self.version == Version::V5 && qos == 1 {
            return self.send(Outbound::PubAck {
                pkid,
                reason,
                reason_string: Some(why.to_owned()),
            });
        }
        Err(Close::because(reason, why))
    }

    /// A QoS 1 (or MQTT 3 QoS 2) publish was acknowledged by the remote
    /// broker, or was not.
    pub(super) fn acknowledge(
        &mut self,
        pkid: u16,
        qos: u8,
        result: Result<(), String>,
    ) -> Result<(), Close> {
        match result {
            Ok(()) => self.send(front_end::stored(pkid, qos)),
            // No PUBACK: the device resends after reconnecting (at least once).
            Err(why) => Err(Close::because(Reason::ImplementationSpecificError, why)),
        }
    }
}

/// Why a publish was not taken.
#[derive(Debug, thiserror::Error)]
pub(super) enum Refused {
    #[error("no mapping rule matches the topic")]
    Unmapped,
    /// Sending again will not help (a revoked key, for one).
    #[error("{0}")]
    Final(String),
    #[error("{0}")]
    Transient(String),
}

/// Maps and seals one message and queues it for the remote broker.
pub(super) async fn send(
    gateway: &Gateway,
    message: &Message,
) -> Result<rdkafka::producer::DeliveryFuture, Refused> {
    let target = gateway
        .mappings
        .target(&message.topic)
        .ok_or(Refused::Unmapped)?;
    let (key, headers) = ingest::record_parts(message, &target.key, target.key_is_topic);
    let headers: Vec<veil_blind::Header> = headers
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), Some(v)))
        .collect();
    gateway
        .remote
        .send(&target.kafka_topic, &key, &message.payload, &headers)
        .await
        .map_err(|e| {
            if super::super::remote::is_final(&e) {
                tracing::warn!(topic = %target.kafka_topic, error = %e, "publish refused");
                Refused::Final(e.to_string())
            } else {
                Refused::Transient(e.to_string())
            }
        })
}

/// A QoS 0 message (or a will) nobody waits for: its failure is logged.
pub(super) async fn report_failure(queued: rdkafka::producer::DeliveryFuture) {
    if let Err(e) = delivered(queued).await {
        tracing::warn!(error = %e, "a QoS 0 message was not stored by the remote broker");
    }
}

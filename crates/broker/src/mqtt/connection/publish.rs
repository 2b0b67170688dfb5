//! PUBLISH from a client: checks, the append, and its answer — PUBACK
//! (PUBREC for MQTT 3 QoS 2) once durable, a reason code, or a close.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesOrdered;
use tokio::io::AsyncWrite;

use super::super::codec::{Message, Outbound, Reason, Version};
use super::super::front_end::{self, Close};
use super::super::ingest::{self, Refused};
use super::{Conn, Durable};

impl<W: AsyncWrite + Unpin> Conn<W> {
    pub(super) fn publish(
        &mut self,
        pkid: u16,
        message: Message,
        durable: &mut FuturesOrdered<Durable>,
        publish_timeout: Duration,
    ) -> Result<(), Close> {
        front_end::check_publish(self.version, &message)?;
        if message.qos == 2 && self.qos2.contains(&pkid) {
            // A resend before PUBREL: stored once already.
            return self.send(front_end::stored(pkid, 2));
        }
        let svc = Arc::clone(&self.svc);
        let appended = ingest::append(&svc.state, &svc.mappings, &self.publisher, &message);
        if message.retain && appended.is_ok() && svc.retained.set(&message).is_err() {
            tracing::debug!(topic = %message.topic, "retained message store full");
        }
        match (appended, message.qos) {
            (Ok(_), 0) => Ok(()),
            (Ok(a), qos) => {
                if qos == 2 {
                    self.qos2.insert(pkid);
                }
                durable.push_back(Box::pin(async move {
                    (pkid, qos, a.durable(publish_timeout).await)
                }));
                Ok(())
            }
            (Err(refused), qos) => self.refuse_publish(pkid, qos, &refused),
        }
    }

    /// A publish not taken: a reason code where MQTT 5 has one, else the
    /// connection closes (MQTT 3 has no way to say no).
    fn refuse_publish(&mut self, pkid: u16, qos: u8, refused: &Refused) -> Result<(), Close> {
        let reason = match refused {
            Refused::Unmapped => Reason::TopicNameInvalid,
            Refused::NotAuthorized => Reason::NotAuthorized,
            Refused::UnknownTopic(_) => Reason::UnspecifiedError,
            // Not final: close without an answer so the client sends it again.
            Refused::Unavailable(_) => {
                return Err(Close::because(
                    Reason::ImplementationSpecificError,
                    refused.to_string(),
                ));
            }
        };
        tracing::debug!(client_id = %self.client_id, reason = %refused, "MQTT publish refused");
        if self.version == Version::V5 && qos == 1 {
            return self.send(Outbound::PubAck {
                pkid,
                reason,
                reason_string: Some(refused.to_string()),
            });
        }
        Err(Close::because(reason, refused.to_string()))
    }

    /// A QoS 1 (or MQTT 3 QoS 2) publish became durable, or could not.
    pub(super) fn acknowledge(
        &mut self,
        pkid: u16,
        qos: u8,
        result: Result<(), Refused>,
    ) -> Result<(), Close> {
        match result {
            Ok(()) => self.send(front_end::stored(pkid, qos)),
            Err(refused) => {
                // Appended but not durable in time: no PUBACK; the client
                // resends after reconnecting (at least once).
                Err(Close::because(
                    Reason::ImplementationSpecificError,
                    refused.to_string(),
                ))
            }
        }
    }
}

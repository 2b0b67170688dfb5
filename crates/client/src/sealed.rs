//! Sealed records over blind topics (BLIND.md §6, §7): the producer and
//! consumer state that [`crate::BlindProducer`] and [`crate::BlindConsumer`]
//! use when a topic is sealed.
//!
//! - **Sealed flag.** A blind topic is sealed iff the broker stores its
//!   topic key r_T (id [`TOPIC_KEY_ID`]). The first sealing producer creates
//!   and registers it; consumers ask for it once on subscribe, so
//!   `veil consume --blind T` needs no flag and no protocol change. A plain
//!   producer refuses a sealed topic.
//! - **Data keys.** One DEK per (producer session, partition), so counters
//!   are contiguous per partition and a consumer of any subset of partitions
//!   sees gaps exactly. Rolled at the [`DekLimits`] and when the kid's
//!   revocation epoch moves: the producer re-resolves at most every
//!   `epoch_check` (250 ms by default) before sending, so records sent later
//!   than `epoch_check` + one round trip after a revocation use a new DEK.
//! - **Partitioner.** Chosen before sealing (the AAD binds it): Kafka's
//!   murmur2 of the key tag for keyed records, round-robin otherwise; the
//!   record goes to that explicit partition.
//! - **Deletes (compacted topics).** Deleting a key is a Kafka tombstone:
//!   the key tag with a null value, in clear, no envelope, so the cleaner
//!   drops the key's older records and, after `delete.retention.ms`, the
//!   tombstone. Consumers report it as [`Sequence::Deleted`] with the key tag
//!   as the record key. A tombstone is not authenticated: like dropping
//!   records, forging one is within the broker's power over availability
//!   (docs/compaction.md).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use veil_blind::{AeadId, DataKey, DekId, DekLimits, OpenedRecord, Sealer, TopicKey, TOPIC_KEY_ID};

use crate::blind::{BlindClient, BlindError};

/// How a producer seals.
#[derive(Clone, Copy, Debug)]
pub struct SealOptions {
    pub aead: AeadId,
    pub limits: DekLimits,
    /// How often the producer re-reads the revocation epoch.
    pub epoch_check: Duration,
}

impl Default for SealOptions {
    fn default() -> Self {
        SealOptions {
            aead: AeadId::Aes256Gcm,
            limits: DekLimits::default(),
            epoch_check: Duration::from_millis(250),
        }
    }
}

fn scheme(e: &veil_blind::Error) -> BlindError {
    BlindError::Scheme(e.to_string())
}

/// Kafka's murmur2, shared with the broker's MQTT front end.
pub use veil_blind::partitioner::murmur2;

/// The topic's key-tag key: fetched, or created and registered if this is
/// the first sealing producer. `create = false` only fetches.
pub(crate) async fn topic_key(
    client: &BlindClient,
    topic: &str,
    physical: &str,
    create: bool,
) -> Result<Option<TopicKey>, BlindError> {
    let key = client.user_key();
    if let Some(x) = client.key_get(topic, physical, TOPIC_KEY_ID).await? {
        return key
            .open_topic_key(topic, &x)
            .map(Some)
            .map_err(|e| scheme(&e));
    }
    if !create {
        return Ok(None);
    }
    let (tk, wrap) = key.create_topic_key(topic).map_err(|e| scheme(&e))?;
    if client
        .key_put(topic, physical, TOPIC_KEY_ID, wrap)
        .await?
        .is_some()
    {
        return Ok(Some(tk));
    }
    // Another producer won the race: use theirs.
    let x = client
        .key_get(topic, physical, TOPIC_KEY_ID)
        .await?
        .ok_or_else(|| BlindError::Scheme("the topic key vanished".into()))?;
    key.open_topic_key(topic, &x)
        .map(Some)
        .map_err(|e| scheme(&e))
}

/// Producer state of one sealed topic.
pub(crate) struct SealedTopic {
    topic: String,
    pub(crate) physical: String,
    partitions: u32,
    tags: TopicKey,
    opts: SealOptions,
    /// partition → (sealer, created at).
    sessions: HashMap<u32, (Sealer, Instant)>,
    epoch: i64,
    checked: Instant,
    round_robin: u32,
}

/// What to hand librdkafka for one sealed record.
pub(crate) struct SealedOut {
    pub(crate) partition: i32,
    pub(crate) key: Option<[u8; 32]>,
    /// `None`: a tombstone.
    pub(crate) value: Option<Vec<u8>>,
}

impl SealedTopic {
    pub(crate) async fn open(
        client: &BlindClient,
        topic: &str,
        partitions: i32,
        opts: SealOptions,
    ) -> Result<Self, BlindError> {
        let r = client.create_topic(topic, partitions).await?;
        let tags = topic_key(client, topic, &r.physical_name, true)
            .await?
            .ok_or_else(|| BlindError::Scheme("no topic key".into()))?;
        Ok(SealedTopic {
            topic: topic.to_owned(),
            physical: r.physical_name,
            partitions: u32::try_from(r.partitions.max(1)).unwrap_or(1),
            tags,
            opts,
            sessions: HashMap::new(),
            epoch: r.revocation_epoch,
            checked: Instant::now(),
            round_robin: 0,
        })
    }

    /// Kafka's default partitioner over the key tag (`toPositive(murmur2) % n`).
    fn partition_of(&self, tag: &[u8; 32]) -> u32 {
        (u32::from_be_bytes(murmur2(tag).to_be_bytes()) & 0x7fff_ffff) % self.partitions
    }

    /// A delete of `key`: its tag and a null value, on the key's partition.
    pub(crate) fn tombstone(&self, key: &[u8]) -> Result<SealedOut, BlindError> {
        let tag = self.tags.keytag(key).map_err(|e| scheme(&e))?;
        Ok(SealedOut {
            partition: i32::try_from(self.partition_of(&tag)).unwrap_or(0),
            key: Some(tag),
            value: None,
        })
    }

    /// Choose the partition, roll keys if due, seal.
    pub(crate) async fn seal(
        &mut self,
        client: &BlindClient,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[veil_blind::Header],
    ) -> Result<SealedOut, BlindError> {
        // One clock read per record (both checks below use it).
        let now = Instant::now();
        if now.duration_since(self.checked) >= self.opts.epoch_check {
            let r = client.resolve(&self.topic).await?;
            self.checked = Instant::now();
            self.note_epoch(r.revocation_epoch);
        }
        let tag = key
            .map(|k| self.tags.keytag(k))
            .transpose()
            .map_err(|e| scheme(&e))?;
        let partition = if let Some(t) = &tag {
            self.partition_of(t)
        } else {
            self.round_robin = self.round_robin.wrapping_add(1);
            self.round_robin % self.partitions
        };
        for _ in 0..2 {
            let due = self
                .sessions
                .get(&partition)
                .is_none_or(|(s, at)| s.should_rotate(now.saturating_duration_since(*at)));
            if due {
                self.roll(client, partition).await?;
            }
            let (sealer, _) = self
                .sessions
                .get_mut(&partition)
                .ok_or_else(|| BlindError::Scheme("no data key".into()))?;
            match sealer.seal_record(partition, key, value, headers) {
                Ok(v) => {
                    return Ok(SealedOut {
                        partition: i32::try_from(partition).unwrap_or(0),
                        key: tag,
                        value: Some(v),
                    })
                }
                Err(veil_blind::Error::DekExhausted(_)) => {
                    self.sessions.remove(&partition);
                }
                Err(e) => return Err(scheme(&e)),
            }
        }
        Err(BlindError::Scheme(
            "a record does not fit in a fresh data key".into(),
        ))
    }

    fn note_epoch(&mut self, epoch: i64) {
        if epoch != self.epoch {
            // A revocation: no record sealed from now on may use a DEK the
            // revoked user could have unwrapped.
            self.epoch = epoch;
            self.sessions.clear();
        }
    }

    async fn roll(&mut self, client: &BlindClient, partition: u32) -> Result<(), BlindError> {
        let (dek, wrap) = client
            .user_key()
            .create_dek(&self.topic)
            .map_err(|e| scheme(&e))?;
        let epoch = client
            .key_put(&self.topic, &self.physical, dek.dek_id().as_bytes(), wrap)
            .await?
            .ok_or_else(|| BlindError::Scheme("data key id collision".into()))?;
        self.note_epoch(epoch);
        self.sessions.insert(
            partition,
            (
                Sealer::new(dek, self.opts.aead, self.opts.limits),
                Instant::now(),
            ),
        );
        Ok(())
    }
}

/// Where a verified record stands in its producer session's counter
/// sequence (per data key, which is per producer session and partition).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sequence {
    /// The next record of its session.
    InOrder,
    /// `missing` counters were skipped: records lost, withheld or not yet seen.
    Gap { missing: u64 },
    /// The same counter was already delivered: a replay.
    Duplicate,
    /// An earlier counter arriving after later ones (it was reported in a gap).
    Reordered,
    /// A tombstone: the key whose tag is the record's key was deleted. Not
    /// authenticated (it has no envelope), and outside any counter sequence.
    Deleted,
}

/// Skipped counter ranges remembered per data key; beyond this the oldest
/// are forgotten (a very late record is then reported as a duplicate).
const MAX_MISSING_RANGES: usize = 1024;

/// Counter bookkeeping of one data key, in bounded memory.
#[derive(Default)]
struct Track {
    next: u64,
    /// Skipped ranges [start, end) not seen yet: a record inside one is
    /// late (reordered); any other record below `next` is a replay.
    missing: BTreeMap<u64, u64>,
}

impl Track {
    fn observe(&mut self, first: u64) -> Sequence {
        let end = first.saturating_add(1);
        if first >= self.next {
            let missing = first - self.next;
            if missing > 0 {
                self.missing.insert(self.next, first);
                if self.missing.len() > MAX_MISSING_RANGES {
                    self.missing.pop_first();
                }
            }
            self.next = end;
            return if missing == 0 {
                Sequence::InOrder
            } else {
                Sequence::Gap { missing }
            };
        }
        let hit = self
            .missing
            .range(..=first)
            .next_back()
            .map(|(&s, &e)| (s, e))
            .filter(|&(_, e)| first < e);
        let Some((s, e)) = hit else {
            return Sequence::Duplicate;
        };
        self.missing.remove(&s);
        if s < first {
            self.missing.insert(s, first);
        }
        if end < e {
            self.missing.insert(end, e);
        }
        Sequence::Reordered
    }
}

/// Consumer state of one sealed topic: cached data keys and counters.
pub(crate) struct Opener {
    topic: String,
    physical: String,
    /// Unwrapped data keys with their counter tracks (one lookup per record).
    keys: HashMap<DekId, (DataKey, Track)>,
}

impl Opener {
    pub(crate) fn new(topic: &str, physical: &str) -> Self {
        Opener {
            topic: topic.to_owned(),
            physical: physical.to_owned(),
            keys: HashMap::new(),
        }
    }

    /// Verify and open one fetched record.
    pub(crate) async fn open(
        &mut self,
        client: &BlindClient,
        partition: i32,
        offset: i64,
        value: Option<&[u8]>,
    ) -> Result<(OpenedRecord, Sequence), BlindError> {
        let bad = |reason: &str| BlindError::Integrity {
            partition,
            offset,
            reason: reason.to_owned(),
        };
        let value = value.ok_or_else(|| bad("not a sealed record (no value)"))?;
        let (kid, dek_id) =
            veil_blind::record_dek(value).map_err(|_| bad("not a sealed record"))?;
        if kid != client.user_key().kid().as_bytes() {
            return Err(bad("sealed under another key epoch"));
        }
        if !self.keys.contains_key(&dek_id) {
            let x = client
                .key_get(&self.topic, &self.physical, dek_id.as_bytes())
                .await?
                .ok_or_else(|| bad("the broker has no such data key"))?;
            let dek = client
                .user_key()
                .open_dek(&self.topic, dek_id, &x)
                .map_err(|_| bad("cannot unwrap the data key"))?;
            self.keys.insert(dek_id, (dek, Track::default()));
        }
        let p = u32::try_from(partition).map_err(|_| bad("negative partition"))?;
        let (dek, track) = self
            .keys
            .get_mut(&dek_id)
            .ok_or_else(|| bad("the data key vanished"))?;
        let rec = dek
            .open_record(p, value)
            .map_err(|_| bad("authentication failed (tampered, moved or substituted)"))?;
        let seq = track.observe(rec.counter);
        Ok((rec, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::{Sequence, Track};

    #[test]
    fn counter_tracking() {
        let mut t = Track::default();
        assert_eq!(t.observe(0), Sequence::InOrder);
        assert_eq!(t.observe(1), Sequence::InOrder);
        assert_eq!(t.observe(0), Sequence::Duplicate);
        // Records 2 to 5 are held back; 6 arrives first.
        assert_eq!(t.observe(6), Sequence::Gap { missing: 4 });
        assert_eq!(t.observe(4), Sequence::Reordered);
        assert_eq!(t.observe(4), Sequence::Duplicate);
        assert_eq!(t.observe(2), Sequence::Reordered);
        assert_eq!(t.observe(5), Sequence::Reordered);
        assert_eq!(t.observe(3), Sequence::Reordered);
        assert_eq!(t.observe(3), Sequence::Duplicate);
        assert!(t.missing.is_empty());
        assert_eq!(t.observe(7), Sequence::InOrder);
        for i in 0..2000u64 {
            t.observe(10 + 2 * i);
        }
        assert!(t.missing.len() <= super::MAX_MISSING_RANGES);
    }
}

//! The binary encoding of group records: a [`Record`] becomes one or more
//! entries of at most [`MAX_RECORD_BYTES`], and entries become records again.
//!
//! Pure and independent of where entries are kept: [`super::store`] frames
//! them in files; an internal replicated partition can carry them as record
//! values. Decoding checks every length against its field's cap and against
//! the bytes left before it allocates, and refuses trailing bytes.
//!
//! Why a record may take several entries: a group's metadata grows with its
//! members and a commit with its partitions, but an entry must not, because
//! the reader refuses anything above the cap and so the writer never makes it.
//! * `Group` → a header entry that counts its members, then one entry per
//!   member. [`Assembler`] rebuilds the record and drops a group whose member
//!   entries stop short (a torn write, which was never acknowledged).
//! * `Offsets` and `DeleteOffsets` → chunks of about [`CHUNK_BYTES`], each a
//!   complete record.
//!
//! ```text
//! entry   = u8 version (1) ‖ u8 kind ‖ body          integers big-endian
//! str     = u32 length ‖ UTF-8    bytes = u32 length ‖ bytes    opt = u8 0 | u8 1 ‖ value
//! kind 1 group:          str group ‖ opt str protocol_type ‖ opt str protocol_name
//!                        ‖ i32 generation ‖ opt str leader ‖ i64 state_timestamp ‖ u32 members
//! kind 2 member:         str group ‖ str member ‖ opt str instance ‖ str client_id ‖ str client_host
//!                        ‖ i32 rebalance_timeout_ms ‖ i32 session_timeout_ms
//!                        ‖ bytes subscription ‖ bytes assignment
//! kind 3 offsets:        str group ‖ u32 n ‖ n × (str topic ‖ i32 partition ‖ i64 offset
//!                        ‖ i32 leader_epoch ‖ str metadata ‖ i64 commit_ts ‖ i64 expire_ts)
//! kind 4 delete offsets: str group ‖ u32 n ‖ n × (str topic ‖ i32 partition)
//! kind 5 delete group:   str group
//! ```
//!
//! Stores written before this format hold JSON records, which start with `{`;
//! [`decode`] still reads them so that such a store opens and is rewritten.

use super::record::{CommittedOffset, GroupRecord, MemberRecord, Record, TopicPartition};

/// The format version, the first byte of every entry.
pub const VERSION: u8 = 1;
/// Largest entry written or read. Kafka's `message.max.bytes` default is the
/// same megabyte; the largest entry the caps below allow is about 690 KiB.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// Offsets and deletions are cut into entries of about this size.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Ids, names and hosts: Kafka strings are at most 32 767 bytes, and member
/// ids append `-<uuid>` to one.
pub const MAX_NAME_BYTES: usize = 32_767 + 64;
/// Committed offset metadata (`offset.metadata.max.bytes` may not exceed it).
pub const MAX_OFFSET_METADATA_BYTES: usize = 64 * 1024;
/// A member's metadata for the group's protocol (a consumer's subscription).
pub const MAX_MEMBER_METADATA_BYTES: usize = 256 * 1024;
/// A member's assignment from the leader.
pub const MAX_ASSIGNMENT_BYTES: usize = 256 * 1024;
/// Members a group header may announce.
const MAX_MEMBERS: u32 = 1_000_000;

const KIND_GROUP: u8 = 1;
const KIND_MEMBER: u8 = 2;
const KIND_OFFSETS: u8 = 3;
const KIND_DELETE_OFFSETS: u8 = 4;
const KIND_DELETE_GROUP: u8 = 5;
const KIND_TXN_OFFSETS: u8 = 6;
const KIND_TXN_END: u8 = 7;

/// Bytes that are not an entry, or a record that does not fit the caps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Malformed(pub String);

/// One decoded entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// A complete record.
    Record(Record),
    /// A group's metadata without its members, and how many member entries follow.
    GroupHeader { group: GroupRecord, members: u32 },
    /// One member of the group whose header came before.
    Member {
        group_id: String,
        member: MemberRecord,
    },
}

/// Encodes `record` as entries of at most [`MAX_RECORD_BYTES`] each.
pub fn encode(record: &Record) -> Result<Vec<Vec<u8>>, Malformed> {
    let entries = match record {
        Record::Group(g) => encode_group(g)?,
        Record::Offsets { group_id, offsets } => {
            chunked(KIND_OFFSETS, group_id, offsets, |_| {}, write_offset)?
        }
        Record::TxnOffsets {
            group_id,
            producer_id,
            producer_epoch,
            offsets,
        } => chunked(
            KIND_TXN_OFFSETS,
            group_id,
            offsets,
            |w| {
                w.i64(*producer_id);
                w.i16(*producer_epoch);
            },
            write_offset,
        )?,
        Record::TxnEnd {
            group_id,
            producer_id,
            commit,
        } => {
            let mut w = Writer::new(KIND_TXN_END);
            w.str(group_id, MAX_NAME_BYTES, "group id")?;
            w.i64(*producer_id);
            w.u8(u8::from(*commit));
            vec![w.0]
        }
        Record::DeleteOffsets {
            group_id,
            partitions,
        } => chunked(
            KIND_DELETE_OFFSETS,
            group_id,
            partitions,
            |_| {},
            |w, (topic, partition)| {
                w.str(topic, MAX_NAME_BYTES, "topic")?;
                w.i32(*partition);
                Ok(())
            },
        )?,
        Record::DeleteGroup { group_id } => {
            let mut w = Writer::new(KIND_DELETE_GROUP);
            w.str(group_id, MAX_NAME_BYTES, "group id")?;
            vec![w.0]
        }
    };
    match entries.iter().find(|e| e.len() > MAX_RECORD_BYTES) {
        Some(e) => Err(Malformed(format!(
            "an entry of {} bytes exceeds {MAX_RECORD_BYTES}",
            e.len()
        ))),
        None => Ok(entries),
    }
}

fn encode_group(g: &GroupRecord) -> Result<Vec<Vec<u8>>, Malformed> {
    let count = u32::try_from(g.members.len())
        .ok()
        .filter(|&n| n <= MAX_MEMBERS)
        .ok_or_else(|| Malformed(format!("{} members in one group", g.members.len())))?;
    let mut w = Writer::new(KIND_GROUP);
    w.str(&g.group_id, MAX_NAME_BYTES, "group id")?;
    w.opt_str(g.protocol_type.as_deref(), "protocol type")?;
    w.opt_str(g.protocol_name.as_deref(), "protocol name")?;
    w.i32(g.generation_id);
    w.opt_str(g.leader.as_deref(), "leader")?;
    w.i64(g.state_timestamp);
    w.u32(count);
    let mut entries = vec![w.0];
    for m in &g.members {
        let mut w = Writer::new(KIND_MEMBER);
        w.str(&g.group_id, MAX_NAME_BYTES, "group id")?;
        w.str(&m.member_id, MAX_NAME_BYTES, "member id")?;
        w.opt_str(m.instance_id.as_deref(), "group instance id")?;
        w.str(&m.client_id, MAX_NAME_BYTES, "client id")?;
        w.str(&m.client_host, MAX_NAME_BYTES, "client host")?;
        w.i32(m.rebalance_timeout_ms);
        w.i32(m.session_timeout_ms);
        w.bytes(
            &m.subscription,
            MAX_MEMBER_METADATA_BYTES,
            "member metadata",
        )?;
        w.bytes(&m.assignment, MAX_ASSIGNMENT_BYTES, "assignment")?;
        entries.push(w.0);
    }
    Ok(entries)
}

/// `group ‖ u32 n ‖ n items` entries, a new one whenever the next item would
/// take the current one past [`CHUNK_BYTES`]; always at least one.
/// One committed offset of an offsets entry.
fn write_offset(
    w: &mut Writer,
    (topic, partition, o): &(String, i32, CommittedOffset),
) -> Result<(), Malformed> {
    w.str(topic, MAX_NAME_BYTES, "topic")?;
    w.i32(*partition);
    w.i64(o.offset);
    w.i32(o.leader_epoch);
    w.str(&o.metadata, MAX_OFFSET_METADATA_BYTES, "offset metadata")?;
    w.i64(o.commit_timestamp);
    w.i64(o.expire_timestamp);
    Ok(())
}

/// The committed offsets of an offsets entry.
fn read_offsets(r: &mut Reader<'_>) -> Result<Vec<(String, i32, CommittedOffset)>, Malformed> {
    // topic length, partition, offset, epoch, metadata length, two timestamps.
    let n = r.count(4 + 4 + 8 + 4 + 4 + 8 + 8, "offsets")?;
    let mut offsets = Vec::with_capacity(n);
    for _ in 0..n {
        let topic = r.str(MAX_NAME_BYTES, "topic")?;
        let partition = r.i32("partition")?;
        offsets.push((
            topic,
            partition,
            CommittedOffset {
                offset: r.i64("offset")?,
                leader_epoch: r.i32("leader epoch")?,
                metadata: r.str(MAX_OFFSET_METADATA_BYTES, "offset metadata")?,
                commit_timestamp: r.i64("commit timestamp")?,
                expire_timestamp: r.i64("expire timestamp")?,
            },
        ));
    }
    Ok(offsets)
}

fn chunked<T>(
    kind: u8,
    group_id: &str,
    items: &[T],
    fields: impl FnOnce(&mut Writer),
    mut put: impl FnMut(&mut Writer, &T) -> Result<(), Malformed>,
) -> Result<Vec<Vec<u8>>, Malformed> {
    let mut head = Writer::new(kind);
    head.str(group_id, MAX_NAME_BYTES, "group id")?;
    fields(&mut head);
    let finish = |body: &Writer, n: u32| {
        let mut entry = Vec::with_capacity(head.0.len() + 4 + body.0.len());
        entry.extend_from_slice(&head.0);
        entry.extend_from_slice(&n.to_be_bytes());
        entry.extend_from_slice(&body.0);
        entry
    };
    let mut entries = Vec::new();
    let mut body = Writer(Vec::new());
    let mut n = 0u32;
    let mut item = Writer(Vec::new());
    for t in items {
        item.0.clear();
        put(&mut item, t)?;
        if n > 0 && head.0.len() + 4 + body.0.len() + item.0.len() > CHUNK_BYTES {
            entries.push(finish(&body, n));
            body.0.clear();
            n = 0;
        }
        body.0.extend_from_slice(&item.0);
        n += 1;
    }
    entries.push(finish(&body, n));
    Ok(entries)
}

/// Decodes one entry (or one JSON record of the format before).
pub fn decode(bytes: &[u8]) -> Result<Entry, Malformed> {
    match bytes.first() {
        None => Err(Malformed("empty entry".into())),
        Some(b'{') => serde_json::from_slice(bytes)
            .map(Entry::Record)
            .map_err(|e| Malformed(format!("JSON record: {e}"))),
        Some(&VERSION) if bytes.len() > MAX_RECORD_BYTES => Err(Malformed(format!(
            "entry of {} bytes exceeds {MAX_RECORD_BYTES}",
            bytes.len()
        ))),
        Some(&VERSION) => {
            let mut r = Reader { buf: &bytes[1..] };
            let entry = decode_body(&mut r)?;
            if !r.buf.is_empty() {
                return Err(Malformed(format!(
                    "{} trailing bytes after the entry",
                    r.buf.len()
                )));
            }
            Ok(entry)
        }
        Some(v) => Err(Malformed(format!("unknown group record version {v}"))),
    }
}

fn decode_body(r: &mut Reader<'_>) -> Result<Entry, Malformed> {
    let kind = r.u8("kind")?;
    let group_id = r.str(MAX_NAME_BYTES, "group id")?;
    Ok(match kind {
        KIND_GROUP => {
            let protocol_type = r.opt_str("protocol type")?;
            let protocol_name = r.opt_str("protocol name")?;
            let generation_id = r.i32("generation")?;
            let leader = r.opt_str("leader")?;
            let state_timestamp = r.i64("state timestamp")?;
            let members = r.u32("member count")?;
            if members > MAX_MEMBERS {
                return Err(Malformed(format!("{members} members in one group")));
            }
            Entry::GroupHeader {
                group: GroupRecord {
                    group_id,
                    protocol_type,
                    protocol_name,
                    generation_id,
                    leader,
                    state_timestamp,
                    members: Vec::new(),
                },
                members,
            }
        }
        KIND_MEMBER => Entry::Member {
            group_id,
            member: MemberRecord {
                member_id: r.str(MAX_NAME_BYTES, "member id")?,
                instance_id: r.opt_str("group instance id")?,
                client_id: r.str(MAX_NAME_BYTES, "client id")?,
                client_host: r.str(MAX_NAME_BYTES, "client host")?,
                rebalance_timeout_ms: r.i32("rebalance timeout")?,
                session_timeout_ms: r.i32("session timeout")?,
                subscription: r.bytes(MAX_MEMBER_METADATA_BYTES, "member metadata")?,
                assignment: r.bytes(MAX_ASSIGNMENT_BYTES, "assignment")?,
            },
        },
        KIND_OFFSETS => Entry::Record(Record::Offsets {
            group_id,
            offsets: read_offsets(r)?,
        }),
        KIND_TXN_OFFSETS => {
            let producer_id = r.i64("producer id")?;
            let producer_epoch = r.i16("producer epoch")?;
            Entry::Record(Record::TxnOffsets {
                group_id,
                producer_id,
                producer_epoch,
                offsets: read_offsets(r)?,
            })
        }
        KIND_TXN_END => Entry::Record(Record::TxnEnd {
            group_id,
            producer_id: r.i64("producer id")?,
            commit: r.u8("commit")? != 0,
        }),
        KIND_DELETE_OFFSETS => {
            let n = r.count(4 + 4, "partitions")?;
            let mut partitions: Vec<TopicPartition> = Vec::with_capacity(n);
            for _ in 0..n {
                partitions.push((r.str(MAX_NAME_BYTES, "topic")?, r.i32("partition")?));
            }
            Entry::Record(Record::DeleteOffsets {
                group_id,
                partitions,
            })
        }
        KIND_DELETE_GROUP => Entry::Record(Record::DeleteGroup { group_id }),
        other => return Err(Malformed(format!("unknown group record kind {other}"))),
    })
}

/// Rebuilds records from entries, in the order they were written.
#[derive(Debug, Default)]
pub struct Assembler {
    pending: Option<(GroupRecord, usize)>,
    incomplete: Vec<String>,
}

impl Assembler {
    /// Takes the next entry; returns a record once one is complete.
    pub fn push(&mut self, entry: Entry) -> Result<Option<Record>, Malformed> {
        let (group_id, member) = match entry {
            Entry::Member { group_id, member } => (group_id, member),
            Entry::Record(r) => {
                self.abandon_pending();
                return Ok(Some(r));
            }
            Entry::GroupHeader { group, members } => {
                self.abandon_pending();
                if members == 0 {
                    return Ok(Some(Record::Group(group)));
                }
                self.pending = Some((group, members as usize));
                return Ok(None);
            }
        };
        let Some((group, expected)) = &mut self.pending else {
            return Err(Malformed(format!(
                "member of group {group_id} without its group header"
            )));
        };
        if group.group_id != group_id {
            return Err(Malformed(format!(
                "member of group {group_id} inside group {}",
                group.group_id
            )));
        }
        group.members.push(member);
        if group.members.len() < *expected {
            return Ok(None);
        }
        Ok(self.pending.take().map(|(g, _)| Record::Group(g)))
    }

    /// Any entry but a member ends the group before it, complete or not.
    fn abandon_pending(&mut self) {
        if let Some((g, _)) = self.pending.take() {
            self.incomplete.push(g.group_id);
        }
    }

    /// Groups whose member entries stopped short, in order; the state each
    /// had before stands.
    pub fn finish(mut self) -> Vec<String> {
        self.abandon_pending();
        self.incomplete
    }
}

struct Writer(Vec<u8>);

impl Writer {
    fn new(kind: u8) -> Writer {
        Writer(vec![VERSION, kind])
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }

    fn bytes(&mut self, v: &[u8], cap: usize, what: &str) -> Result<(), Malformed> {
        if v.len() > cap {
            return Err(Malformed(format!(
                "{what} of {} bytes exceeds {cap}",
                v.len()
            )));
        }
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
        Ok(())
    }

    fn str(&mut self, v: &str, cap: usize, what: &str) -> Result<(), Malformed> {
        self.bytes(v.as_bytes(), cap, what)
    }

    fn opt_str(&mut self, v: Option<&str>, what: &str) -> Result<(), Malformed> {
        match v {
            None => self.0.push(0),
            Some(s) => {
                self.0.push(1);
                self.str(s, MAX_NAME_BYTES, what)?;
            }
        }
        Ok(())
    }
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], Malformed> {
        if n > self.buf.len() {
            return Err(Malformed(format!("truncated {what}")));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N], Malformed> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, Malformed> {
        Ok(self.fixed::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.fixed(what)?))
    }

    fn i32(&mut self, what: &str) -> Result<i32, Malformed> {
        Ok(i32::from_be_bytes(self.fixed(what)?))
    }

    fn i16(&mut self, what: &str) -> Result<i16, Malformed> {
        Ok(i16::from_be_bytes(self.fixed(what)?))
    }

    fn i64(&mut self, what: &str) -> Result<i64, Malformed> {
        Ok(i64::from_be_bytes(self.fixed(what)?))
    }

    /// A length prefix, checked against `cap` and the bytes left.
    fn len(&mut self, cap: usize, what: &str) -> Result<usize, Malformed> {
        let n = self.u32(what)? as usize;
        if n > cap {
            return Err(Malformed(format!("{what} of {n} bytes exceeds {cap}")));
        }
        if n > self.buf.len() {
            return Err(Malformed(format!("truncated {what}")));
        }
        Ok(n)
    }

    /// An item count, checked against what the bytes left could hold.
    fn count(&mut self, min_item_bytes: usize, what: &str) -> Result<usize, Malformed> {
        let n = self.u32(what)? as usize;
        if n > self.buf.len() / min_item_bytes {
            return Err(Malformed(format!(
                "{n} {what} cannot fit in {} bytes",
                self.buf.len()
            )));
        }
        Ok(n)
    }

    fn bytes(&mut self, cap: usize, what: &str) -> Result<Vec<u8>, Malformed> {
        let n = self.len(cap, what)?;
        Ok(self.take(n, what)?.to_vec())
    }

    fn str(&mut self, cap: usize, what: &str) -> Result<String, Malformed> {
        let n = self.len(cap, what)?;
        std::str::from_utf8(self.take(n, what)?)
            .map(str::to_owned)
            .map_err(|_| Malformed(format!("{what} is not UTF-8")))
    }

    fn opt_str(&mut self, what: &str) -> Result<Option<String>, Malformed> {
        match self.u8(what)? {
            0 => Ok(None),
            1 => self.str(MAX_NAME_BYTES, what).map(Some),
            _ => Err(Malformed(format!("{what}: bad presence flag"))),
        }
    }
}

#[cfg(test)]
mod tests;

//! Caps that group requests are checked against before anything reaches a
//! record, so that every record the coordinator makes fits the entries of
//! [`super::codec`] and is read back after a restart.
//!
//! Kafka names one of them, `offset.metadata.max.bytes` (our
//! `groups.offset_metadata_max_bytes`, answered OFFSET_METADATA_TOO_LARGE).
//! The others have no Kafka setting: ids and names longer than a Kafka
//! string (32 767 bytes), and protocol metadata or assignments beyond the
//! codec's caps, are INVALID_REQUEST.

use bytes::Bytes;

pub use super::codec::{
    MAX_ASSIGNMENT_BYTES, MAX_MEMBER_METADATA_BYTES, MAX_OFFSET_METADATA_BYTES,
};

/// Kafka's `offset.metadata.max.bytes` default.
pub const DEFAULT_OFFSET_METADATA_MAX_BYTES: usize = 4096;
/// The longest Kafka string (`i16` length).
pub const MAX_NAME_BYTES: usize = i16::MAX as usize;

// A member id is a Kafka string plus "-<uuid>", which the codec must hold.
const _: () = assert!(MAX_NAME_BYTES + 37 <= super::codec::MAX_NAME_BYTES);

/// Every name is at most a Kafka string long.
pub fn names_fit<'a>(names: impl IntoIterator<Item = &'a str>) -> bool {
    names.into_iter().all(|n| n.len() <= MAX_NAME_BYTES)
}

/// A JoinGroup's protocols: names within a Kafka string, metadata within
/// what a member record holds.
pub fn protocols_fit<'a>(protocols: impl IntoIterator<Item = (&'a str, &'a Bytes)>) -> bool {
    protocols.into_iter().all(|(name, metadata)| {
        name.len() <= MAX_NAME_BYTES && metadata.len() <= MAX_MEMBER_METADATA_BYTES
    })
}

/// A SyncGroup's assignments fit a member record.
pub fn assignments_fit<'a>(assignments: impl IntoIterator<Item = &'a Bytes>) -> bool {
    assignments
        .into_iter()
        .all(|a| a.len() <= MAX_ASSIGNMENT_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_match_kafka_strings_and_the_codec() {
        assert!(names_fit(["g", &"x".repeat(MAX_NAME_BYTES)]));
        assert!(!names_fit([&"x".repeat(MAX_NAME_BYTES + 1) as &str]));
        let ok = Bytes::from(vec![0; MAX_MEMBER_METADATA_BYTES]);
        let big = Bytes::from(vec![0; MAX_MEMBER_METADATA_BYTES + 1]);
        assert!(protocols_fit([("range", &ok)]));
        assert!(!protocols_fit([("range", &ok), ("sticky", &big)]));
        assert!(!assignments_fit([&Bytes::from(vec![
            0;
            MAX_ASSIGNMENT_BYTES
                + 1
        ])]));
    }
}

//! What produce does to batches before they are appended, when a topic's configs ask for it:
//! compacted topics refuse records without a key (Kafka's INVALID_RECORD), and a topic whose
//! `compression.type` is a codec gets every batch in that codec (recompressed when it differs,
//! stored as produced when it matches). Pure functions over bytes; the broker runs them on its
//! blocking pool because decompressing and compressing are CPU work.

use crate::batch::{validate_records, BatchHeader};
use crate::codec::{Codec, MAX_DECOMPRESSED};
use crate::error::{Error, Result};
use crate::records::{rebuild_batch, records_section, walk_records};

/// A topic's produce-time requirements (from [`crate::LogConfig::produce_policy`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProducePolicy {
    pub require_keys: bool,
    pub target: Option<Codec>,
    pub max_message_bytes: usize,
}

impl ProducePolicy {
    /// Whether produced batches are stored untouched.
    pub fn is_passthrough(&self) -> bool {
        !self.require_keys && self.target.is_none()
    }
}

/// Checks and rewrites a produced record set per `policy`. `Ok(None)`: store it as it is.
pub fn prepare_produce(records: &[u8], policy: &ProducePolicy) -> Result<Option<Vec<u8>>> {
    if policy.is_passthrough() {
        return Ok(None);
    }
    let headers = validate_records(records, policy.max_message_bytes)?;
    let mut out: Option<Vec<u8>> = None;
    let mut pos = 0usize;
    for h in &headers {
        let batch = &records[pos..pos + h.total_size()];
        let recompress = policy.target.filter(|t| t.compression != h.compression());
        let rewritten = if policy.require_keys || recompress.is_some() {
            check_and_recompress(batch, h, policy, recompress)?
        } else {
            None
        };
        match (rewritten, &mut out) {
            (Some(new), Some(buf)) => buf.extend_from_slice(&new),
            (Some(new), None) => {
                let mut buf = records[..pos].to_vec();
                buf.extend_from_slice(&new);
                out = Some(buf);
            }
            (None, Some(buf)) => buf.extend_from_slice(batch),
            (None, None) => {}
        }
        pos += h.total_size();
    }
    Ok(out)
}

fn check_and_recompress(
    batch: &[u8],
    h: &BatchHeader,
    policy: &ProducePolicy,
    target: Option<Codec>,
) -> Result<Option<Vec<u8>>> {
    let body = records_section(batch, h, MAX_DECOMPRESSED)?;
    walk_records(&body, h.base_offset, h.records_count, |r| {
        if policy.require_keys && r.key.is_none() {
            return Err(Error::InvalidRecord(
                "compacted topic cannot accept a record without a key".into(),
            ));
        }
        Ok(())
    })?;
    let Some(codec) = target else {
        return Ok(None);
    };
    let rebuilt = rebuild_batch(h, codec, &body, h.records_count)?;
    if rebuilt.len() > policy.max_message_bytes {
        return Err(Error::RecordTooLarge {
            size: rebuilt.len(),
            max: policy.max_message_bytes,
        });
    }
    Ok(Some(rebuilt))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::Compression;
    use crate::records::encode_batch;

    fn policy(require_keys: bool, target: Option<Compression>) -> ProducePolicy {
        ProducePolicy {
            require_keys,
            target: target.map(|c| Codec::new(c, None)),
            max_message_bytes: 1 << 20,
        }
    }

    type Row = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

    fn values(records: &[u8]) -> Vec<Row> {
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < records.len() {
            let h = BatchHeader::parse(&records[pos..]).unwrap();
            let batch = &records[pos..pos + h.total_size()];
            let body = records_section(batch, &h, 1 << 20).unwrap();
            walk_records(&body, h.base_offset, h.records_count, |r| {
                out.push((
                    r.offset,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                ));
                Ok(())
            })
            .unwrap();
            pos += h.total_size();
        }
        out
    }

    #[test]
    fn passthrough_and_matching_codec_store_as_produced() {
        let batch = encode_batch(&[(Some(b"k"), Some(b"v"))], 5);
        assert_eq!(prepare_produce(&batch, &policy(false, None)).unwrap(), None);
        assert_eq!(
            prepare_produce(&batch, &policy(true, Some(Compression::None))).unwrap(),
            None
        );
    }

    #[test]
    fn keyless_records_are_refused_on_compacted_topics() {
        let batch = encode_batch(&[(Some(b"k"), Some(b"v")), (None, Some(b"v"))], 5);
        let err = prepare_produce(&batch, &policy(true, None)).unwrap_err();
        assert!(matches!(err, Error::InvalidRecord(_)), "{err}");
        // Also inside a compressed batch.
        let gz = prepare_produce(&batch, &policy(false, Some(Compression::Gzip)))
            .unwrap()
            .unwrap();
        assert!(matches!(
            prepare_produce(&gz, &policy(true, None)),
            Err(Error::InvalidRecord(_))
        ));
    }

    #[test]
    fn recompression_keeps_every_record_and_header_field() {
        let mut two = encode_batch(&[(Some(b"a"), Some(b"1")), (Some(b"b"), None)], 7);
        two.extend(encode_batch(&[(Some(b"c"), Some(b"3"))], 8));
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let out = prepare_produce(&two, &policy(true, Some(codec)))
                .unwrap()
                .unwrap();
            let headers = validate_records(&out, 1 << 20).unwrap();
            assert_eq!(headers.len(), 2);
            assert!(headers.iter().all(|h| h.compression() == codec));
            assert_eq!(headers[0].base_timestamp, 7);
            assert_eq!(values(&out), values(&two), "{codec:?}");
            // And back to uncompressed.
            let plain = prepare_produce(&out, &policy(false, Some(Compression::None)))
                .unwrap()
                .unwrap();
            assert_eq!(values(&plain), values(&two));
        }
    }

    #[test]
    fn recompressed_batches_still_respect_max_message_bytes() {
        let mut x: u64 = 1;
        let noise: Vec<u8> = (0..4000)
            .map(|_| {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (x >> 56) as u8
            })
            .collect();
        let batch = encode_batch(&[(Some(b"k"), Some(&noise))], 1);
        let mut p = policy(false, Some(Compression::Gzip));
        p.max_message_bytes = batch.len();
        assert!(matches!(
            prepare_produce(&batch, &p),
            Err(Error::RecordTooLarge { .. })
        ));
    }
}

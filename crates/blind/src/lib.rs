//! # veil-blind: blind topics and sealed records
//!
//! The split-key RSA matching scheme of Dong, Russello and Dulay (DBSec 2008)
//! as hardened in `BLIND.md`: the broker maps a client's topic token to a
//! physical Kafka topic without learning the name, relays data keys it cannot
//! read, and stores records it cannot read. Pure: no IO, no async, no clock.
//!
//! ## Threat model (BLIND.md §2)
//!
//! > The broker host is untrusted for confidentiality. It may read all memory, disk and
//! > traffic it handles and may deviate from the protocol. It learns no topic name, record key
//! > or record value of any tenant, except for the leakage listed in §8, **provided that no
//! > client holding a key of that tenant's current key epoch colludes with it or is
//! > compromised together with the broker's key store**. If such a collusion happens, every
//! > topic and record of that tenant-epoch is exposed, including past data. Recovery is
//! > a master-key epoch rotation: data written under the new epoch is safe; older data is not.
//! > The broker is trusted for availability, ordering and ACL enforcement *between users of
//! > the same tenant*. It can drop, delay, reorder or replay records and can show different
//! > consumers different logs. Consumers detect tampering, cross-topic substitution, and
//! > reordering within one producer session (§6), but not the omission of a whole session's
//! > records. The KMS is trusted and offline from the data path.
//!
//! ## Who calls what
//!
//! | party | type | calls |
//! |---|---|---|
//! | KMS | [`MasterKey`] | `generate`, `from_components`, `split` → ([`UserKey`], [`ServerShare`]), `physical_name`, `to_bytes`/`from_bytes` |
//! | client | [`UserKey`] | `token` (→ `BlindResolve`/`BlindCreateTopic`), `create_dek` (→ `BlindKeyPut`), `open_dek` (← `BlindKeyGet`), `create_topic_key`/`open_topic_key`; [`Sealer::seal`], [`DataKey::open`], [`Envelope::parse`] |
//! | broker | [`ServerShare`] | `resolve` (token → [`PhysicalName`]), `store_wrap` (w → W), `unwrap_for` (W → W^{d_j2}); [`check_element`] |
//!
//! ## Where to start reading
//!
//! [`params`] (sizes, safe primes, samplers) → [`keys`] (IGen/UGen, key
//! files) → `hash` (enc, FDH; private) → [`matching`] (tokens, physical names) →
//! [`wrap`] (DEKs, key tags) → [`seal`] (AEAD, AAD, envelope) → [`record`]
//! (a whole Kafka record sealed, header encoding) → [`wire`]
//! (group-element encoding and validation). [`partitioner`] is Kafka's
//! default partitioner, shared by the sealed producer and the broker.
//!
//! Every secret exponent goes through OpenSSL `BN_mod_exp` with
//! `BN_FLG_CONSTTIME` set (the constant-time Montgomery path); secrets live
//! in secure-heap `BigNum`s cleared on drop or in `Zeroizing` buffers, and
//! every `Debug` impl of secret-bearing types is redacted.

mod bignum;
pub mod error;
mod hash;
pub mod keys;
pub mod kms;
pub mod matching;
pub mod params;
pub mod partitioner;
pub mod protocol;
pub mod record;
pub mod seal;
pub mod wire;
pub mod wrap;

#[cfg(test)]
mod kat;

pub use error::{Error, Result};
pub use keys::{MasterKey, ServerShare, UserKey};
pub use matching::{PhysicalName, Token, PHYSICAL_NAME_LEN, PHYSICAL_PREFIX};
pub use params::{generate_safe_prime, is_safe_prime, Kid, ModulusBits};
pub use record::{decode_headers, encode_headers, record_dek, Header, OpenedRecord};
pub use seal::{AeadId, DekLimits, Envelope, Opened, Part, Sealer};
pub use wire::check_element;
pub use wrap::{DataKey, DekId, TopicKey, TOPIC_KEY_ID};

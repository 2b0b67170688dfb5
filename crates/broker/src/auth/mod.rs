//! Security: who a connection is and what it may do.
//!
//! [`acl`] holds the authorizer handlers consult through
//! [`crate::context::RequestContext::authorize`]; [`acl_matcher`] is its pure
//! decision logic (Kafka's ACL semantics).
//!
//! Authentication: [`tls`] wraps SSL listeners (mTLS principals through
//! [`principal`]'s mapping rules); [`sasl`] is the per-connection SASL state
//! machine over [`plain`] and [`scram`], with PLAIN passwords checked by
//! [`plain_check`] and failed logins slowed down by [`throttle`].

pub mod acl;
pub mod acl_matcher;
#[cfg(test)]
mod acl_matrix;
#[cfg(test)]
mod acl_matrix_groups;
pub mod plain;
pub mod plain_check;
pub mod principal;
pub mod sasl;
pub mod scram;
pub mod throttle;
pub mod tls;

pub use veil_meta::acl::{Operation, PatternType, Permission, ResourceType, CLUSTER_NAME};

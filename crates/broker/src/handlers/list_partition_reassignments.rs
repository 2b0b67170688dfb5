//! ListPartitionReassignments: see [`super::partition_reassignments`].

pub use super::partition_reassignments::list as handle;

//! AlterPartitionReassignments: see [`super::partition_reassignments`].

pub use super::partition_reassignments::alter as handle;

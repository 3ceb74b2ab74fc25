//! Exchange types and their routing tables.
pub mod topic;

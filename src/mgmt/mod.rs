//! The management plane: statistics for the HTTP API ([`stats`]) and the Prometheus
//! exposition ([`prometheus`]).
//!
//! (The stats branch adds only these two modules; the HTTP API's router lives here
//! too once merged with the lead's core.)

pub mod prometheus;
pub mod stats;

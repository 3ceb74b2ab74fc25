//! Connections: see conn/state.rs

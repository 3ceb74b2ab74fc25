//! Replays the committed fuzz corpora (`fuzz/corpus/<target>/`: seeds captured from
//! real clients, hand-written seeds and `crash-*` inputs of fixed bugs) through the
//! same `warren::fuzzing` entry points the cargo-fuzz targets call, on stable Rust.
//!
//! `warren::fuzzing` exists only with the `fuzzing` feature; Cargo.toml's self
//! dev-dependency turns it on for every `cargo test`, so this file is never skipped:
//! without the feature it fails to compile rather than replaying nothing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn replay(target: &str, entry: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("readable corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{} is empty", dir.display());
    let mut failed = Vec::new();
    for f in &files {
        let data = std::fs::read(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        if catch_unwind(AssertUnwindSafe(|| entry(&data))).is_err() {
            failed.push(f.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} corpus inputs panicked:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn frame() {
    replay("frame", warren::fuzzing::frame);
}

#[test]
fn method() {
    replay("method", warren::fuzzing::method);
}

#[test]
fn field_table() {
    replay("field_table", warren::fuzzing::field_table);
}

#[test]
fn queue_arguments() {
    replay("queue_arguments", warren::fuzzing::queue_arguments);
}

#[test]
fn properties() {
    replay("properties", warren::fuzzing::properties);
}

#[test]
fn topic() {
    replay("topic", warren::fuzzing::topic);
}

#[test]
fn connection() {
    replay("connection", warren::fuzzing::connection);
}

#[test]
fn segment() {
    replay("segment", warren::fuzzing::segment);
}

#[test]
fn http_request() {
    replay("http_request", warren::fuzzing::http_request);
}

#[test]
fn definitions() {
    replay("definitions", warren::fuzzing::definitions);
}

#[test]
fn x_death() {
    replay("x_death", warren::fuzzing::x_death);
}

#[test]
fn tls_server() {
    replay("tls_server", warren::fuzzing::tls_server);
}

#[test]
fn meta() {
    replay("meta", warren::fuzzing::meta);
}

#[test]
fn users_file() {
    replay("users_file", warren::fuzzing::users_file);
}

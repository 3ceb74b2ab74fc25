//! Why the store cannot open its data directory: the errors that stop start-up.
//!
//! Each names the path it is about and keeps its cause (`source`); `Display` is the one
//! line the binary prints after "warren: " (tests look for the path, "meta", "in use").

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::meta::MetaError;

/// A data directory the broker must not start with (it never starts silently empty on a
/// damaged one).
#[derive(Debug)]
pub enum StoreError {
    /// The directory cannot be created (e.g. a regular file is in the way).
    CreateDir { dir: PathBuf, source: io::Error },
    /// The lock file cannot be created or opened for writing.
    NotWritable { dir: PathBuf, source: io::Error },
    /// Another process holds the directory's lock.
    InUse { dir: PathBuf },
    /// The metadata snapshot is not one this build reads.
    Meta { path: PathBuf, source: MetaError },
    /// Reading or repairing a file (or listing the directory) failed.
    Io { path: PathBuf, source: io::Error },
}

impl StoreError {
    /// `Io` about `path`, for `map_err`.
    pub(super) fn io(path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::CreateDir { dir, source } => {
                write!(
                    f,
                    "cannot create data directory {}: {source}",
                    dir.display()
                )
            }
            StoreError::NotWritable { dir, source } => {
                write!(
                    f,
                    "cannot write in data directory {}: {source}",
                    dir.display()
                )
            }
            StoreError::InUse { dir } => write!(
                f,
                "data directory {} is in use by another warren",
                dir.display()
            ),
            StoreError::Meta { path, source } => write!(f, "{}: {source}", path.display()),
            StoreError::Io { path, source } => write!(f, "{}: {source}", path.display()),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::CreateDir { source, .. }
            | StoreError::NotWritable { source, .. }
            | StoreError::Io { source, .. } => Some(source),
            StoreError::Meta { source, .. } => Some(source),
            StoreError::InUse { .. } => None,
        }
    }
}

//! [`StoreError`]: why the store failed, and whether the fault is the
//! file's (damage) or the system's (a full disk), which decides whether a
//! store may ever be moved aside.

use std::path::PathBuf;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory could not be created.
    #[error("cannot create state directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file itself could not be opened: missing permission, not a
    /// regular file, or a symbolic link (refused, never followed).
    #[error("cannot open store {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The database file could not be opened: unreadable, corrupt, not a
    /// redb file, or already open in this process.
    #[error("cannot open store {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: Box<redb::DatabaseError>,
    },
    /// redb found the file inconsistent (it asserts rather than returning
    /// an error on some damage, such as a truncated file; the store turns
    /// that panic into this error).
    #[error("store {path} is damaged: {detail}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What redb found wrong.
        detail: String,
    },
    /// A read or write failed; a failed write changed nothing.
    #[error("store {op} on table {table:?} failed: {source}")]
    Op {
        /// What was being done (`put`, `get`, ...).
        op: &'static str,
        /// The table.
        table: String,
        /// The cause.
        source: Box<redb::Error>,
    },
}

impl StoreError {
    /// Whether the file is open in another process (redb locks it): a live
    /// store, never to be taken for a broken one.
    pub fn in_use(&self) -> bool {
        matches!(self, Self::Open { source, .. }
            if matches!(**source, redb::DatabaseError::DatabaseAlreadyOpen))
    }

    /// Whether the fault is in the system, not the file: no space or quota
    /// left, a read-only filesystem, no memory. The store may be sound, so
    /// it must not be discarded for this.
    pub fn environmental(&self) -> bool {
        let io = match self {
            Self::Dir { source, .. } | Self::File { source, .. } => Some(source),
            Self::Open { source, .. } => match &**source {
                redb::DatabaseError::Storage(redb::StorageError::Io(e)) => Some(e),
                _ => None,
            },
            Self::Op { source, .. } => match &**source {
                redb::Error::Io(e) => Some(e),
                _ => None,
            },
            Self::Damaged { .. } => None,
        };
        let codes =
            [libc::ENOSPC, libc::EDQUOT, libc::EROFS, libc::ENOMEM, libc::EMFILE, libc::ENFILE];
        io.and_then(std::io::Error::raw_os_error).is_some_and(|c| codes.contains(&c))
    }
}

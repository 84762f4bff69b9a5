//! [`StoreError`]: why the store failed, and whether the fault is the
//! file's (damage) or the system's (a full disk), which decides whether a
//! store may ever be moved aside.

use std::path::PathBuf;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state directory or the store directory could not be created.
    #[error("cannot create state directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file or the store directory itself could not be opened or read:
    /// missing permission, not a regular file (or not a directory), or a
    /// symbolic link (refused, never followed).
    #[error("cannot open store {path}: {source}")]
    File {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The store directory is locked by another open store: another
    /// process (a live daemon) or another handle in this one.
    #[error("cannot open store {path}: it is open in another process (locked)")]
    InUse {
        /// The store directory.
        path: PathBuf,
    },
    /// A record file is not what the store wrote: too short, too long,
    /// the wrong magic, or its checksum does not match its contents.
    #[error("store {path} is damaged: {detail}")]
    Damaged {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// A write failed; a failed write changed nothing.
    #[error("store {op} on table {table:?} failed: {source}")]
    Op {
        /// What was being done (`put`, `delete`, `flush`).
        op: &'static str,
        /// The table.
        table: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The caller asked for something the store never holds: an empty
    /// table name, a table and key too long for one file name, or a value
    /// over [`super::MAX_VALUE_BYTES`]. Nothing was written.
    #[error("store {op} on table {table:?} refused: {detail}")]
    Refused {
        /// What was being done.
        op: &'static str,
        /// The table.
        table: String,
        /// Why.
        detail: String,
    },
    /// A store of the format before this one (`lwsys.redb`) is in the
    /// state directory and could not be imported: this build has no
    /// `redb-import` feature, or the import failed. Never moved aside by
    /// the store: it may hold the device's only copy of its secrets.
    #[error("old store {path} not imported: {detail}")]
    Legacy {
        /// The old store file.
        path: PathBuf,
        /// Why it was not imported.
        detail: String,
    },
}

impl StoreError {
    /// Whether the store is open in another process (it is locked): a live
    /// store, never to be taken for a broken one.
    pub fn in_use(&self) -> bool {
        matches!(self, Self::InUse { .. })
    }

    /// Whether the fault is in the system, not the files: no space or
    /// quota left, a read-only filesystem, no memory or file descriptors.
    /// The store may be sound, so it must not be discarded for this.
    pub fn environmental(&self) -> bool {
        let io = match self {
            Self::Dir { source, .. } | Self::File { source, .. } | Self::Op { source, .. } => {
                Some(source)
            }
            Self::InUse { .. } | Self::Damaged { .. } | Self::Refused { .. } => None,
            Self::Legacy { .. } => None,
        };
        let codes =
            [libc::ENOSPC, libc::EDQUOT, libc::EROFS, libc::ENOMEM, libc::EMFILE, libc::ENFILE];
        io.and_then(std::io::Error::raw_os_error).is_some_and(|c| codes.contains(&c))
    }
}

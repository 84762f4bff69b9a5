//! Private files and directories in the state dir: created 0600 / 0700
//! whatever the umask, opened without following symlinks, and tightened
//! when an existing file is looser, because the store holds secrets.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of every file lwsysd creates in its state dir.
pub const PRIVATE_FILE_MODE: u32 = 0o600;

/// The mode of every directory lwsysd creates in its state dir.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// A file opened by [`open_private`].
#[derive(Debug)]
pub struct PrivateFile {
    /// The open file, read-write.
    pub file: File,
    /// Its permission bits before they were tightened to 0600, when they
    /// were looser.
    pub tightened_from: Option<u32>,
}

/// Says why an `O_NOFOLLOW` open failed on a symlink, rather than "too
/// many levels of symbolic links".
pub(crate) fn no_link(e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ELOOP) {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "it is a symbolic link; refused (state files are never opened through links)",
        )
    } else {
        e
    }
}

/// Opens `path` read-write; with `create`, creates it 0600 and fails if
/// it exists (`O_EXCL`). A symlink at `path` is refused (`O_NOFOLLOW`), as
/// is anything but a regular file; an existing file with group or other
/// bits is set to 0600 through its fd (no window for a swap), and its old
/// mode is returned for a warning.
pub fn open_private(path: &Path, create: bool) -> io::Result<PrivateFile> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(create)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(no_link)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"));
    }
    let mode = meta.mode() & 0o7777;
    let tightened_from = if mode & !PRIVATE_FILE_MODE != 0 {
        file.set_permissions(Permissions::from_mode(PRIVATE_FILE_MODE))?;
        Some(mode)
    } else {
        None
    };
    Ok(PrivateFile { file, tightened_from })
}

/// Creates `dir` and any missing parents with mode 0700 (whatever the
/// umask: the mode is set again after creation); an existing dir is left
/// as it is.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(PRIVATE_DIR_MODE).create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(PRIVATE_DIR_MODE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_is_0600_and_a_loose_one_is_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        assert_eq!(open_private(&p, false).unwrap_err().kind(), io::ErrorKind::NotFound);
        let f = open_private(&p, true).unwrap();
        assert_eq!(f.tightened_from, None);
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(open_private(&p, true).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        std::fs::set_permissions(&p, Permissions::from_mode(0o644)).unwrap();
        let f = open_private(&p, false).unwrap();
        assert_eq!(f.tightened_from, Some(0o644));
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
    }

    #[test]
    fn a_symlink_is_refused_and_its_target_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, b"secret").unwrap();
        std::fs::set_permissions(&target, Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = open_private(&link, false).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o7777, 0o644);
        // A dangling link is refused too, and nothing is created behind it.
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(open_private(&dangling, true).is_err());
        assert!(open_private(&dangling, false).is_err());
        assert!(!dir.path().join("nowhere").exists());
    }

    #[test]
    fn a_directory_is_not_a_store_file() {
        let dir = tempfile::tempdir().unwrap();
        let e = open_private(dir.path(), false).unwrap_err();
        assert!(!e.to_string().is_empty());
    }

    #[test]
    fn created_dirs_are_0700() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        create_private_dir(&d).unwrap();
        assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(std::fs::metadata(dir.path().join("a")).unwrap().mode() & 0o7777, 0o700);
    }
}

//! Root-owned files the session side reads but must never change: the run
//! directory, the runtime file, the merged keys, the lock file. Written
//! atomically (temp file + rename in the same directory) and never through
//! a symlink.

use crate::checked::make_root_owned;
use std::fs::{self, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `path` with `contents`, root-owned with `mode`.
pub(super) fn write_root_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    let tmp = path.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    f.write_all(contents)?;
    make_root_owned(&tmp, &f.metadata()?, mode)?;
    drop(f);
    fs::rename(&tmp, path)
}

/// Creates the lock file if missing (never truncates it: a lock taken on the
/// old inode would not be seen on a new one) and makes it root-owned 0644.
pub(super) fn ensure_lock_file(path: &Path) -> io::Result<()> {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o644)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    let m = f.metadata()?;
    if !m.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    make_root_owned(path, &m, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checked::ensure_root_dir;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    #[test]
    fn atomic_write_replaces_and_sets_mode() {
        let d = std::env::temp_dir().join(format!("bastion-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        ensure_root_dir(&d, 0o755).unwrap();
        let p = d.join("runtime.json");
        write_root_file(&p, b"one", 0o644).unwrap();
        write_root_file(&p, b"two", 0o644).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, 0o644);
        let lock = d.join("command.lock");
        fs::write(&lock, b"keep").unwrap();
        fs::set_permissions(&lock, fs::Permissions::from_mode(0o666)).unwrap();
        ensure_lock_file(&lock).unwrap();
        assert_eq!(fs::read(&lock).unwrap(), b"keep");
        assert_eq!(fs::metadata(&lock).unwrap().mode() & 0o7777, 0o644);
        let link = d.join("link.lock");
        std::os::unix::fs::symlink(&p, &link).unwrap();
        assert!(ensure_lock_file(&link).is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}

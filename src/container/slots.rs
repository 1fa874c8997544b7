//! `SESSION_MAX` (SPEC 12): one root-owned slot file per concurrent session,
//! each held by an `flock` for the session's life. A session that finds
//! every slot held gets the busy line. Files are made at boot by root and
//! only ever opened read-only here, like the command lock.

use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};

/// A held slot; released when dropped (or when the holder dies).
#[derive(Debug)]
pub(crate) struct Slot {
    _file: File,
}

impl Slot {
    /// A descriptor of the same lock, for a child that takes it over.
    pub(crate) fn share(&self) -> io::Result<std::os::fd::OwnedFd> {
        Ok(self._file.try_clone()?.into())
    }
}

/// Where the slots are and how many: what the HTTP listener needs.
#[derive(Debug, Clone)]
pub(crate) struct SlotDir {
    pub(crate) dir: PathBuf,
    pub(crate) max: u32,
}

pub(crate) fn slot_path(dir: &Path, index: u32) -> PathBuf {
    dir.join(format!("slot-{index}"))
}

/// Takes the first free slot of `max`; `None` when all are held.
pub(crate) fn acquire(dir: &Path, max: u32) -> io::Result<Option<Slot>> {
    for index in 0..max {
        let path = slot_path(dir, index);
        let file = File::open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        match file.try_lock() {
            Ok(()) => return Ok(Some(Slot { _file: file })),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(e),
        }
    }
    Ok(None)
}

/// Takes over the slot whose descriptor `fd` was passed by the HTTP
/// listener (which took it to answer 503 before starting anything). It must
/// be one of this bastion's slot files; the lock, already held through the
/// same open file description, is taken again (which then succeeds), or
/// freshly when the passer did not hold it.
pub(crate) fn adopt(dir: &Path, max: u32, fd: std::os::fd::RawFd) -> io::Result<Option<Slot>> {
    use std::os::unix::fs::MetadataExt;
    let file = File::from(crate::sys::fd::dup_inherited(fd)?);
    let m = file.metadata()?;
    let ours = (0..max).any(|i| {
        std::fs::metadata(slot_path(dir, i)).is_ok_and(|s| s.dev() == m.dev() && s.ino() == m.ino())
    });
    if !ours {
        return Err(io::Error::other(format!(
            "descriptor {fd} is not one of {}",
            dir.display()
        )));
    }
    match file.try_lock() {
        Ok(()) => Ok(Some(Slot { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Boot: the directory (root, 0755) and `max` empty slot files (root,
/// 0644); stale files beyond `max` are removed.
pub(crate) fn prepare(dir: &Path, max: u32) -> io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for index in 0..max {
        let p = slot_path(dir, index);
        let _ = std::fs::remove_file(&p);
        let f = File::create(&p)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name();
        let keep = name
            .to_str()
            .and_then(|n| n.strip_prefix("slot-"))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| n < max);
        if !keep {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_slots_then_busy_then_free_again() {
        let dir = std::env::temp_dir().join(format!("bastion-slots-{}", std::process::id()));
        prepare(&dir, 2).unwrap();
        let a = acquire(&dir, 2).unwrap().unwrap();
        let b = acquire(&dir, 2).unwrap().unwrap();
        assert!(acquire(&dir, 2).unwrap().is_none());
        drop(a);
        assert!(acquire(&dir, 2).unwrap().is_some());
        drop(b);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

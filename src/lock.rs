//! The per-container command lock (SPEC 5): one `flock` on a root-owned lock
//! file, opened read-only. The descriptor is inherited by the command, so the
//! lock lives exactly as long as the command's process tree (SIGKILL
//! included). It never creates, writes or removes the lock file: the
//! entrypoint does that as root.

use crate::config::LockPolicy;
use std::fmt;
use std::fs::{File, TryLockError};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// What a client sees when another run holds the lock, or (session
/// containers) every `SESSION_MAX` slot is taken: the shell version's
/// exact line, so retrying clients keep working.
pub(crate) const BUSY_LINE: &str = "busy: another run is in progress";

/// Held for as long as this value and every process that inherited its
/// descriptor live. `None` inside: `COMMAND_LOCK=none`.
#[derive(Debug)]
pub(crate) struct LockGuard {
    _file: Option<File>,
}

/// The outcome of asking for the lock.
#[derive(Debug)]
pub(crate) enum Acquired {
    Held(LockGuard),
    /// Another run holds it (after waiting, for `wait:SECONDS`).
    Busy,
}

/// The lock file cannot be opened or locked: an OS problem, not "busy".
#[derive(Debug)]
pub(crate) struct LockError {
    path: PathBuf,
    source: io::Error,
}

impl fmt::Display for LockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot lock {}: {} (the entrypoint creates it at boot; is the container started by bastion-entrypoint?)",
            self.path.display(),
            self.source
        )
    }
}

/// Takes the lock on `path` according to `policy`. On `Held`, the descriptor
/// is already inheritable: keep the guard alive up to `exec`. A busy or
/// failed attempt leaves nothing inheritable behind.
pub(crate) fn acquire(path: &Path, policy: LockPolicy) -> Result<Acquired, LockError> {
    let err = |source| LockError {
        path: path.to_owned(),
        source,
    };
    let timeout = match policy {
        LockPolicy::None => return Ok(Acquired::Held(LockGuard { _file: None })),
        LockPolicy::Exclusive => Duration::ZERO,
        LockPolicy::Wait { seconds } => Duration::from_secs(seconds.into()),
    };
    // Read-only (and close-on-exec until held): the session user may read
    // the root-owned file but never write, truncate or replace it, and the
    // descriptor the command inherits cannot write either; `flock` needs no
    // write access.
    let file = File::open(path).map_err(err)?;
    if !lock_within(&file, timeout).map_err(err)? {
        return Ok(Acquired::Busy);
    }
    // Deliberately NOT close-on-exec once held: the command the wrapper
    // execs inherits this descriptor, so the lock is released only when the
    // last process of its tree exits. This is the one descriptor of the
    // project that survives exec.
    crate::sys::fd::set_inheritable(&file).map_err(err)?;
    Ok(Acquired::Held(LockGuard { _file: Some(file) }))
}

/// The lock file opened for a caller that waits in its own way (the HTTP
/// listener polls, so a waiting request never blocks the others). Unlike
/// [`acquire`], the descriptor stays close-on-exec until
/// [`LockGuard::inherit`]: in a process that starts many commands, only the
/// one meant to hold the lock may inherit it.
#[derive(Debug)]
pub(crate) struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Opens `path` read-only, as [`acquire`] does.
    pub(crate) fn open(path: &Path) -> Result<Self, LockError> {
        let file = File::open(path).map_err(|source| LockError {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// One non-blocking try: the guard, or the file back when another run
    /// holds the lock.
    pub(crate) fn try_take(self) -> Result<Result<LockGuard, LockFile>, LockError> {
        match self.file.try_lock() {
            Ok(()) => Ok(Ok(LockGuard {
                _file: Some(self.file),
            })),
            Err(TryLockError::WouldBlock) => Ok(Err(self)),
            Err(TryLockError::Error(source)) => Err(LockError {
                path: self.path,
                source,
            }),
        }
    }
}

impl LockGuard {
    /// The guard of `COMMAND_LOCK=none`: no file at all.
    pub(crate) fn unlocked() -> Self {
        Self { _file: None }
    }

    /// Makes the descriptor inheritable, right before the command that
    /// must hold the lock is started (and the guard dropped right after).
    pub(crate) fn inherit(&self) -> io::Result<()> {
        match &self._file {
            Some(f) => crate::sys::fd::set_inheritable(f),
            None => Ok(()),
        }
    }
}

/// Tries once, then (for a non-zero timeout) blocks in `flock` on a helper
/// thread so the kernel wakes us the moment the lock is free, instead of
/// polling. On timeout the blocked thread is simply left behind: the
/// process is about to print "busy" and exit.
fn lock_within(file: &File, timeout: Duration) -> io::Result<bool> {
    match file.try_lock() {
        Ok(()) => return Ok(true),
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => return Err(e),
    }
    if timeout.is_zero() {
        return Ok(false);
    }
    // A dup shares the open file description, and `flock` locks belong to
    // the description: the lock taken through `waiter` is held by `file`.
    let waiter = file.try_clone()?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(waiter.lock());
    });
    match rx.recv_timeout(timeout) {
        Ok(result) => result.map(|()| true),
        Err(mpsc::RecvTimeoutError::Timeout) => Ok(false),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            Err(io::Error::other("the lock waiter thread ended early"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn lock_file(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("bastion-lock-{}-{tag}", std::process::id()));
        std::fs::write(&p, b"").unwrap();
        p
    }

    #[test]
    fn exclusive_is_busy_while_held_and_free_after() {
        let p = lock_file("excl");
        let first = acquire(&p, LockPolicy::Exclusive).unwrap();
        assert!(matches!(first, Acquired::Held(_)));
        assert!(matches!(
            acquire(&p, LockPolicy::Exclusive).unwrap(),
            Acquired::Busy
        ));
        drop(first);
        assert!(matches!(
            acquire(&p, LockPolicy::Exclusive).unwrap(),
            Acquired::Held(_)
        ));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn held_descriptor_survives_exec() {
        let p = lock_file("cloexec");
        let Acquired::Held(g) = acquire(&p, LockPolicy::Exclusive).unwrap() else {
            panic!("not held")
        };
        let f = g._file.as_ref().unwrap();
        assert!(!crate::sys::fd::is_close_on_exec(f).unwrap());
        drop(g);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn wait_gets_the_lock_when_released() {
        let p = lock_file("wait");
        let first = acquire(&p, LockPolicy::Exclusive).unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(first);
        });
        let t = Instant::now();
        let second = acquire(&p, LockPolicy::Wait { seconds: 10 }).unwrap();
        assert!(matches!(second, Acquired::Held(_)));
        assert!(t.elapsed() >= Duration::from_millis(250));
        releaser.join().unwrap();
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn wait_times_out_busy() {
        let p = lock_file("timeout");
        let _first = acquire(&p, LockPolicy::Exclusive).unwrap();
        let t = Instant::now();
        assert!(matches!(
            acquire(&p, LockPolicy::Wait { seconds: 1 }).unwrap(),
            Acquired::Busy
        ));
        assert!(t.elapsed() >= Duration::from_millis(900));
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn lock_file_is_close_on_exec_until_inherited() {
        let p = lock_file("polled");
        let held = acquire(&p, LockPolicy::Exclusive).unwrap();
        let busy = LockFile::open(&p).unwrap().try_take().unwrap();
        let again = busy.expect_err("taken while held");
        drop(held);
        let g = again.try_take().unwrap().expect("free after release");
        let f = g._file.as_ref().unwrap();
        assert!(crate::sys::fd::is_close_on_exec(f).unwrap());
        g.inherit().unwrap();
        assert!(!crate::sys::fd::is_close_on_exec(f).unwrap());
        assert!(matches!(
            acquire(&p, LockPolicy::Exclusive).unwrap(),
            Acquired::Busy
        ));
        drop(g);
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn none_never_touches_the_file() {
        let missing = std::env::temp_dir().join("bastion-lock-does-not-exist");
        assert!(matches!(
            acquire(&missing, LockPolicy::None).unwrap(),
            Acquired::Held(_)
        ));
        let e = acquire(&missing, LockPolicy::Exclusive).unwrap_err();
        assert!(e.to_string().contains("bastion-lock-does-not-exist"));
    }
}

//! Descriptor flags. Every descriptor the project opens is close-on-exec
//! (std's default) except the lock descriptor, which must survive `exec` so
//! the lock is held for the whole command tree (SPEC 5).

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use std::os::fd::AsFd;

/// Clears `FD_CLOEXEC` on `fd` so it is inherited across `exec`.
pub(crate) fn set_inheritable(fd: impl AsFd) -> std::io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::empty()))?;
    Ok(())
}

/// Whether `fd` would be closed by `exec`.
#[cfg(test)]
pub(crate) fn is_close_on_exec(fd: impl AsFd) -> std::io::Result<bool> {
    let flags = fcntl(fd, FcntlArg::F_GETFD)?;
    Ok(FdFlag::from_bits_truncate(flags).contains(FdFlag::FD_CLOEXEC))
}

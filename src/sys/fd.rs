//! Descriptor flags. Every descriptor the project opens is close-on-exec
//! (std's default) except the lock descriptor, which must survive `exec` so
//! the lock is held for the whole command tree (SPEC 5).

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::libc;
use std::os::fd::AsFd;

/// Marks every descriptor from 3 up close-on-exec, so nothing a parent
/// leaked (a pipe, a socket) reaches a command this process execs. Called
/// first thing by the binaries that exec commands; the lock descriptor is
/// made inheritable afterwards, on purpose. An error means some descriptor
/// may still leak: the caller must not run anything (it exits 1).
pub(crate) fn cloexec_inherited() -> std::io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets descriptor
    // flags (nothing is closed, no memory is touched).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    // Kernels before 5.11 lack the flag (EINVAL), older ones the call
    // (ENOSYS): walk /proc/self/fd instead. Anything else is a failure.
    if !matches!(err.raw_os_error(), Some(libc::EINVAL | libc::ENOSYS)) {
        return Err(err);
    }
    // The listing's own descriptor is closed before the loop.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")?
        .map(|e| e.map(|e| e.file_name().to_str().and_then(|n| n.parse().ok())))
        .collect::<std::io::Result<Vec<Option<i32>>>>()?
        .into_iter()
        .flatten()
        .filter(|&fd| fd >= 3)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a descriptor number only sets its flags.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } == -1 {
            let err = std::io::Error::last_os_error();
            // The listing's own descriptor, closed since: nothing to mark.
            if err.raw_os_error() != Some(libc::EBADF) {
                return Err(err);
            }
        }
    }
    Ok(())
}

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

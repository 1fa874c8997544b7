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

/// Sets `FD_CLOEXEC` on `fd`.
pub(crate) fn set_cloexec(fd: impl AsFd) -> std::io::Result<()> {
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(())
}

/// Makes `cmd`'s child find each `(from, to)` descriptor of this process
/// at number `to`, inheritable. Every `from` must be 10 or above and every
/// `to` in 3..10, so no `dup2` overwrites a descriptor still to be copied.
pub(crate) fn pass_fds(
    cmd: &mut std::process::Command,
    fds: Vec<(std::os::fd::RawFd, std::os::fd::RawFd)>,
) -> std::io::Result<()> {
    use std::os::unix::process::CommandExt as _;
    if fds
        .iter()
        .any(|&(from, to)| from < 10 || !(3..10).contains(&to))
    {
        return Err(std::io::Error::other("descriptor numbers out of range"));
    }
    // SAFETY: the closure only calls dup2, which is async-signal-safe, on
    // descriptors that stay open in the parent until the spawn returns; it
    // allocates nothing (the vector was built before fork).
    unsafe {
        cmd.pre_exec(move || {
            for &(from, to) in &fds {
                // dup2 gives `to` without FD_CLOEXEC: it survives exec.
                if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    Ok(())
}

/// A close-on-exec duplicate of `fd` numbered 10 or above (see [`pass_fds`]).
pub(crate) fn dup_high(fd: impl AsFd) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd};
    let n = fcntl(fd.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(10))?;
    let _ = fd.as_fd().as_raw_fd();
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(n) })
}

/// Takes ownership of descriptor `fd`, inherited from the parent for this
/// purpose, after checking it is open. Call once per number.
pub(crate) fn adopt_inherited(fd: std::os::fd::RawFd) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    if fd < 3 {
        return Err(std::io::Error::other("descriptors 0-2 are not adopted"));
    }
    // SAFETY: F_GETFD only reads the flags of a descriptor number; a closed
    // one fails with EBADF.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this
    // process to own; the caller adopts each number once.
    let owned = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    set_cloexec(&owned)?;
    Ok(owned)
}

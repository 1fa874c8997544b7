//! Stopping a command's whole process group (the wrapper runs each HTTP
//! command as the leader of its own group), and sizing the pipe its output
//! comes through. No `unsafe` here: nix wraps the syscalls.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::fd::AsFd;

/// SIGKILL to every process of group `pgid`. A group that is already empty
/// is not an error.
pub(crate) fn kill_group(pgid: u32) -> std::io::Result<()> {
    signal_group(pgid, Signal::SIGKILL)
}

/// SIGTERM to every process of group `pgid`: the polite first step, so a
/// command (or a runner that must clean up after its child) can finish.
pub(crate) fn terminate_group(pgid: u32) -> std::io::Result<()> {
    signal_group(pgid, Signal::SIGTERM)
}

fn signal_group(pgid: u32, signal: Signal) -> std::io::Result<()> {
    let Ok(raw) = i32::try_from(pgid) else {
        return Err(std::io::Error::other("process group id out of range"));
    };
    if raw <= 1 {
        // killpg(0) would be our own group, 1 would be init's: never.
        return Err(std::io::Error::other(
            "refusing to signal process group 0 or 1",
        ));
    }
    match killpg(Pid::from_raw(raw), signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Asks for a pipe buffer of `bytes` (fewer wake-ups when streaming large
/// output). Best effort: the kernel may cap it; failure changes nothing.
pub(crate) fn grow_pipe(fd: impl AsFd, bytes: i32) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(bytes));
}

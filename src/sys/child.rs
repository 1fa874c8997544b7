//! What a parent runner needs around its one child: signals taken as
//! data (blocked, read from a signalfd), a wait that also notices the
//! client's side of stdout/stderr going away, a terminal's foreground
//! handed to the child's process group, and dying of the same signal as
//! the child (core dumps off) so sshd reports the same exit-signal.

use nix::libc;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

/// Blocks `signals` in this (single-threaded) process and returns a
/// non-blocking, close-on-exec signalfd that reads them. Children start
/// with an empty mask (std resets it before exec).
pub(crate) fn take_signals(signals: &[Signal]) -> io::Result<SignalFd> {
    let mut set = SigSet::empty();
    for s in signals {
        set.add(*s);
    }
    set.thread_block()?;
    Ok(SignalFd::with_flags(
        &set,
        SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC,
    )?)
}

/// What woke [`wait`].
#[derive(Debug, Default)]
pub(crate) struct Woken {
    pub(crate) signals: Vec<i32>,
    /// Indices into `watch` whose peer is gone (POLLHUP or POLLERR).
    pub(crate) hung_up: Vec<usize>,
}

/// Waits up to `timeout` for a signal on `sfd`, or for a descriptor of
/// `watch` to report hang-up or error (nothing else is asked of them, so a
/// regular file or /dev/null never wakes it).
pub(crate) fn wait(sfd: &SignalFd, watch: &[RawFd], timeout: Duration) -> io::Result<Woken> {
    let mut p = vec![libc::pollfd {
        fd: sfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    p.extend(watch.iter().map(|&fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    }));
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `p` is a valid array of `p.len()` pollfd structs for the call.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    let mut woken = Woken::default();
    if r < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(woken)
        } else {
            Err(e)
        };
    }
    for (i, q) in p[1..].iter().enumerate() {
        if q.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            woken.hung_up.push(i);
        }
    }
    while let Ok(Some(info)) = sfd.read_signal() {
        woken.signals.push(info.ssi_signo as i32);
    }
    Ok(woken)
}

/// Makes the child of `cmd` start with an empty signal mask: the runner
/// blocks the signals it takes as data, and a blocked mask is inherited
/// across exec on every spawn path.
pub(crate) fn unblock_signals_in_child(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: sigemptyset and sigprocmask are async-signal-safe and the
    // set lives on the child's stack; nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Whether `fd` is a terminal whose foreground process group is ours.
pub(crate) fn owns_foreground(fd: RawFd) -> bool {
    // SAFETY: isatty, tcgetpgrp and getpgrp only read process state.
    unsafe { libc::isatty(fd) == 1 && libc::tcgetpgrp(fd) == libc::getpgrp() }
}

/// Makes the child of `cmd` the leader of a new process group, and, with
/// `terminal`, the foreground group of the terminal on its stdin, so the
/// terminal's ^C, ^\ and window changes reach it and not the runner.
pub(crate) fn own_group(cmd: &mut std::process::Command, terminal: bool) {
    use std::os::unix::process::CommandExt as _;
    cmd.process_group(0);
    if terminal {
        // SAFETY: signal(2), tcsetpgrp(3) and getpgrp(2) are
        // async-signal-safe; the closure allocates nothing. SIGTTOU is
        // ignored around tcsetpgrp because the new group is not yet the
        // foreground one.
        unsafe {
            cmd.pre_exec(|| {
                let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
                let r = libc::tcsetpgrp(0, libc::getpgrp());
                libc::signal(libc::SIGTTOU, old);
                if r < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
}

/// Gives the terminal's foreground back to this process's group (SIGTTOU
/// is blocked in the runner, so the call cannot stop it).
pub(crate) fn take_foreground_back(fd: RawFd) {
    // SAFETY: tcsetpgrp and getpgrp take plain integers; failure is harmless.
    unsafe {
        libc::tcsetpgrp(fd, libc::getpgrp());
    }
}

/// Sends `sig` to process `pid` (`group`: to its whole process group).
/// A process or group already gone is not an error.
pub(crate) fn signal(pid: i32, sig: i32, group: bool) {
    if pid <= 1 {
        return;
    }
    let target = if group { -pid } else { pid };
    // SAFETY: kill(2) with a positive pid or a negative group id above 1.
    unsafe {
        libc::kill(target, sig);
    }
}

/// Whether any process of group `pgid` is still alive.
pub(crate) fn group_alive(pgid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    pgid > 1 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// Dies of `sig` as the child did: no core file, default action,
/// unblocked, raised. Returns only if the signal does not kill (then the
/// caller exits 128+sig).
pub(crate) fn die_of(sig: i32) {
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads a valid rlimit; signal, sigprocmask and
    // raise take plain values and a valid, initialised sigset.
    unsafe {
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, sig);
        libc::raise(sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
    }
}

/// Whether descriptor number `fd` is open.
pub(crate) fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the flags of a descriptor number.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

//! Raw inotify, poll and a non-blocking Unix socket connect for the key
//! index (`keys::index`): the watch on `users.d` that lets the index answer
//! without re-reading every file, and a way to ask it that never hangs.

use nix::libc;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub(crate) use libc::{
    IN_ATTRIB, IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_DONT_FOLLOW, IN_IGNORED,
    IN_MODIFY, IN_MOVED_FROM, IN_MOVED_TO, IN_MOVE_SELF, IN_ONLYDIR, IN_Q_OVERFLOW, IN_UNMOUNT,
};

/// One event: the watch it came from, its mask and the entry name (empty
/// for events about the watched inode itself).
#[derive(Debug)]
pub(crate) struct Event {
    pub(crate) wd: i32,
    pub(crate) mask: u32,
    pub(crate) name: Vec<u8>,
}

/// A non-blocking, close-on-exec inotify instance.
pub(crate) struct Inotify {
    file: File,
}

impl Inotify {
    pub(crate) fn new() -> io::Result<Inotify> {
        // SAFETY: inotify_init1 takes only flags and returns a new fd or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by no one else.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Inotify {
            file: File::from(owned),
        })
    }

    pub(crate) fn add_watch(&self, path: &Path, mask: u32) -> io::Result<i32> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: the fd is a live inotify instance and `c` a NUL-terminated
        // string that outlives the call.
        let wd = unsafe { libc::inotify_add_watch(self.file.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Every event queued now; empty when none (never blocks).
    pub(crate) fn drain(&mut self) -> io::Result<Vec<Event>> {
        let mut events = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(events),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(events);
            }
            parse_events(&buf[..n], &mut events);
        }
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// Parses `struct inotify_event` records (wd, mask, cookie, len, name).
fn parse_events(mut b: &[u8], out: &mut Vec<Event>) {
    let word = |b: &[u8], i: usize| u32::from_ne_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    while b.len() >= 16 {
        let wd = word(b, 0) as i32;
        let mask = word(b, 4);
        let len = word(b, 12) as usize;
        let Some(raw) = b.get(16..16 + len) else {
            return;
        };
        let name = raw.split(|&c| c == 0).next().unwrap_or(&[]).to_vec();
        out.push(Event { wd, mask, name });
        b = &b[16 + len..];
    }
}

/// Waits until one of `fds` is readable (or, with `pri`, has priority
/// data or an error: how /proc/self/mountinfo says the mounts changed), or
/// `timeout` passes. Returns which are ready.
pub(crate) fn poll(fds: &[(RawFd, bool)], timeout: Duration) -> io::Result<Vec<bool>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, pri)| libc::pollfd {
            fd,
            events: if pri { libc::POLLPRI } else { libc::POLLIN },
            revents: 0,
        })
        .collect();
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: `p` is a valid array of `p.len()` pollfd structs for the call.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok(vec![false; fds.len()]);
        }
        return Err(e);
    }
    Ok(p.iter().map(|x| x.revents != 0).collect())
}

/// The uid of the process at the other end of a Unix socket.
pub(crate) fn peer_uid(sock: &impl AsRawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes passed, and
    // SO_PEERCRED writes at most `len` bytes of a `struct ucred`.
    let r = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// Connects to the stream socket at `path` without ever waiting: a
/// listener whose backlog is full gives `WouldBlock` at once (a blocking
/// `connect` would wait for as long as no one accepts). The stream returned
/// is non-blocking.
pub(crate) fn connect_unix_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "socket path too long",
        ));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: plain syscall with constant arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
    // SAFETY: `addr` is a valid sockaddr_un and `len` is within its size
    // (checked above); the kernel only reads it.
    let r = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            Some(libc::EINPROGRESS) => io::Error::from(io::ErrorKind::WouldBlock),
            _ => e,
        });
    }
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_the_entry_that_changed() {
        let dir = std::env::temp_dir().join(format!("bastion-inotify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let mut ino = Inotify::new().unwrap();
        let wd = ino
            .add_watch(&dir, IN_CREATE | IN_DELETE | IN_CLOSE_WRITE | IN_ONLYDIR)
            .unwrap();
        assert!(ino.drain().unwrap().is_empty());
        std::fs::write(dir.join("alice.pub"), "x").unwrap();
        std::fs::remove_file(dir.join("alice.pub")).unwrap();
        let ev = ino.drain().unwrap();
        assert!(
            ev.iter().all(|e| e.wd == wd && e.name == b"alice.pub"),
            "{ev:?}"
        );
        let masks: Vec<u32> = ev.iter().map(|e| e.mask).collect();
        assert_eq!(masks, [IN_CREATE, IN_CLOSE_WRITE, IN_DELETE]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

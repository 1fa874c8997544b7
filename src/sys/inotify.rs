//! Raw inotify for the key index (`keys::index`): the watch on `users.d`
//! that lets the index answer without re-reading every file. It only
//! watches; deciding what a change means is the index's job.

use nix::libc;
use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

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

//! The key index: one small process per `users.d` (started by the first
//! `bastion-keys` call that finds none, running as the same unprivileged
//! user) that keeps every `*.pub` parsed in memory, kept current by
//! inotify, and answers lookups over a Unix socket in a private directory
//! (`keys-index/` next to the runtime file, only its user and root may
//! enter it). A lookup then costs one round trip, whatever the number of
//! files.
//!
//! It never answers from a view older than the question: inotify queues an
//! event before the syscall that changed a file returns, and the index
//! reads every queued event, re-reading the entries they name, after it has
//! received a question and before it answers. The directory has a watch for
//! entries added, removed and renamed; every entry has a watch on its inode
//! for content written through any path (hard links, bind-mounted files).
//! Anything it cannot vouch for (a file system whose changes may not come
//! from this kernel, a watch it could not add, another directory now at the
//! path, a socket directory or socket not its user's, an answer that is late
//! or malformed) makes the caller read every file instead: slower, never
//! wrong.

use super::line;
use super::source::{self, FileKeys, FoundKey};
use crate::sys::inotify::{self as sys, Inotify};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Bumped when the question or answer format changes.
const PROTOCOL: &str = "v1";
/// How long a caller waits for the index before reading every file itself
/// (the index answers in microseconds unless it is re-reading everything).
pub(crate) const CALLER_TIMEOUT: Duration = Duration::from_secs(2);
/// The index exits after this long without a question.
const IDLE_EXIT: Duration = Duration::from_secs(3600);
/// Largest answer a caller accepts.
const MAX_ANSWER: usize = 64 * 1024 * 1024;
/// The private directory of the sockets, next to the runtime file.
const SOCKET_DIR: &str = "keys-index";

/// Where the index sockets live for the runtime file `runtime_file`.
pub(crate) fn socket_dir(runtime_file: &Path) -> PathBuf {
    runtime_file
        .parent()
        .unwrap_or(Path::new("/"))
        .join(SOCKET_DIR)
}

const DIR_EVENTS: u32 = sys::IN_CREATE
    | sys::IN_DELETE
    | sys::IN_MOVED_FROM
    | sys::IN_MOVED_TO
    | sys::IN_MODIFY
    | sys::IN_CLOSE_WRITE
    | sys::IN_ATTRIB
    | sys::IN_DELETE_SELF
    | sys::IN_MOVE_SELF
    | sys::IN_ONLYDIR;
const FILE_EVENTS: u32 = sys::IN_MODIFY
    | sys::IN_CLOSE_WRITE
    | sys::IN_ATTRIB
    | sys::IN_DELETE_SELF
    | sys::IN_MOVE_SELF
    | sys::IN_DONT_FOLLOW;

/// File systems whose every change goes through this kernel, so inotify
/// sees it. Network and FUSE file systems (NFS, SMB, 9p, virtiofs, Docker
/// Desktop's file sharing) are read in full on every call instead.
fn trusted_fs(dir: &Path) -> bool {
    // Magic numbers from linux/magic.h, spelled out: nix leaves some of
    // its constants out on musl.
    const TRUSTED: [u64; 8] = [
        0xef53,      // ext2, ext3, ext4
        0x5846_5342, // xfs
        0x9123_683e, // btrfs
        0x0102_1994, // tmpfs
        0x794c_7630, // overlayfs
        0xf2f5_2010, // f2fs
        0x2fc1_2fc1, // zfs
        0xca45_1a4e, // bcachefs
    ];
    nix::sys::statfs::statfs(dir)
        // fs_type_t is signed with glibc, unsigned with musl.
        .is_ok_and(|st| TRUSTED.contains(&(st.filesystem_type().0 as u64)))
}

/// The identity of a directory: (st_dev, st_ino), following symlinks.
fn dir_id(dir: &Path) -> io::Result<(u64, u64)> {
    std::fs::metadata(dir).map(|m| (m.dev(), m.ino()))
}

/// The socket of the index of one directory, in the socket directory: per
/// directory object (not path: another directory at the path is another
/// index), per protocol. The directory is per user.
fn socket_name(id: (u64, u64)) -> String {
    format!("{PROTOCOL}-{}-{}.sock", id.0, id.1)
}

#[derive(Serialize, Deserialize)]
struct Reply {
    /// The directory the index watches, as (st_dev, st_ino).
    dir: (u64, u64),
    /// Set when the index cannot vouch for its view; the caller scans.
    degraded: Option<String>,
    problems: Vec<String>,
    keys: Vec<WireKey>,
}

#[derive(Serialize, Deserialize)]
struct WireKey {
    identity: String,
    line: usize,
    /// `type base64`; the caller parses it again.
    key: String,
}

/// Why the caller reads every file itself this time.
#[derive(Debug)]
pub(crate) struct Fallback {
    /// No index runs for this directory: start one for the next calls.
    pub(crate) start_one: bool,
    /// Worth a log line (the operator can fix it).
    pub(crate) note: Option<String>,
    /// What went wrong, for `--index-only`.
    pub(crate) reason: String,
}

impl Fallback {
    fn quiet(reason: impl fmt::Display) -> Self {
        Fallback {
            start_one: false,
            note: None,
            reason: reason.to_string(),
        }
    }
    fn noted(note: String) -> Self {
        Fallback {
            start_one: false,
            reason: note.clone(),
            note: Some(note),
        }
    }
}

/// Asks the index of `dir` (its socket in `sockets`) for the keys matching
/// `fingerprint` (all keys without one) and every problem it knows of,
/// giving up after `timeout`.
pub(crate) fn query(
    dir: &Path,
    sockets: &Path,
    fingerprint: Option<&str>,
    timeout: Duration,
) -> Result<FileKeys, Fallback> {
    let deadline = Instant::now() + timeout;
    if !trusted_fs(dir) {
        return Err(Fallback::quiet(
            "not a local file system inotify can vouch for",
        ));
    }
    crate::checked::private_dir(sockets).map_err(|why| {
        Fallback::noted(format!("key index not used ({why}); reading every file"))
    })?;
    let id = dir_id(dir).map_err(Fallback::quiet)?;
    let path = sockets.join(socket_name(id));
    let late = || {
        Fallback::noted(format!(
            "the key index did not answer within {} s; reading every file",
            timeout.as_secs_f32()
        ))
    };
    let mut sock = loop {
        match crate::sys::unix_connect::connect_unix_nonblocking(&path) {
            Ok(s) => break s,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
                ) =>
            {
                return Err(Fallback {
                    start_one: true,
                    note: None,
                    reason: "no key index runs for this directory".into(),
                })
            }
            // Its backlog is full: it is busy, or stuck.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    return Err(late());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(Fallback::quiet(e)),
        }
    };
    crate::checked::trusted_peer(&sock).map_err(|why| {
        Fallback::noted(format!(
            "key index socket not used ({why}); reading every file"
        ))
    })?;
    let raw = exchange(&mut sock, fingerprint, deadline).map_err(|e| {
        if matches!(
            e.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ) {
            late()
        } else {
            Fallback::quiet(e)
        }
    })?;
    let reply: Reply = serde_json::from_slice(&raw).map_err(Fallback::quiet)?;
    if let Some(why) = reply.degraded {
        return Err(Fallback::noted(format!(
            "key index unavailable ({}); reading every file",
            crate::audit::escape(&why)
        )));
    }
    // The index must watch the directory that is at the path now.
    if reply.dir != id || dir_id(dir).ok() != Some(id) {
        return Err(Fallback::quiet("the index watches another directory"));
    }
    checked(reply).map_err(|why| {
        Fallback::noted(format!(
            "the key index sent {why}; answer discarded, reading every file"
        ))
    })
}

/// Sends the question and reads the whole answer, all before `deadline`.
fn exchange(
    sock: &mut UnixStream,
    fingerprint: Option<&str>,
    deadline: Instant,
) -> io::Result<Vec<u8>> {
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut))
    };
    sock.set_nonblocking(false)?;
    sock.set_write_timeout(Some(left()?))?;
    let question = format!("{}\n", fingerprint.unwrap_or("-"));
    sock.write_all(question.as_bytes())?;
    sock.shutdown(std::net::Shutdown::Write)?;
    let mut raw = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // A timeout per read would let a slow writer go on for ever.
        sock.set_read_timeout(Some(left()?))?;
        match sock.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) if raw.len() + n > MAX_ANSWER => {
                return Err(io::Error::other("the answer is too large"))
            }
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Holds the index's answer to the rules of a scan: every identity one a
/// file name could give, every key a key line the parser accepts, every
/// problem one printable line. Anything else is not from our index, or
/// not an answer we can print.
fn checked(reply: Reply) -> Result<FileKeys, &'static str> {
    let printable = |s: &str| crate::audit::escape(&s.replace('\\', "")) == s.replace('\\', "");
    if !reply.problems.iter().all(|p| printable(p)) {
        return Err("a problem line with control characters");
    }
    let mut out = FileKeys {
        keys: Vec::with_capacity(reply.keys.len()),
        problems: reply.problems,
    };
    for k in reply.keys {
        let name = OsString::from(format!("{}.pub", k.identity));
        if !matches!(source::identity_of(&name), Some(Ok(id)) if id == k.identity) {
            return Err("an invalid identity");
        }
        let key = match line::parse(k.key.as_bytes()) {
            Ok(line::Line::Key(key)) if key.to_openssh() == k.key => key,
            _ => return Err("a malformed key"),
        };
        out.keys.push(FoundKey {
            identity: k.identity,
            line: k.line,
            fingerprint: key.fingerprint(),
            key,
        });
    }
    Ok(out)
}

/// Starts an index for `dir` (its socket in `sockets`) in the background,
/// detached from sshd: its own process group, no inherited stdio (sshd
/// waits for our stdout to close). The caller does not wait for it.
pub(crate) fn start(dir: &Path, sockets: &Path) {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let (Ok(exe), Ok(dir), Ok(sockets)) = (
        std::env::current_exe(),
        std::path::absolute(dir),
        std::path::absolute(sockets),
    ) else {
        return;
    };
    let _ = crate::session::SessionEnv::empty()
        .command(exe)
        .arg("--serve-index")
        .arg(&dir)
        .arg(&sockets)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        .process_group(0)
        .spawn();
}

/// The socket file of a running index; removed when the index stops, if
/// it is still this one.
struct Bound {
    path: PathBuf,
    id: (u64, u64),
}

impl Bound {
    fn still_ours(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.id)
    }
}

impl Drop for Bound {
    fn drop(&mut self) {
        if self.still_ours() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Binds the socket of the index of `id` in `sockets`, or `None` when
/// another index serves it. A lock file held for the index's life makes
/// one index per directory; a socket file left by an index that died is
/// removed only once connecting to it is refused.
fn bind(
    sockets: &Path,
    id: (u64, u64),
) -> io::Result<Option<(UnixListener, Bound, std::fs::File)>> {
    crate::checked::private_dir(sockets).map_err(io::Error::other)?;
    let name = socket_name(id);
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(sockets.join(format!("{name}.lock")))?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    let path = sockets.join(name);
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
            match crate::sys::unix_connect::connect_unix_nonblocking(&path) {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    std::fs::remove_file(&path)?;
                    match UnixListener::bind(&path) {
                        Ok(l) => l,
                        // Lost a race: the other one serves.
                        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Ok(None),
                        Err(e) => return Err(e),
                    }
                }
                // Someone answers there (or is too busy to): not ours to take.
                _ => return Ok(None),
            }
        }
        Err(e) => return Err(e),
    };
    let m = std::fs::symlink_metadata(&path)?;
    let bound = Bound {
        path,
        id: (m.dev(), m.ino()),
    };
    Ok(Some((listener, bound, lock)))
}

/// The index process: answers until the directory goes away, its socket
/// file is removed or replaced, or no one asked for `IDLE_EXIT`.
pub(crate) fn serve(dir: &Path, sockets: &Path) -> io::Result<()> {
    let id = dir_id(dir)?;
    let Some((listener, bound, lock)) = bind(sockets, id)? else {
        return Ok(());
    };
    let r = serve_on(dir, id, &listener, &bound);
    // The socket file goes before the lock: whoever takes the lock next
    // finds no live socket in its way.
    drop(bound);
    drop(listener);
    drop(lock);
    r
}

fn serve_on(dir: &Path, id: (u64, u64), listener: &UnixListener, bound: &Bound) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mounts = std::fs::File::open("/proc/self/mountinfo")?;
    let mut index = Index::start(dir.to_owned(), id, mounts)?;
    if dir_id(dir).ok() != Some(id) {
        // Gone or replaced already: a later call starts a new index.
        return Ok(());
    }
    let mut last_question = Instant::now();
    loop {
        let inotify_fd = index.inotify.as_ref().map_or(-1, |i| i.raw_fd());
        let ready = crate::sys::poll::poll(
            &[
                (listener.as_raw_fd(), false),
                (inotify_fd, false),
                (index.mounts.as_raw_fd(), true),
            ],
            Duration::from_secs(60),
        )?;
        if ready[2] {
            index.mounts_changed()?;
        }
        if ready[1] && !index.catch_up() {
            return Ok(());
        }
        if ready[0] {
            loop {
                match listener.accept() {
                    Ok((sock, _)) => {
                        last_question = Instant::now();
                        if !index.answer(sock) {
                            return Ok(());
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        // Once a minute at most when idle: stop when no one asks any more,
        // or when the directory is gone or another one is at the path (its
        // own watch is then on the old one).
        if last_question.elapsed() > IDLE_EXIT
            || dir_id(dir).ok() != Some(index.dir_id)
            || !bound.still_ours()
        {
            return Ok(());
        }
        index.retry_if_degraded();
    }
}

/// The in-memory view of one directory.
struct Index {
    dir: PathBuf,
    dir_id: (u64, u64),
    /// Polled for a change of the mount table (a mount over an entry
    /// makes no event in the directory).
    mounts: std::fs::File,
    /// `None` when inotify could not be set up: every answer is degraded.
    inotify: Option<Inotify>,
    dir_wd: i32,
    entries: Entries,
    /// Inode watch -> the entry names that were that inode.
    watched: HashMap<i32, BTreeSet<OsString>>,
    /// Why the index cannot vouch for its view now (callers then read
    /// every file, and log this); retried once a minute.
    degraded: Option<String>,
    last_try: Instant,
}

impl Index {
    fn start(dir: PathBuf, id: (u64, u64), mut mounts: std::fs::File) -> io::Result<Index> {
        // Reading the table arms the change notification.
        io::copy(&mut mounts, &mut io::sink())?;
        let mut ix = Index {
            dir,
            dir_id: id,
            mounts,
            inotify: None,
            dir_wd: -1,
            entries: Entries::default(),
            watched: HashMap::new(),
            degraded: None,
            last_try: Instant::now(),
        };
        ix.set_up();
        Ok(ix)
    }

    /// A mount appeared or went away, maybe over an entry: read everything
    /// again, and the table, which re-arms the notification.
    fn mounts_changed(&mut self) -> io::Result<()> {
        self.mounts.seek(io::SeekFrom::Start(0))?;
        io::copy(&mut self.mounts, &mut io::sink())?;
        self.set_up();
        Ok(())
    }

    fn set_up(&mut self) {
        self.last_try = Instant::now();
        self.degraded = None;
        if self.inotify.is_none() {
            match Inotify::new() {
                Ok(i) => self.inotify = Some(i),
                Err(e) => {
                    self.degraded = Some(format!(
                        "inotify: {e} (raise fs.inotify.max_user_instances)"
                    ));
                    return;
                }
            }
        }
        self.rescan();
    }

    /// A limit raised or a file fixed since: try again, at most once a
    /// minute (a full read each time).
    fn retry_if_degraded(&mut self) {
        if self.degraded.is_some() && self.last_try.elapsed() >= Duration::from_secs(60) {
            self.set_up();
        }
    }

    /// Forgets everything and reads the directory again: watch first, then
    /// read, so no change can fall between the two.
    fn rescan(&mut self) {
        self.entries.clear();
        self.watched.clear();
        let Some(ino) = &self.inotify else {
            return;
        };
        match ino.add_watch(&self.dir, DIR_EVENTS) {
            Ok(wd) => self.dir_wd = wd,
            Err(e) => {
                self.degraded = Some(format!("cannot watch the directory: {e}"));
                return;
            }
        }
        // The watch must be on the directory this index is named after.
        if dir_id(&self.dir).ok() != Some(self.dir_id) {
            self.dir_wd = -1;
            return;
        }
        let names = match source::list_dir(&self.dir) {
            Ok(n) => n,
            Err(e) => {
                self.degraded = Some(e);
                return;
            }
        };
        for name in names {
            self.refresh(name);
        }
    }

    /// Reads one entry again (or forgets it if it is gone), watching its
    /// inode before reading it.
    fn refresh(&mut self, name: OsString) {
        if source::identity_of(&name).is_none() {
            return;
        }
        let path = self.dir.join(&name);
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.entries.remove(&name);
                return;
            }
            _ => {}
        }
        if let Some(ino) = &self.inotify {
            match ino.add_watch(&path, FILE_EVENTS) {
                Ok(wd) => {
                    self.watched.entry(wd).or_default().insert(name.clone());
                }
                // Gone meanwhile: its removal event is queued.
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {}
                // Unreadable to us, so unreadable to a scan too (logged as
                // such); making it readable is an event in the directory.
                Err(e) if e.raw_os_error() == Some(nix::libc::EACCES) => {}
                Err(e) => {
                    self.degraded = Some(format!(
                        "cannot watch {}: {e} (raise fs.inotify.max_user_watches)",
                        source::display(&self.dir, &name)
                    ));
                }
            }
        }
        if let Some(keys) = source::read_entry(&self.dir, &name) {
            self.entries.insert(name, keys);
        }
    }

    /// Applies every queued event. False when the directory itself went
    /// away (the index has nothing left to serve).
    fn catch_up(&mut self) -> bool {
        let Some(ino) = self.inotify.as_mut() else {
            return true;
        };
        let events = match ino.drain() {
            Ok(ev) => ev,
            Err(e) => {
                self.degraded = Some(format!("inotify: {e}"));
                return true;
            }
        };
        let mut dirty = BTreeSet::new();
        let mut rescan = false;
        for ev in events {
            if ev.mask & sys::IN_Q_OVERFLOW != 0 {
                rescan = true;
            } else if ev.wd == self.dir_wd {
                let gone =
                    sys::IN_DELETE_SELF | sys::IN_MOVE_SELF | sys::IN_UNMOUNT | sys::IN_IGNORED;
                if ev.mask & gone != 0 {
                    return false;
                }
                if ev.name.is_empty() {
                    // The directory's own mode or owner changed.
                    rescan = true;
                } else {
                    dirty.insert(OsString::from(std::ffi::OsStr::from_bytes(&ev.name)));
                }
            } else if ev.mask & sys::IN_IGNORED != 0 {
                if let Some(names) = self.watched.remove(&ev.wd) {
                    dirty.extend(names);
                }
            } else if let Some(names) = self.watched.get(&ev.wd) {
                dirty.extend(names.iter().cloned());
            }
        }
        if rescan {
            self.rescan();
        } else {
            for name in dirty {
                self.refresh(name);
            }
        }
        true
    }

    /// Answers one question. False when the index must stop.
    fn answer(&mut self, mut sock: UnixStream) -> bool {
        if sock.set_nonblocking(false).is_err() || crate::checked::trusted_peer(&sock).is_err() {
            return true;
        }
        let _ = sock.set_read_timeout(Some(CALLER_TIMEOUT));
        let _ = sock.set_write_timeout(Some(CALLER_TIMEOUT));
        let mut q = Vec::new();
        if (&mut sock).take(512).read_to_end(&mut q).is_err() {
            return true;
        }
        let q = String::from_utf8_lossy(&q);
        let q = q.trim_end();
        let fingerprint = (q != "-").then_some(q);
        // Everything that changed before the question was sent is queued
        // now, and a mount made before it is in the table.
        let mounts_moved =
            crate::sys::poll::poll(&[(self.mounts.as_raw_fd(), true)], Duration::ZERO)
                .map_or(true, |r| r[0]);
        if mounts_moved && self.mounts_changed().is_err() {
            return false;
        }
        let alive = self.catch_up();
        let moved = dir_id(&self.dir).ok() != Some(self.dir_id);
        let mut a = Reply {
            dir: self.dir_id,
            degraded: self.degraded.clone(),
            problems: Vec::new(),
            keys: Vec::new(),
        };
        if !alive || moved {
            a.degraded = Some("the directory was replaced".into());
        }
        if a.degraded.is_none() {
            self.entries.fill(&mut a, fingerprint);
        }
        if let Ok(bytes) = serde_json::to_vec(&a) {
            let _ = sock.write_all(&bytes);
        }
        alive && !moved
    }
}

/// The parsed entries, with what makes a lookup cost the same at 10,000
/// files as at one: keys by fingerprint, and the entries with problems.
#[derive(Default)]
struct Entries {
    /// By name, in name order (the order a scan prints).
    by_name: BTreeMap<OsString, FileKeys>,
    by_fingerprint: HashMap<String, BTreeSet<OsString>>,
    with_problems: BTreeSet<OsString>,
}

impl Entries {
    fn clear(&mut self) {
        *self = Entries::default();
    }

    fn insert(&mut self, name: OsString, keys: FileKeys) {
        self.remove(&name);
        for k in &keys.keys {
            self.by_fingerprint
                .entry(k.fingerprint.clone())
                .or_default()
                .insert(name.clone());
        }
        if !keys.problems.is_empty() {
            self.with_problems.insert(name.clone());
        }
        self.by_name.insert(name, keys);
    }

    fn remove(&mut self, name: &OsString) {
        let Some(old) = self.by_name.remove(name) else {
            return;
        };
        for k in &old.keys {
            if let Some(names) = self.by_fingerprint.get_mut(&k.fingerprint) {
                names.remove(name);
                if names.is_empty() {
                    self.by_fingerprint.remove(&k.fingerprint);
                }
            }
        }
        self.with_problems.remove(name);
    }

    /// Every problem, and the keys matching `fingerprint` (all without
    /// one), in the order a scan of the directory gives them.
    fn fill(&self, a: &mut Reply, fingerprint: Option<&str>) {
        for name in &self.with_problems {
            a.problems
                .extend(self.by_name[name].problems.iter().cloned());
        }
        let mut push = |f: &FileKeys| {
            for k in &f.keys {
                if fingerprint.is_none_or(|fp| fp == k.fingerprint) {
                    a.keys.push(WireKey {
                        identity: k.identity.clone(),
                        line: k.line,
                        key: k.key.to_openssh(),
                    });
                }
            }
        };
        match fingerprint {
            None => self.by_name.values().for_each(push),
            Some(fp) => {
                for name in self.by_fingerprint.get(fp).into_iter().flatten() {
                    push(&self.by_name[name]);
                }
            }
        }
    }
}

//! The key index: one small process per `users.d` (started by the first
//! `bastion-keys` call that finds none, running as the same unprivileged
//! user) that keeps every `*.pub` parsed in memory, kept current by
//! inotify, and answers lookups over an abstract Unix socket. A lookup then
//! costs one round trip, whatever the number of files.
//!
//! It never answers from a view older than the question: inotify queues an
//! event before the syscall that changed a file returns, and the index
//! reads every queued event, re-reading the entries they name, after it has
//! received a question and before it answers. The directory has a watch for
//! entries added, removed and renamed; every entry has a watch on its inode
//! for content written through any path (hard links, bind-mounted files).
//! Anything it cannot vouch for (a file system whose changes may not come
//! from this kernel, a watch it could not add, another directory now at the
//! path, a socket held by a stranger) makes the caller read every file
//! instead: slower, never wrong.

use super::line;
use super::source::{self, FileKeys, FoundKey};
use crate::sys::inotify::{self as sys, Inotify};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
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
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

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

/// The socket of the index of one directory: per directory object (not
/// path: another directory at the path, or the same path in another
/// container sharing the network namespace, is another index), per user,
/// per protocol.
fn address(id: (u64, u64)) -> io::Result<SocketAddr> {
    let uid = nix::unistd::geteuid().as_raw();
    let name = format!("bastion-keys/{PROTOCOL}/{uid}/{}:{}", id.0, id.1);
    SocketAddr::from_abstract_name(name.as_bytes())
}

/// Only root and our own user may ask or answer.
fn trusted_peer(sock: &UnixStream) -> Result<(), String> {
    let uid = sys::peer_uid(sock).map_err(|e| format!("cannot check its owner: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if uid == 0 || uid == me {
        Ok(())
    } else {
        Err(format!("it is held by uid {uid}, not by uid {me}"))
    }
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

/// Asks the index of `dir` for the keys matching `fingerprint` (all keys
/// without one) and every problem it knows of.
pub(crate) fn query(
    dir: &Path,
    fingerprint: Option<&str>,
    timeout: Duration,
) -> Result<FileKeys, Fallback> {
    if !trusted_fs(dir) {
        return Err(Fallback::quiet(
            "not a local file system inotify can vouch for",
        ));
    }
    let id = dir_id(dir).map_err(Fallback::quiet)?;
    let addr = address(id).map_err(Fallback::quiet)?;
    let mut sock = match UnixStream::connect_addr(&addr) {
        Ok(s) => s,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(Fallback {
                start_one: true,
                note: None,
                reason: "no key index runs for this directory".into(),
            })
        }
        Err(e) => return Err(Fallback::quiet(e)),
    };
    trusted_peer(&sock).map_err(|why| {
        Fallback::noted(format!(
            "key index socket not used ({why}); reading every file"
        ))
    })?;
    let _ = sock.set_read_timeout(Some(timeout));
    let _ = sock.set_write_timeout(Some(timeout));
    let question = format!("{}\n", fingerprint.unwrap_or("-"));
    let mut raw = Vec::new();
    sock.write_all(question.as_bytes())
        .and_then(|()| sock.shutdown(std::net::Shutdown::Write))
        .and_then(|()| {
            (&mut sock)
                .take(MAX_ANSWER)
                .read_to_end(&mut raw)
                .map(|_| ())
        })
        .map_err(Fallback::quiet)?;
    let reply: Reply = serde_json::from_slice(&raw).map_err(Fallback::quiet)?;
    if let Some(why) = reply.degraded {
        return Err(Fallback::noted(format!(
            "key index unavailable ({why}); reading every file"
        )));
    }
    // The index must watch the directory that is at the path now.
    if reply.dir != id || dir_id(dir).ok() != Some(id) {
        return Err(Fallback::quiet("the index watches another directory"));
    }
    let mut out = FileKeys {
        keys: Vec::with_capacity(reply.keys.len()),
        problems: reply.problems,
    };
    for k in reply.keys {
        let Ok(line::Line::Key(key)) = line::parse(k.key.as_bytes()) else {
            return Err(Fallback::quiet("the index sent a malformed key"));
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

/// Starts an index for `dir` in the background, detached from sshd: its
/// own process group, no inherited stdio (sshd waits for our stdout to
/// close). The caller does not wait for it.
pub(crate) fn start(dir: &Path) {
    use std::os::unix::process::CommandExt;
    use std::process::{Command, Stdio};
    let (Ok(exe), Ok(dir)) = (std::env::current_exe(), std::path::absolute(dir)) else {
        return;
    };
    let _ = Command::new(exe)
        .arg("--serve-index")
        .arg(&dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir("/")
        .process_group(0)
        .spawn();
}

/// The index process: answers until the directory goes away or no one
/// asked for `IDLE_EXIT`.
pub(crate) fn serve(dir: &Path) -> io::Result<()> {
    let id = dir_id(dir)?;
    let listener = match UnixListener::bind_addr(&address(id)?) {
        Ok(l) => l,
        // Another index already serves this directory.
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => return Ok(()),
        Err(e) => return Err(e),
    };
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
        let ready = sys::poll(
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
        if last_question.elapsed() > IDLE_EXIT || dir_id(dir).ok() != Some(index.dir_id) {
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
        if sock.set_nonblocking(false).is_err() || trusted_peer(&sock).is_err() {
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
            sys::poll(&[(self.mounts.as_raw_fd(), true)], Duration::ZERO).map_or(true, |r| r[0]);
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

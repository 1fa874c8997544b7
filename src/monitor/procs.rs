//! What the monitor reads about a peer process from `/proc`, without
//! ptrace rights (a container's root has no CAP_SYS_PTRACE by default, so
//! `exe`, `environ` and `fd` of another uid are closed to it): parent,
//! start time, real uid and command name. The kernel sets the parent of
//! every process, so a session cannot make up its ancestry.

use std::path::PathBuf;

/// A process named by pid and start time (a reused pid is another process).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ProcKey {
    pub(crate) pid: i32,
    pub(crate) start: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    pub(crate) comm: String,
    pub(crate) ppid: i32,
    pub(crate) start: u64,
}

fn proc_dir(pid: i32) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}"))
}

/// `/proc/PID/stat`: the name sits in parentheses and may itself contain
/// spaces or `)`, so fields are counted from the last `)`.
pub(crate) fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&read_small(&proc_dir(pid).join("stat"))?)
}

/// A `/proc` file read into a buffer of a page from the start, so one
/// `read` gets it all and the next says the end (`read_to_string` starts
/// from a size hint of 0, grows and asks again: six calls for one `stat`,
/// and an `fstat`).
fn read_small(path: &std::path::Path) -> Option<String> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).ok()?;
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match f.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    buf.truncate(len);
    String::from_utf8(buf).ok()
}

fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After the name: state(0) ppid(1) ... starttime(19).
    Some(Stat {
        comm,
        ppid: fields.get(1)?.parse().ok()?,
        start: fields.get(19)?.parse().ok()?,
    })
}

/// The real uid of `pid` (`Uid:` line of `/proc/PID/status`).
pub(crate) fn real_uid(pid: i32) -> Option<u32> {
    let text = read_small(&proc_dir(pid).join("status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub(crate) fn key(pid: i32) -> Option<ProcKey> {
    stat(pid).map(|s| ProcKey {
        pid,
        start: s.start,
    })
}

/// Whether the process `k` names is still alive.
pub(crate) fn alive(k: ProcKey) -> bool {
    key(k.pid) == Some(k)
}

/// The nearest ancestor of `pid` that is a root-owned sshd: the
/// per-connection privileged sshd of an SSH session (`sshd -i` in tests),
/// the one process that stands for one client connection. None for a
/// descendant of the monitor (the listener's commands).
pub(crate) fn sshd_ancestor(pid: i32) -> Option<ProcKey> {
    let mut cur = stat(pid)?.ppid;
    for _ in 0..64 {
        // Under the monitor itself: a descendant of the HTTP listener (a
        // session command), never of an sshd connection.
        if cur <= 1 || u32::try_from(cur).is_ok_and(|p| p == std::process::id()) {
            return None;
        }
        let s = stat(cur)?;
        if matches!(s.comm.as_str(), "sshd" | "sshd-session") && real_uid(cur) == Some(0) {
            return Some(ProcKey {
                pid: cur,
                start: s.start,
            });
        }
        cur = s.ppid;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_hostile_name() {
        let s =
            parse_stat("42 (a) b (c)) S 7 42 42 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 1 0 123456 0 0")
                .unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!(s.ppid, 7);
        assert_eq!(s.start, 123456);
    }

    #[test]
    fn own_process() {
        let me = std::process::id() as i32;
        let s = stat(me).unwrap();
        assert_eq!(s.ppid, nix::unistd::getppid().as_raw());
        assert!(alive(key(me).unwrap()));
        assert_eq!(real_uid(me), Some(nix::unistd::getuid().as_raw()));
        assert!(!alive(ProcKey {
            pid: me,
            start: s.start + 1
        }));
    }
}

//! Dropping root for good (real, effective and saved ids, supplementary
//! groups from /etc/group) and making a process non-dumpable, so another
//! process of the same user can neither ptrace it nor read its
//! `/proc/<pid>/environ` or `/proc/<pid>/mem`. No `unsafe` here: nix wraps
//! the syscalls.

use nix::unistd::{Gid, Uid, User};
use std::ffi::CString;
use std::fmt;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// Why the privilege drop failed; the process must not serve after it.
#[derive(Debug)]
pub(crate) struct DropError(String);

impl fmt::Display for DropError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The account a process runs as after [`drop_to`].
#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) name: String,
    pub(crate) uid: u32,
    pub(crate) home: PathBuf,
}

fn lookup(name: &str) -> Result<User, DropError> {
    User::from_name(name)
        .map_err(|e| DropError(format!("cannot look up user {name}: {e}")))?
        .ok_or_else(|| DropError(format!("user {name} does not exist")))
}

/// The account the process already runs as (no drop possible or needed).
pub(crate) fn current_account() -> Result<Account, DropError> {
    let uid = Uid::current();
    let u = User::from_uid(uid)
        .map_err(|e| DropError(format!("cannot look up uid {uid}: {e}")))?
        .ok_or_else(|| DropError(format!("uid {uid} has no passwd entry")))?;
    Ok(Account {
        name: u.name,
        uid: u.uid.as_raw(),
        home: u.dir,
    })
}

/// Whether the process runs as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    Uid::effective().is_root()
}

/// Becomes `name` for good: supplementary groups from /etc/group
/// (initgroups, so a group the entrypoint just added is included), then
/// gid, then uid, real, effective and saved alike. Checks that root cannot
/// be regained.
pub(crate) fn drop_to(name: &str) -> Result<Account, DropError> {
    let u = lookup(name)?;
    if u.uid.is_root() {
        return Err(DropError(format!(
            "refusing to run as {name}: it has uid 0; the session user must not be root"
        )));
    }
    let cname = CString::new(name).map_err(|_| DropError(format!("bad user name {name:?}")))?;
    nix::unistd::initgroups(&cname, u.gid)
        .map_err(|e| DropError(format!("initgroups({name}): {e}")))?;
    nix::unistd::setresgid(u.gid, u.gid, u.gid)
        .map_err(|e| DropError(format!("setresgid({}): {e}", u.gid)))?;
    nix::unistd::setresuid(u.uid, u.uid, u.uid)
        .map_err(|e| DropError(format!("setresuid({}): {e}", u.uid)))?;
    if nix::unistd::setuid(Uid::from_raw(0)).is_ok()
        || nix::unistd::seteuid(Uid::from_raw(0)).is_ok()
    {
        return Err(DropError("root could be regained after the drop".into()));
    }
    Ok(Account {
        name: u.name,
        uid: u.uid.as_raw(),
        home: u.dir,
    })
}

/// PR_SET_DUMPABLE 0: /proc/<pid>/{environ,mem,maps,fd} become root-owned
/// and ptrace by the same uid is refused. Must be called after the uid
/// change (which resets the flag). Exec of another program resets it again,
/// so children are unaffected.
pub(crate) fn set_non_dumpable() -> Result<(), DropError> {
    nix::sys::prctl::set_dumpable(false)
        .map_err(|e| DropError(format!("prctl(PR_SET_DUMPABLE, 0): {e}")))?;
    match nix::sys::prctl::get_dumpable() {
        Ok(false) => Ok(()),
        _ => Err(DropError("the process is still dumpable".into())),
    }
}

/// Whether user `name` could read a file with this metadata through its
/// mode bits (owner, any of its groups, or others). An unknown user: false.
pub(crate) fn user_may_read(name: &str, meta: &Metadata) -> bool {
    let Ok(u) = lookup(name) else {
        return false;
    };
    if u.uid.is_root() {
        return true;
    }
    let mode = meta.mode();
    if meta.uid() == u.uid.as_raw() {
        return mode & 0o400 != 0;
    }
    let in_group = u.gid.as_raw() == meta.gid()
        || CString::new(name)
            .ok()
            .and_then(|c| nix::unistd::getgrouplist(&c, u.gid).ok())
            .is_some_and(|gs| gs.contains(&Gid::from_raw(meta.gid())));
    if in_group {
        return mode & 0o040 != 0;
    }
    mode & 0o004 != 0
}

/// Makes `cmd`'s child get SIGTERM when the process that spawned it ends
/// (in the image: sshd, which the entrypoint becomes), so a helper never
/// outlives the server it belongs to. Set after the child's uid change
/// (which would clear it), right before exec.
pub(crate) fn die_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs between fork and exec and only makes two
    // raw syscalls (prctl, getppid) and _exit-free error returns: no
    // allocation, no lock, nothing async-signal-unsafe.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGTERM, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have gone before the flag was set.
            if nix::libc::getppid() != parent.as_raw() {
                return Err(std::io::Error::from_raw_os_error(nix::libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// The same for the calling process itself, after its own uid change;
/// `parent` is the pid it was started by.
pub(crate) fn exit_with_parent(parent: u32) -> Result<(), DropError> {
    nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
        .map_err(|e| DropError(format!("prctl(PR_SET_PDEATHSIG): {e}")))?;
    if nix::unistd::getppid().as_raw() as u32 != parent {
        return Err(DropError(format!("the parent process {parent} is gone")));
    }
    Ok(())
}

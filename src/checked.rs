//! One home for security-relevant opens: regular-file-only opens that never
//! block on a FIFO (and optionally never follow a symlink), private
//! directories, and the peer check of a private socket. Every part that
//! reads a file a session could plant, or serves a socket, goes through
//! here instead of re-deriving the checks.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Why [`open_regular`] refused a path.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The final component is a symlink and following was not allowed.
    Symlink,
    Open(io::Error),
    Stat(io::Error),
    /// What it is instead: "a directory", "a FIFO", "a socket", "a device".
    NotRegular(&'static str),
}

/// Opens `path` read-only, close-on-exec, without blocking on a FIFO (and
/// without following a final symlink unless `follow`), and checks through
/// the descriptor that it is a regular file.
pub(crate) fn open_regular(path: &Path, follow: bool) -> Result<File, OpenError> {
    let mut flags = nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC;
    if !follow {
        flags |= nix::libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) if !follow => OpenError::Symlink,
            _ => OpenError::Open(e),
        })?;
    let ft = file.metadata().map_err(OpenError::Stat)?.file_type();
    if !ft.is_file() {
        return Err(OpenError::NotRegular(if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        }));
    }
    Ok(file)
}

/// Creates `dir` if missing (its parent is root's) and makes it a private
/// directory of `uid`:`gid` with `mode`, through a descriptor opened
/// without following a symlink, so a link at the path is refused.
pub(crate) fn ensure_private_dir(dir: &Path, uid: u32, gid: u32, mode: u32) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let d = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) | Some(nix::libc::ENOTDIR) => {
                io::Error::other(format!("{} is not a directory", dir.display()))
            }
            _ => e,
        })?;
    let m = d.metadata()?;
    if m.uid() != uid || m.gid() != gid {
        std::os::unix::fs::fchown(&d, Some(uid), Some(gid))?;
    }
    if m.mode() & 0o7777 != mode {
        d.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// The socket directory may be used only if no one but our user (and
/// root) can enter it: a real directory (not a symlink), ours, mode 0700
/// or stricter. Anyone else could plant or squat the socket.
pub(crate) fn private_dir(dir: &Path) -> Result<(), String> {
    let shown = crate::audit::escape_path(dir);
    let m = std::fs::symlink_metadata(dir).map_err(|e| format!("{shown}: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if !m.file_type().is_dir() {
        Err(format!("{shown} is not a directory"))
    } else if m.uid() != me {
        Err(format!("{shown} is owned by uid {}, not uid {me}", m.uid()))
    } else if m.mode() & 0o077 != 0 {
        Err(format!(
            "{shown} has mode {:o}, not 0700",
            m.mode() & 0o7777
        ))
    } else {
        Ok(())
    }
}

/// Only root and our own user may ask or answer.
pub(crate) fn trusted_peer(sock: &UnixStream) -> Result<(), String> {
    let uid =
        crate::sys::peer::peer_uid(sock).map_err(|e| format!("cannot check its owner: {e}"))?;
    let me = nix::unistd::geteuid().as_raw();
    if uid == 0 || uid == me {
        Ok(())
    } else {
        Err(format!("it is held by uid {uid}, not by uid {me}"))
    }
}

/// `mkdir -p` then make `dir` root-owned with `mode`, refusing a symlink.
pub(crate) fn ensure_root_dir(dir: &Path, mode: u32) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let m = fs::symlink_metadata(dir)?;
    if !m.is_dir() {
        return Err(io::Error::other(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    make_root_owned(dir, &m, mode)
}

pub(crate) fn make_root_owned(p: &Path, m: &fs::Metadata, mode: u32) -> io::Result<()> {
    if m.uid() != 0 || m.gid() != 0 {
        std::os::unix::fs::chown(p, Some(0), Some(0))?;
    }
    if m.mode() & 0o7777 != mode {
        fs::set_permissions(p, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_regular_refuses_what_is_not_a_plain_file() {
        let d = std::env::temp_dir().join(format!("bastion-checked-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir(&d).unwrap();
        let f = d.join("f");
        fs::write(&f, "x").unwrap();
        let link = d.join("link");
        std::os::unix::fs::symlink(&f, &link).unwrap();
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(open_regular(&f, false).is_ok());
        assert!(open_regular(&link, true).is_ok());
        assert!(matches!(
            open_regular(&link, false),
            Err(OpenError::Symlink)
        ));
        assert!(matches!(
            open_regular(&fifo, false),
            Err(OpenError::NotRegular("a FIFO"))
        ));
        assert!(matches!(
            open_regular(&d, false),
            Err(OpenError::NotRegular("a directory"))
        ));
        assert!(matches!(
            open_regular(&d.join("none"), false),
            Err(OpenError::Open(_))
        ));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn private_dir_is_made_and_a_symlink_refused() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let d = std::env::temp_dir().join(format!("bastion-private-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir(&d).unwrap();
        let private = d.join("keys-index");
        ensure_private_dir(&private, 65534, 65534, 0o700).unwrap();
        fs::set_permissions(&private, fs::Permissions::from_mode(0o777)).unwrap();
        ensure_private_dir(&private, 65534, 65534, 0o700).unwrap();
        let m = fs::symlink_metadata(&private).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (65534, 65534, 0o700));
        let dir_link = d.join("link-index");
        std::os::unix::fs::symlink(&private, &dir_link).unwrap();
        assert!(ensure_private_dir(&dir_link, 65534, 65534, 0o700).is_err());
        fs::remove_dir_all(&d).unwrap();
    }
}

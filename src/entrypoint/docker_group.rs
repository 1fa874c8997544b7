//! Docker socket group alignment (SPEC 9): when the socket is mounted, the
//! session user joins the group that owns it, by editing `/etc/group`
//! directly (the same on Alpine and Debian, no shadow tools needed). It never
//! adds the user to the root group.

use std::fmt;

/// What [`align`] did to the group file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum GroupChange {
    AlreadyMember { group: String },
    Added { group: String },
    Created { group: String },
}

impl fmt::Display for GroupChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AlreadyMember { group } => write!(f, "already a member of group {group}"),
            Self::Added { group } => write!(f, "added to group {group}"),
            Self::Created { group } => write!(f, "added to group {group}, created for that gid"),
        }
    }
}

/// Returns the new contents of the group file, in which `user` is a member
/// of the group with `gid` (created as `docker`, or `docker<gid>` when that
/// name is taken, if no group has that gid).
pub(super) fn align(group_file: &str, gid: u32, user: &str) -> (String, GroupChange) {
    let gid_s = gid.to_string();
    let mut out = String::with_capacity(group_file.len() + 32);
    let mut change = None;
    for line in group_file.lines() {
        let f: Vec<&str> = line.splitn(4, ':').collect();
        if change.is_none() && f.len() == 4 && f[2] == gid_s {
            let group = f[0].to_owned();
            if f[3].split(',').any(|m| m == user) {
                change = Some(GroupChange::AlreadyMember { group });
                out.push_str(line);
            } else {
                let sep = if f[3].is_empty() { "" } else { "," };
                out.push_str(&format!("{}:{}:{}:{}{sep}{user}", f[0], f[1], f[2], f[3]));
                change = Some(GroupChange::Added { group });
            }
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    let change = change.unwrap_or_else(|| {
        let taken = |name: &str| {
            group_file
                .lines()
                .any(|l| l.split(':').next() == Some(name))
        };
        let group = [
            "docker".to_owned(),
            format!("docker{gid}"),
            format!("bastion-docker-{gid}"),
        ]
        .into_iter()
        .find(|n| !taken(n))
        .unwrap_or_else(|| format!("bastion-docker-{gid}-{user}"));
        out.push_str(&format!("{group}:x:{gid}:{user}\n"));
        GroupChange::Created { group }
    });
    (out, change)
}

/// The socket's group id when a Docker socket is mounted.
pub(super) fn docker_socket_gid(path: &std::path::Path) -> Option<Result<u32, String>> {
    use std::fs;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    match fs::metadata(path) {
        Err(_) => None,
        Ok(m) if m.file_type().is_socket() => Some(Ok(m.gid())),
        Ok(_) => Some(Err(format!(
            "{} exists but is not a socket (Docker creates a directory when the mounted path is missing)",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEBIAN: &str = "root:x:0:\ndaemon:x:1:\nagent:x:1001:\n";

    #[test]
    fn joins_an_existing_group() {
        let g = format!("{DEBIAN}docker:x:998:\n");
        let (out, c) = align(&g, 998, "agent");
        assert_eq!(
            c,
            GroupChange::Added {
                group: "docker".into()
            }
        );
        assert!(out.ends_with("docker:x:998:agent\n"));
        let g = format!("{DEBIAN}ping:x:999:alice,bob\n");
        let (out, _) = align(&g, 999, "agent");
        assert!(out.ends_with("ping:x:999:alice,bob,agent\n"));
    }

    #[test]
    fn is_idempotent() {
        let g = format!("{DEBIAN}docker:x:998:\n");
        let (once, _) = align(&g, 998, "agent");
        let (twice, c) = align(&once, 998, "agent");
        assert_eq!(once, twice);
        assert_eq!(
            c,
            GroupChange::AlreadyMember {
                group: "docker".into()
            }
        );
        // A member named "agent2" does not make "agent" a member.
        let (out, c) = align("docker:x:998:agent2\n", 998, "agent");
        assert_eq!(out, "docker:x:998:agent2,agent\n");
        assert!(matches!(c, GroupChange::Added { .. }));
    }

    #[test]
    fn creates_a_group_for_an_unknown_gid() {
        let (out, c) = align(DEBIAN, 4242, "agent");
        assert_eq!(
            c,
            GroupChange::Created {
                group: "docker".into()
            }
        );
        assert_eq!(out, format!("{DEBIAN}docker:x:4242:agent\n"));
        // `docker` exists with another gid: a distinct name.
        let g = format!("{DEBIAN}docker:x:998:\n");
        let (out, c) = align(&g, 4242, "agent");
        assert_eq!(
            c,
            GroupChange::Created {
                group: "docker4242".into()
            }
        );
        assert!(out.ends_with("docker:x:998:\ndocker4242:x:4242:agent\n"));
    }

    #[test]
    fn keeps_every_other_line_byte_for_byte() {
        let g = "root:x:0:\n# odd line\nweird\ndocker:x:998:\n";
        let (out, _) = align(g, 998, "agent");
        assert_eq!(out, "root:x:0:\n# odd line\nweird\ndocker:x:998:agent\n");
    }
}

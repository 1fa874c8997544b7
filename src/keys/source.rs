//! Reading key files: one `users.d/*.pub` file or the boot-merged file,
//! into keys plus one problem line per thing skipped. It never follows a
//! symlink in `users.d`, never blocks on a FIFO, never reads more than
//! `MAX_FILE` bytes of a file and never reports more than `MAX_PROBLEMS`
//! problems (plus a count of the rest) for one file.

use super::line::{self, Line};
use crate::audit::escape;
use crate::checked::OpenError;
use crate::sshkey::PublicKey;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A key file larger than this is read up to here (and the cut logged).
pub(crate) const MAX_FILE: u64 = 1024 * 1024;
/// Problems reported per file; the rest are counted in one more line, so
/// a file of junk costs a few log lines, not one per line.
pub(crate) const MAX_PROBLEMS: usize = 5;

/// One key that may be printed, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FoundKey {
    /// `alice` for `users.d/alice.pub`; `merged` for the boot-merged file.
    pub(crate) identity: String,
    /// 1-based line number in its file.
    pub(crate) line: usize,
    pub(crate) key: PublicKey,
    pub(crate) fingerprint: String,
}

/// What one file gave: its keys and one log line per problem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FileKeys {
    pub(crate) keys: Vec<FoundKey>,
    pub(crate) problems: Vec<String>,
}

/// The identity of a `users.d` entry: `Some(stem)` for `stem.pub`, `None`
/// for names that are not key files at all (silently ignored), and an
/// error for a `.pub` name that cannot be an identity.
pub(crate) fn identity_of(name: &OsStr) -> Option<Result<String, String>> {
    let stem = name.as_bytes().strip_suffix(b".pub")?;
    if stem.is_empty() || stem.starts_with(b".") {
        return Some(Err("skipped: hidden or empty identity name".into()));
    }
    match std::str::from_utf8(stem) {
        Ok(s) if escape(s) == s => Some(Ok(s.to_owned())),
        _ => Some(Err(
            "skipped: the file name is not printable UTF-8 (rename it)".into(),
        )),
    }
}

/// Shown in logs for `dir/name`, escaped.
pub(crate) fn display(dir: &Path, name: &OsStr) -> String {
    crate::audit::escape_path(&dir.join(name))
}

/// [`crate::checked::open_regular`], with the reason in the words of the
/// key log.
fn open_regular(path: &Path, follow: bool) -> Result<File, String> {
    crate::checked::open_regular(path, follow).map_err(|e| match e {
        OpenError::Symlink => {
            "skipped: is a symbolic link (copy or bind-mount the file instead)".to_owned()
        }
        OpenError::Open(e) => format!("skipped: cannot open: {}", io_text(&e)),
        OpenError::Stat(e) => format!("skipped: cannot stat: {}", io_text(&e)),
        OpenError::NotRegular(what) => format!("skipped: is {what}, not a regular file"),
    })
}

fn io_text(e: &io::Error) -> String {
    let s = e.to_string();
    // "Permission denied (os error 13)" -> "Permission denied"
    match s.find(" (os error") {
        Some(i) => s[..i].to_owned(),
        None => s,
    }
}

/// Reads and parses one key file. `follow` is false for `users.d` entries.
pub(crate) fn read_file(path: &Path, shown: &str, identity: &str, follow: bool) -> FileKeys {
    let mut out = FileKeys::default();
    let file = match open_regular(path, follow) {
        Ok(f) => f,
        Err(problem) => {
            out.problems.push(format!("{shown}: {problem}"));
            return out;
        }
    };
    let mut data = Vec::new();
    if let Err(e) = file.take(MAX_FILE + 1).read_to_end(&mut data) {
        out.problems
            .push(format!("{shown}: skipped: cannot read: {}", io_text(&e)));
        return out;
    }
    if data.len() as u64 > MAX_FILE {
        data.truncate(MAX_FILE as usize);
        out.problems.push(format!(
            "{shown}: only the first {MAX_FILE} bytes are read; the rest is ignored"
        ));
    }
    parse_into(&data, shown, identity, &mut out);
    out
}

/// Parses file contents into keys and problems (the first
/// `MAX_PROBLEMS` of them, then how many more there are).
pub(crate) fn parse_into(data: &[u8], shown: &str, identity: &str, out: &mut FileKeys) {
    let mut more = 0usize;
    for (i, raw) in data.split(|&b| b == b'\n').enumerate() {
        let n = i + 1;
        match line::parse(raw) {
            Ok(Line::Nothing) => {}
            Ok(Line::Key(key)) => out.keys.push(FoundKey {
                identity: identity.to_owned(),
                line: n,
                fingerprint: key.fingerprint(),
                key,
            }),
            Err(_) if out.problems.len() >= MAX_PROBLEMS => more += 1,
            Err(e) => out.problems.push(format!("{shown}:{n}: skipped: {e}")),
        }
    }
    if more > 0 {
        out.problems
            .push(format!("{shown}: and {more} more problems in this file"));
    }
}

/// One `users.d` entry, read live.
pub(crate) fn read_entry(dir: &Path, name: &OsStr) -> Option<FileKeys> {
    let identity = identity_of(name)?;
    let shown = display(dir, name);
    Some(match identity {
        Ok(id) => read_file(&dir.join(name), &shown, &id, false),
        Err(problem) => FileKeys {
            keys: Vec::new(),
            problems: vec![format!("{shown}: {problem}")],
        },
    })
}

/// Every `*.pub` name in `dir`, sorted (for a stable output order).
pub(crate) fn list_dir(dir: &Path) -> Result<Vec<OsString>, String> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        format!(
            "{}: cannot read the key directory: {}; no keys from it",
            crate::audit::escape_path(dir),
            io_text(&e)
        )
    })?;
    let mut names: Vec<OsString> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.as_bytes().ends_with(b".pub"))
        .collect();
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &[u8]) -> Option<Result<String, String>> {
        identity_of(OsStr::from_bytes(name))
    }

    #[test]
    fn identity_is_the_file_stem() {
        assert_eq!(id(b"alice.pub"), Some(Ok("alice".into())));
        assert_eq!(id(b"ci bot (prod).pub"), Some(Ok("ci bot (prod)".into())));
        assert_eq!(id("émilie.pub".as_bytes()), Some(Ok("émilie".into())));
        assert_eq!(id(b"a.b.pub"), Some(Ok("a.b".into())));
    }

    #[test]
    fn other_names_are_not_key_files() {
        for n in [
            &b"README"[..],
            b"alice.pub.bak",
            b"alice.PUB",
            b"alice.pub~",
            b"pub",
        ] {
            assert_eq!(id(n), None, "{n:?}");
        }
    }

    #[test]
    fn names_that_cannot_be_an_identity_are_refused() {
        for n in [
            &b".pub"[..],
            b".hidden.pub",
            b"x\xff.pub",
            b"a\nb.pub",
            b"a\x1b[2Kb.pub",
            "a\u{202e}b.pub".as_bytes(),
            b"back\\slash.pub",
        ] {
            assert!(matches!(id(n), Some(Err(_))), "{n:?}");
        }
    }

    #[test]
    fn one_problem_per_bad_line_and_good_keys_survive() {
        let good =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g";
        let data = format!("junk\n\n# c\n{good} x\r\ncommand=\"x\" {good}\n{good}");
        let mut out = FileKeys::default();
        parse_into(data.as_bytes(), "f.pub", "f", &mut out);
        assert_eq!(out.keys.iter().map(|k| k.line).collect::<Vec<_>>(), [4, 6]);
        assert_eq!(out.problems.len(), 2, "{:?}", out.problems);
        assert!(out.problems[0].starts_with("f.pub:1: skipped: unknown key type junk"));
        assert!(out.problems[1].starts_with("f.pub:5: skipped: options"));
    }

    #[test]
    fn problems_per_file_are_capped() {
        let good =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g";
        let data = format!("{}{good}\n", "junk\n".repeat(1000));
        let mut out = FileKeys::default();
        parse_into(data.as_bytes(), "f.pub", "f", &mut out);
        assert_eq!(out.keys.len(), 1);
        assert_eq!(out.problems.len(), MAX_PROBLEMS + 1, "{:?}", out.problems);
        assert_eq!(
            out.problems[MAX_PROBLEMS],
            format!(
                "f.pub: and {} more problems in this file",
                1000 - MAX_PROBLEMS
            )
        );
    }
}

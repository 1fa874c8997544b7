//! `bastion-keys` (SPEC 6), sshd's AuthorizedKeysCommand: prints the live
//! keys of the bastion user with the bastion's own options. It never passes
//! through an option written in a `.pub` file, and never answers from a
//! view of `users.d` older than the call.

pub(crate) mod index;
pub(crate) mod line;
pub(crate) mod source;

use crate::audit::{self, escape, Event};
use crate::config::{Runtime, RUNTIME_FILE};
use crate::exit::{self, Failure, Tool};
use clap::Parser;
use source::FileKeys;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// sshd's AuthorizedKeysCommand for the bastion: prints the keys of the
/// bastion user (`users.d/*.pub`, read live, and the boot-merged host/repo
/// keys), each with the bastion's own options. Called by sshd as `%u %f`.
#[derive(Parser, Debug)]
#[command(name = "bastion-keys", version)]
struct Cli {
    /// Runtime file written by bastion-entrypoint.
    #[arg(long, value_name = "PATH", default_value = RUNTIME_FILE)]
    runtime: PathBuf,
    /// Read every file of users.d; neither use nor start the key index.
    #[arg(long)]
    scan: bool,
    /// Answer only from the key index; exit 1 if it cannot (diagnostics).
    #[arg(long, conflicts_with = "scan")]
    index_only: bool,
    /// Run the key index of DIR, its socket in SOCKETS (started by
    /// bastion-keys itself).
    #[arg(
        long,
        num_args = 2,
        value_names = ["DIR", "SOCKETS"],
        hide = true,
        exclusive = true
    )]
    serve_index: Option<Vec<PathBuf>>,
    /// The user sshd authenticates (`%u`); only the bastion user has keys.
    #[arg(required_unless_present = "serve_index")]
    user: Option<String>,
    /// Fingerprint of the offered key (`%f`); only that key is printed.
    fingerprint: Option<String>,
}

/// Identity shown for keys of the boot-merged file.
const MERGED_IDENTITY: &str = "merged";

pub fn main() -> ExitCode {
    exit::main(Tool::Keys, run)
}

fn run() -> Result<ExitCode, Failure> {
    let cli = exit::parse_args::<Cli>()?;
    if let Some([dir, sockets]) = cli.serve_index.as_deref() {
        index::serve(dir, sockets)
            .map_err(|e| Failure::os(format!("key index for {}: {e}", dir.display())))?;
        return Ok(exit::code(exit::OK));
    }
    let rt = Runtime::load(&cli.runtime)?;
    if cli.user.as_deref() != Some(rt.user.as_str()) {
        return Ok(exit::code(exit::OK));
    }
    let how = if cli.scan {
        Via::Scan
    } else if cli.index_only {
        Via::IndexOnly
    } else {
        Via::IndexOrScan
    };
    // Only SHA256 fingerprints are computed here; with another
    // FingerprintHash in sshd_config, print every key rather than none.
    let fingerprint = cli.fingerprint.filter(|f| f.starts_with("SHA256:"));
    let sockets = index::socket_dir(&cli.runtime);
    let (answer, start_index) = lookup(&rt, &sockets, fingerprint.as_deref(), how)
        .ok_or_else(|| Failure::os("the key index cannot answer"))?;
    let mut err = std::io::stderr().lock();
    for text in &answer.log {
        // One write per line: sshd's stderr keeps write boundaries, and the
        // monitor reads only whole records (see `monitor::relay`).
        let line = format!(
            "{}
",
            audit::render(&Event::KeyNote { text })
        );
        let _ = err.write_all(line.as_bytes());
    }
    let mut out = std::io::stdout().lock();
    if out
        .write_all(answer.lines.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        // sshd stopped reading: nobody to tell.
        return Ok(exit::code(exit::FAILURE));
    }
    drop(out);
    // After answering, so this login does not wait for it.
    if start_index {
        index::start(&rt.authorized_keys_dir, &sockets);
    }
    Ok(exit::code(exit::OK))
}

/// What one call prints: authorized_keys lines, and log lines for stderr.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Answer {
    pub(crate) lines: String,
    pub(crate) log: Vec<String>,
}

/// The answer for the bastion user: merged keys first, then `users.d`
/// from the key index when one can vouch for it, else from reading every
/// file. Also says whether to start an index for the next calls.
fn lookup(
    rt: &Runtime,
    sockets: &Path,
    fingerprint: Option<&str>,
    how: Via,
) -> Option<(Answer, bool)> {
    let dir = &rt.authorized_keys_dir;
    let mut files = vec![read_merged(&rt.merged_keys_file)];
    let mut start_index = false;
    let from_index = if how != Via::Scan {
        // Diagnostics may wait for an index that is re-reading everything.
        let timeout = if how == Via::IndexOnly {
            std::time::Duration::from_secs(60)
        } else {
            index::CALLER_TIMEOUT
        };
        match index::query(dir, sockets, fingerprint, timeout) {
            Ok(f) => Some(f),
            Err(fallback) if how == Via::IndexOnly => {
                Tool::Keys.say(&fallback.reason);
                return None;
            }
            Err(fallback) => {
                files.extend(fallback.note.map(|n| FileKeys {
                    keys: Vec::new(),
                    problems: vec![n],
                }));
                start_index = fallback.start_one;
                None
            }
        }
    } else {
        None
    };
    match from_index
        .map(|f| Ok(vec![f]))
        .unwrap_or_else(|| scan_dir(dir))
    {
        Ok(f) => files.extend(f),
        Err(problem) => files.push(FileKeys {
            keys: Vec::new(),
            problems: vec![problem],
        }),
    }
    Some((render(&files, fingerprint, rt.pty), start_index))
}

/// Where `users.d` keys come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// The index if it can vouch for its view, else reading every file.
    IndexOrScan,
    Scan,
    IndexOnly,
}

fn read_merged(path: &Path) -> FileKeys {
    let shown = crate::audit::escape_bytes(path.as_os_str().as_encoded_bytes());
    match std::fs::symlink_metadata(path) {
        // The entrypoint writes it even when empty; absent outside the image.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileKeys::default(),
        _ => source::read_file(path, &shown, MERGED_IDENTITY, true),
    }
}

/// Reads every `*.pub` in `dir` (the plain scan).
fn scan_dir(dir: &Path) -> Result<Vec<FileKeys>, String> {
    let names = source::list_dir(dir)?;
    Ok(names
        .iter()
        .filter_map(|n| source::read_entry(dir, n))
        .collect())
}

/// The bastion's options for every key: `restrict` turns off forwarding,
/// pty, user rc and X11; `pty` is given back when sessions need a TTY.
fn options(pty: bool) -> &'static str {
    if pty {
        "restrict,pty"
    } else {
        "restrict"
    }
}

/// Turns files into output: every problem logged, every key (or only the
/// one with `fingerprint`) printed with the bastion's options and its
/// identity as the comment. With a fingerprint, the identity it belongs to
/// is logged so the session's log names who logged in.
pub(crate) fn render(files: &[FileKeys], fingerprint: Option<&str>, pty: bool) -> Answer {
    let mut a = Answer::default();
    let mut owners: Vec<String> = Vec::new();
    for f in files {
        a.log.extend(f.problems.iter().cloned());
        for k in &f.keys {
            if fingerprint.is_some_and(|fp| fp != k.fingerprint) {
                continue;
            }
            a.lines.push_str(options(pty));
            a.lines.push(' ');
            a.lines.push_str(&k.key.to_openssh());
            a.lines.push(' ');
            a.lines.push_str(&k.identity);
            a.lines.push('\n');
            if fingerprint.is_some() {
                owners.push(format!("{} (line {})", k.identity, k.line));
            }
        }
    }
    if let Some(fp) = fingerprint {
        let fp = escape(fp);
        match owners.len() {
            0 => a.log.push(format!("key {fp}: no identity has this key")),
            1 => a.log.push(format!("key {fp}: identity {}", owners[0])),
            _ => a.log.push(format!(
                "key {fp}: identity {} (the same key is also listed for: {}; sshd uses the first)",
                owners[0],
                owners[1..].join(", ")
            )),
        }
    }
    a
}

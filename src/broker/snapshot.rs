//! `ALLOWED_COMMANDS` compiled once at boot: the entrypoint translates every
//! rule and writes the result (rule text, line, literal prefilter, `regex`
//! pattern) into a root-owned file next to the runtime file; a request loads
//! it without parsing a rule. A file that is not root's, is writable by
//! others, is truncated or corrupt is refused as a whole (the caller exits
//! 78 and runs nothing); it is never repaired or re-derived on the session
//! side.

use super::ere::Shortcut;
use super::rules::{self, Decidable, Prefilter, Source};
use crate::checked::OpenError;
use std::borrow::Cow;
use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The snapshot's name, in the runtime file's directory.
pub(crate) const FILE_NAME: &str = "allowed-commands.rules";
/// `ALLOWED_COMMANDS` is at most this large, so its snapshot is bounded too.
const MAX_FILE: u64 = 64 * 1024 * 1024;
/// Format tag; any change of layout changes it.
const MAGIC: &[u8; 8] = b"BRULES\x00\x01";
/// Magic, payload length, checksum.
const HEADER: usize = 8 + 8 + 8;

/// Where the entrypoint writes the snapshot for `runtime_file`.
pub(crate) fn path_for(runtime_file: &Path) -> PathBuf {
    runtime_file.with_file_name(FILE_NAME)
}

/// One `ALLOWED_COMMANDS` rule as the entrypoint translated it, borrowed
/// from the snapshot's bytes (a request allocates nothing per rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompiledRule<'a> {
    pub(crate) text: &'a str,
    pub(crate) line: usize,
    /// The whole-line `regex` pattern (`^(?:...)$`).
    pub(crate) pattern: &'a str,
    kind: u8,
    /// The shortcut's literals, still encoded (checked by `decode`).
    literals: &'a [u8],
}

impl CompiledRule<'_> {
    pub(crate) fn source(&self) -> Source {
        Source::Env { line: self.line }
    }

    fn literals(&self) -> impl Iterator<Item = &[u8]> {
        let mut r = Reader {
            bytes: self.literals,
        };
        std::iter::from_fn(move || r.bytes().ok())
    }
}

impl Decidable for CompiledRule<'_> {
    fn prefilter(&self, request: &str) -> Prefilter {
        match self.kind {
            EXACT => Prefilter::of(true, self.literals(), request),
            PREFIXES => Prefilter::of(false, self.literals(), request),
            _ => Prefilter::Candidate,
        }
    }

    fn pattern(&self) -> Cow<'_, str> {
        Cow::Borrowed(self.pattern)
    }
}

/// The snapshot cannot be used; nothing may run until the container is
/// restarted (the entrypoint writes it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotError {
    pub(crate) path: PathBuf,
    pub(crate) problem: String,
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the compiled ALLOWED_COMMANDS {} cannot be used: {}; nothing runs until the container is restarted (the entrypoint writes it at boot)",
            crate::audit::escape_bytes(self.path.as_os_str().as_encoded_bytes()),
            self.problem
        )
    }
}

/// Translates every rule of `allowed_commands` (validated before: a rule
/// that does not translate is an error here too) and encodes the result.
pub(crate) fn compile(allowed_commands: &str) -> Result<Vec<u8>, String> {
    let rules = rules::env_rules(allowed_commands);
    let mut compiled = Vec::with_capacity(rules.len());
    for rule in &rules {
        let t = match &rule.translated {
            Ok(t) => t,
            Err(error) => return Err(rules::RuleError { rule, error }.to_string()),
        };
        let Source::Env { line } = rule.source else {
            unreachable!("env_rules gives environment rules")
        };
        compiled.push((line, rule.text.as_str(), t.pattern(), &t.shortcut));
    }
    Ok(encode(compiled.iter().map(
        |(line, text, pattern, shortcut)| (*line, *text, pattern.as_str(), *shortcut),
    )))
}

/// Reads the snapshot at `path` if it is a regular file (no symlink), owned
/// by root and writable by nobody else (`decode_file` checks the bytes).
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, SnapshotError> {
    let err = |problem: String| SnapshotError {
        path: path.to_owned(),
        problem,
    };
    let file = crate::checked::open_regular(path, false).map_err(|e| {
        err(match e {
            OpenError::Symlink => "it is a symlink".into(),
            OpenError::Open(e) | OpenError::Stat(e) => e.to_string(),
            OpenError::NotRegular(what) => format!("it is {what}, not a regular file"),
        })
    })?;
    let meta = file.metadata().map_err(|e| err(e.to_string()))?;
    if meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        return Err(err(format!(
            "owned by uid {} with mode {:o}, not root's alone",
            meta.uid(),
            meta.mode() & 0o7777
        )));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0).min(1 << 20));
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(e.to_string()))?;
    Ok(bytes)
}

/// `decode`, its problem told with the file's path.
pub(crate) fn decode_file<'a>(
    path: &Path,
    bytes: &'a [u8],
) -> Result<Vec<CompiledRule<'a>>, SnapshotError> {
    decode(bytes).map_err(|problem| SnapshotError {
        path: path.to_owned(),
        problem: problem.to_owned(),
    })
}

/// A corruption check (truncation, flipped bits, a partial write), not an
/// authenticator: who may write the file is settled by its owner and mode.
/// Every step is a bijection of the state for a given word, so any change
/// confined to one 8-byte word always changes the result.
fn checksum(bytes: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h = 0x243f_6a88_85a3_08d3 ^ (bytes.len() as u64);
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        let v = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        h = (h ^ v).wrapping_mul(K).rotate_left(29);
    }
    let mut last = [0u8; 8];
    last[..words.remainder().len()].copy_from_slice(words.remainder());
    h = (h ^ u64::from_le_bytes(last))
        .wrapping_mul(K)
        .rotate_left(29);
    h ^= h >> 32;
    h = h.wrapping_mul(0xd6e8_feb8_6659_fd93);
    h ^ (h >> 32)
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_u32(out, s.len());
    out.extend_from_slice(s.as_bytes());
}

const EXACT: u8 = 1;
const PREFIXES: u8 = 2;
const NO_SHORTCUT: u8 = 3;

/// The snapshot of rules given as (line, text, pattern, shortcut).
pub(crate) fn encode<'a>(
    rules: impl ExactSizeIterator<Item = (usize, &'a str, &'a str, &'a Shortcut)>,
) -> Vec<u8> {
    let mut payload = Vec::new();
    put_u32(&mut payload, rules.len());
    for (line, text, pattern, shortcut) in rules {
        put_u32(&mut payload, line);
        put_str(&mut payload, text);
        put_str(&mut payload, pattern);
        let (tag, words): (u8, &[String]) = match shortcut {
            Shortcut::Exact(w) => (EXACT, w),
            Shortcut::Prefixes(w) => (PREFIXES, w),
            Shortcut::None => (NO_SHORTCUT, &[]),
        };
        payload.push(tag);
        put_u32(&mut payload, words.len());
        for w in words {
            put_str(&mut payload, w);
        }
    }
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&checksum(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    out
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.bytes.len() < n {
            return Err("it ends in the middle of a rule");
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<usize, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }

    fn bytes(&mut self) -> Result<&'a [u8], &'static str> {
        let n = self.u32()?;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'a str, &'static str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "a string in it is not UTF-8")
    }
}

/// The rules of a snapshot, every byte of it checked: header, length,
/// checksum, then each rule's layout and UTF-8.
pub(crate) fn decode(bytes: &[u8]) -> Result<Vec<CompiledRule<'_>>, &'static str> {
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err("not a compiled rule file of this version (bad header)");
    }
    let word = |at: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(w)
    };
    let payload = &bytes[HEADER..];
    if word(8) != payload.len() as u64 {
        return Err("its length does not match its header (truncated or appended to)");
    }
    if word(16) != checksum(payload) {
        return Err("its checksum does not match (corrupt)");
    }
    let mut r = Reader { bytes: payload };
    let n = r.u32()?;
    // Each rule takes at least 17 bytes: no count can make us allocate
    // more than the file justifies.
    if n > payload.len() / 17 {
        return Err("its rule count is larger than the file");
    }
    let mut rules = Vec::with_capacity(n);
    for _ in 0..n {
        let line = r.u32()?;
        let text = r.str()?;
        let pattern = r.str()?;
        let kind = r.u8()?;
        let count = r.u32()?;
        let start = r.bytes;
        for _ in 0..count {
            r.str()?;
        }
        let literals = &start[..start.len() - r.bytes.len()];
        if !matches!(kind, EXACT | PREFIXES | NO_SHORTCUT) || (kind == NO_SHORTCUT && count != 0) {
            return Err("a rule has an unknown prefilter");
        }
        rules.push(CompiledRule {
            text,
            line,
            pattern,
            kind,
            literals,
        });
    }
    if !r.bytes.is_empty() {
        return Err("bytes follow the last rule");
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str = "ls\n# c\nsvc (start|stop)\n[a-z]+ x{1,3}\nuptime( -p)?|w\n";

    #[test]
    fn round_trip_keeps_every_rule_in_order() {
        let bytes = compile(RULES).unwrap();
        let got = decode(&bytes).unwrap();
        let lines: Vec<(usize, &str)> = got.iter().map(|r| (r.line, r.text)).collect();
        assert_eq!(
            lines,
            vec![
                (1, "ls"),
                (3, "svc (start|stop)"),
                (4, "[a-z]+ x{1,3}"),
                (5, "uptime( -p)?|w")
            ]
        );
        for (c, r) in got.iter().zip(rules::env_rules(RULES)) {
            assert_eq!(c.pattern, r.translated.as_ref().unwrap().pattern());
            for req in [
                "ls",
                "svc start",
                "svc stop ",
                "ab x",
                "uptime -p",
                "w",
                "x",
            ] {
                assert_eq!(c.prefilter(req), r.prefilter(req), "{} {req:?}", c.text);
            }
        }
        assert_eq!(decode(&compile("").unwrap()).unwrap(), vec![]);
    }

    #[test]
    fn a_bad_rule_is_not_compiled() {
        let e = compile("ls\n(a)\\1\n").unwrap_err();
        assert!(e.contains("ALLOWED_COMMANDS line 2"), "{e}");
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_is_refused() {
        let bytes = compile(RULES).unwrap();
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(decode(&b).is_err(), "bit {bit} of byte {i}");
            }
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
    }

    #[test]
    fn a_consistent_but_malformed_payload_is_refused() {
        // Right header and checksum over a payload that lies about its
        // counts: refused, not trusted.
        let wrap = |payload: &[u8]| {
            let mut out = MAGIC.to_vec();
            out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
            out.extend_from_slice(&checksum(payload).to_le_bytes());
            out.extend_from_slice(payload);
            out
        };
        assert!(decode(&wrap(&u32::MAX.to_le_bytes())).is_err());
        let mut p = 1u32.to_le_bytes().to_vec();
        p.extend_from_slice(&[1, 0, 0, 0, 200, 0, 0, 0]);
        p.extend_from_slice(&[0; 12]);
        assert!(decode(&wrap(&p)).is_err());
    }
}

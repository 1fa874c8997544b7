//! Where rules come from (`ALLOWED_COMMANDS`, the live list file) and the
//! allow/deny decision over them. It never executes anything; a rule that
//! cannot be translated exactly is reported and never used.

use super::ere::{self, EreError, Shortcut, Translated};
use crate::checked::OpenError;
use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

/// Longest request accepted (SPEC 4).
pub(crate) const MAX_REQUEST: usize = 64 * 1024;
/// A list file larger than this is refused as a whole (it is meant to be a
/// hand-written list, and `/dev/zero` must not hang a session).
pub(crate) const MAX_LIST_FILE: u64 = 16 * 1024 * 1024;

/// The line a rule was written on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    Env { line: usize },
    File { path: PathBuf, line: usize },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Env { line } => write!(f, "ALLOWED_COMMANDS line {line}"),
            Source::File { path, line } => write!(
                f,
                "{} line {line}",
                crate::audit::escape_bytes(path.as_os_str().as_encoded_bytes())
            ),
        }
    }
}

/// One rule line, translated or refused.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub(crate) text: String,
    pub(crate) source: Source,
    pub(crate) translated: Result<Translated, EreError>,
}

/// A rule that cannot be used, for the operator.
#[derive(Debug, Clone)]
pub(crate) struct RuleError<'a> {
    pub(crate) rule: &'a Rule,
    pub(crate) error: &'a EreError,
}

impl fmt::Display for RuleError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rule \"{}\" ({}) refused {}",
            show_rule(&self.rule.text),
            self.rule.source,
            self.error
        )
    }
}

/// A rule as written, for logs: verbatim (backslashes and all) unless it
/// holds something that must be escaped to keep the line one line.
pub(crate) fn show_rule(text: &str) -> String {
    let plain = text.chars().all(|c| {
        let mut b = [0u8; 4];
        c == '\\' || crate::audit::escape(c.encode_utf8(&mut b)).len() == c.len_utf8()
    });
    if plain {
        text.to_owned()
    } else {
        crate::audit::escape(text)
    }
}

/// The list file could not be read; its rules do not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListFileError {
    pub(crate) path: PathBuf,
    pub(crate) problem: String,
}

impl fmt::Display for ListFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot read rule list {}: {}; its rules do not apply until it is fixed",
            crate::audit::escape_bytes(self.path.as_os_str().as_encoded_bytes()),
            self.problem
        )
    }
}

/// Trims like the shell version's `sed` (ASCII white space, so a CRLF file
/// works) and drops blank lines and `#` comments. Yields (line number, rule).
pub(crate) fn rule_lines(text: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    text.split(|&b| b == b'\n')
        .enumerate()
        .filter_map(|(i, line)| {
            let t = line.trim_ascii();
            (!t.is_empty() && t[0] != b'#').then_some((i + 1, t))
        })
}

fn make_rule(bytes: &[u8], source: Source) -> Rule {
    match std::str::from_utf8(bytes) {
        Ok(text) => Rule {
            text: text.to_owned(),
            translated: ere::translate(text),
            source,
        },
        Err(e) => Rule {
            text: String::from_utf8_lossy(bytes).into_owned(),
            translated: Err(EreError {
                offset: e.valid_up_to(),
                problem: "the rule is not valid UTF-8".into(),
            }),
            source,
        },
    }
}

/// Rules of `ALLOWED_COMMANDS`, in order.
pub(crate) fn env_rules(allowed_commands: &str) -> Vec<Rule> {
    rule_lines(allowed_commands.as_bytes())
        .map(|(line, t)| make_rule(t, Source::Env { line }))
        .collect()
}

/// Rules of the live list file. A missing file is no rules; an unreadable
/// one is an error (and no rules).
pub(crate) fn file_rules(path: &Path) -> Result<Vec<Rule>, ListFileError> {
    let err = |problem: String| ListFileError {
        path: path.to_owned(),
        problem,
    };
    // Non-blocking, so a FIFO planted as the list cannot hang a session.
    // The operator may point the path at a symlink (a mounted ConfigMap).
    let file = match crate::checked::open_regular(path, true) {
        Ok(f) => f,
        Err(OpenError::Open(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Vec::new())
        }
        Err(OpenError::Open(e) | OpenError::Stat(e)) => return Err(err(e.to_string())),
        Err(OpenError::NotRegular(_) | OpenError::Symlink) => {
            return Err(err("not a regular file".into()))
        }
    };
    let mut text = Vec::new();
    file.take(MAX_LIST_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| err(e.to_string()))?;
    if text.len() as u64 > MAX_LIST_FILE {
        return Err(err(format!("larger than {MAX_LIST_FILE} bytes")));
    }
    Ok(rule_lines(&text)
        .map(|(line, t)| {
            make_rule(
                t,
                Source::File {
                    path: path.to_owned(),
                    line,
                },
            )
        })
        .collect())
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DenyReason {
    ControlCharacter,
    TooLong,
    Empty,
    NoRuleMatches,
    BadPrefix,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DenyReason::ControlCharacter => "control character in the request",
            DenyReason::TooLong => "request longer than 64 KiB",
            DenyReason::Empty => "empty request",
            DenyReason::NoRuleMatches => "no rule matches",
            DenyReason::BadPrefix => "COMMAND_PREFIX cannot be split into words",
        })
    }
}

/// Checks that do not depend on the rules.
pub(crate) fn precheck(request: &str, has_prefix: bool) -> Result<(), DenyReason> {
    if request.len() > MAX_REQUEST {
        return Err(DenyReason::TooLong);
    }
    if request.chars().any(|c| c.is_control() && c != '\t') {
        return Err(DenyReason::ControlCharacter);
    }
    if !has_prefix && request.split([' ', '\t']).all(str::is_empty) {
        return Err(DenyReason::Empty);
    }
    Ok(())
}

/// Index of the first rule that matches the whole request, if any. Rules
/// refused at translation are skipped. Cheap literal checks settle most
/// rules; the rest are compiled together as one `RegexSet`, and only those
/// that can still win (before the first literal hit) are compiled.
pub(crate) fn first_match(rules: &[Rule], request: &str) -> Option<usize> {
    let mut candidates: Vec<(usize, &Translated)> = Vec::new();
    let mut literal_hit = None;
    for (i, rule) in rules.iter().enumerate() {
        let Ok(t) = &rule.translated else { continue };
        match &t.shortcut {
            Shortcut::Exact(words) => {
                if words.iter().any(|w| w == request) {
                    literal_hit = Some(i);
                    break;
                }
            }
            Shortcut::Prefixes(p) => {
                if p.iter().any(|p| request.starts_with(p.as_str())) {
                    candidates.push((i, t));
                }
            }
            Shortcut::None => candidates.push((i, t)),
        }
    }
    match candidates.len() {
        0 => literal_hit,
        1 => {
            let (i, t) = candidates[0];
            compile(&t.pattern())
                .is_some_and(|r| r.is_match(request))
                .then_some(i)
                .or(literal_hit)
        }
        _ => {
            let patterns: Vec<String> = candidates.iter().map(|c| c.1.pattern()).collect();
            let set = regex::RegexSetBuilder::new(&patterns)
                .size_limit(SIZE_LIMIT)
                .dfa_size_limit(DFA_SIZE_LIMIT)
                .build();
            match set {
                Ok(set) => set
                    .matches(request)
                    .iter()
                    .next()
                    .map(|k| candidates[k].0)
                    .or(literal_hit),
                // One rule too large for the set: fall back to one by one.
                Err(_) => candidates
                    .iter()
                    .zip(&patterns)
                    .find(|(_, p)| compile(p).is_some_and(|r| r.is_match(request)))
                    .map(|(c, _)| c.0)
                    .or(literal_hit),
            }
        }
    }
}

const SIZE_LIMIT: usize = 64 << 20;
const DFA_SIZE_LIMIT: usize = 8 << 20;

fn compile(pattern: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(pattern)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_trimmed_and_comments_dropped() {
        let got: Vec<_> = rule_lines(b"  ls -l \r\n\n# c\n   # c2\n\tuptime\t\r\n")
            .map(|(n, t)| (n, String::from_utf8_lossy(t).into_owned()))
            .collect();
        assert_eq!(
            got,
            vec![(1, "ls -l".to_string()), (5, "uptime".to_string())]
        );
    }

    #[test]
    fn first_match_wins_and_order_holds() {
        let rules = env_rules("b.*\nls\nl.\n");
        assert_eq!(first_match(&rules, "ls"), Some(1));
        assert_eq!(first_match(&rules, "lx"), Some(2));
        assert_eq!(first_match(&rules, "bx"), Some(0));
        assert_eq!(first_match(&rules, "x"), None);
        let rules = env_rules("l.\nls\n");
        assert_eq!(first_match(&rules, "ls"), Some(0));
    }

    #[test]
    fn bad_rules_are_skipped() {
        let rules = env_rules("\\1\nok");
        assert!(rules[0].translated.is_err());
        assert_eq!(first_match(&rules, "ok"), Some(1));
        assert_eq!(
            RuleError {
                rule: &rules[0],
                error: rules[0].translated.as_ref().unwrap_err()
            }
            .to_string(),
            "rule \"\\1\" (ALLOWED_COMMANDS line 1) refused at byte 0: back-reference `\\1` is not supported"
        );
    }

    #[test]
    fn prechecks() {
        assert_eq!(precheck("a\nb", true), Err(DenyReason::ControlCharacter));
        assert_eq!(precheck("a\rb", true), Err(DenyReason::ControlCharacter));
        assert_eq!(
            precheck("a\u{85}b", true),
            Err(DenyReason::ControlCharacter)
        );
        assert_eq!(precheck("a\tb", false), Ok(()));
        assert_eq!(precheck(" \t ", false), Err(DenyReason::Empty));
        assert_eq!(precheck("", true), Ok(()));
        assert_eq!(
            precheck(&"a".repeat(MAX_REQUEST + 1), true),
            Err(DenyReason::TooLong)
        );
        assert_eq!(precheck(&"a".repeat(MAX_REQUEST), true), Ok(()));
    }
}

//! Where rules come from (`ALLOWED_COMMANDS`, the live list file) and the
//! allow/deny decision over them. It never executes anything; a rule that
//! cannot be translated exactly is reported and never used.

use super::ere::{self, EreError, Shortcut, Translated};
use crate::checked::OpenError;
use std::borrow::Cow;
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

/// What a rule's cheap check says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefilter {
    /// The rule matches: it is one of the rule's exact strings.
    Hit,
    /// The rule may match: its pattern decides.
    Candidate,
    /// The rule cannot match (or cannot be used at all).
    Miss,
}

impl Prefilter {
    /// The verdict of a shortcut given as its kind and its literals.
    pub(crate) fn of<'w>(
        exact: bool,
        mut literals: impl Iterator<Item = &'w [u8]>,
        request: &str,
    ) -> Prefilter {
        let r = request.as_bytes();
        if exact {
            if literals.any(|w| w == r) {
                Prefilter::Hit
            } else {
                Prefilter::Miss
            }
        } else if literals.any(|p| r.starts_with(p)) {
            Prefilter::Candidate
        } else {
            Prefilter::Miss
        }
    }
}

/// What the decision needs of a rule, whether it was translated for this
/// request or at boot (see `snapshot`).
pub(crate) trait Decidable {
    fn prefilter(&self, request: &str) -> Prefilter;
    /// The whole-line `regex` pattern; asked only of candidates.
    fn pattern(&self) -> Cow<'_, str>;
}

impl Decidable for Rule {
    fn prefilter(&self, request: &str) -> Prefilter {
        match &self.translated {
            Err(_) => Prefilter::Miss,
            Ok(t) => match &t.shortcut {
                Shortcut::Exact(w) => Prefilter::of(true, w.iter().map(|w| w.as_bytes()), request),
                Shortcut::Prefixes(p) => {
                    Prefilter::of(false, p.iter().map(|p| p.as_bytes()), request)
                }
                Shortcut::None => Prefilter::Candidate,
            },
        }
    }

    fn pattern(&self) -> Cow<'_, str> {
        match &self.translated {
            Ok(t) => Cow::Owned(t.pattern()),
            // Never a candidate.
            Err(_) => Cow::Borrowed("[^\\s\\S]"),
        }
    }
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

/// A string every request `rule` can match starts with, read off the rule
/// text without parsing it: its leading run of ordinary bytes (no ERE
/// metacharacter, no control character), less its last character when a
/// quantifier follows it; empty when the rule may be an alternation at
/// the top level (an alternative could start with anything). Sound for any
/// text, usable rule or not: a prefix of a required prefix is required too.
pub(crate) fn literal_start(rule: &[u8]) -> &[u8] {
    if may_alternate_at_top(rule) {
        return &[];
    }
    let ordinary =
        |b: &u8| *b >= 0x80 || (!b.is_ascii_control() && !ere::META.contains(&char::from(*b)));
    let run = rule.iter().take_while(|b| ordinary(b)).count();
    match rule.get(run) {
        // The quantifier makes the whole last character optional, all of
        // its bytes.
        Some(b'*' | b'+' | b'?' | b'{') => {
            let mut last = run.saturating_sub(1);
            while last > 0 && rule[last] & 0xc0 == 0x80 {
                last -= 1;
            }
            &rule[..last]
        }
        _ => &rule[..run],
    }
}

/// Whether `rule` has a `|` outside every group and bracket expression, as
/// ERE reads it (a backslash escapes one byte outside brackets; inside them a
/// backslash is literal, `]` first is literal, `[:`, `[=`, `[.` open a
/// class); `true` too whenever the text is not clear (an unclosed bracket,
/// an unmatched `)`).
fn may_alternate_at_top(rule: &[u8]) -> bool {
    let mut depth = 0usize;
    let mut i = 0;
    while i < rule.len() {
        match rule[i] {
            b'\\' => i += 1,
            b'[' => {
                let mut j = i + 1;
                if rule.get(j) == Some(&b'^') {
                    j += 1;
                }
                if rule.get(j) == Some(&b']') {
                    j += 1;
                }
                loop {
                    match rule.get(j) {
                        None => return true,
                        Some(b']') => break,
                        Some(b'[') if matches!(rule.get(j + 1), Some(b':' | b'=' | b'.')) => {
                            let end = [rule[j + 1], b']'];
                            match rule[j + 2..].windows(2).position(|w| w == end) {
                                Some(k) => j += 2 + k + 2,
                                None => return true,
                            }
                        }
                        Some(_) => j += 1,
                    }
                }
                i = j;
            }
            b'(' => depth += 1,
            b')' if depth == 0 => return true,
            b')' => depth -= 1,
            b'|' if depth == 0 => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// Rules of the live list file. A missing file is no rules; an unreadable
/// one is an error (and no rules). With a request, a line whose literal
/// start the request lacks cannot match it and is left out unparsed (so
/// it is neither translated nor reported for this request; `--list`
/// reads every line).
pub(crate) fn file_rules(path: &Path, request: Option<&str>) -> Result<Vec<Rule>, ListFileError> {
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
        // A line that is not UTF-8 is always kept: it is bad whatever the
        // request, and reported.
        .filter(|(_, t)| {
            request.is_none_or(|r| {
                r.as_bytes().starts_with(literal_start(t)) || std::str::from_utf8(t).is_err()
            })
        })
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
pub(crate) fn first_match<R: Decidable>(rules: &[R], request: &str) -> Option<usize> {
    let mut candidates: Vec<(usize, &R)> = Vec::new();
    let mut literal_hit = None;
    for (i, rule) in rules.iter().enumerate() {
        match rule.prefilter(request) {
            Prefilter::Hit => {
                literal_hit = Some(i);
                break;
            }
            Prefilter::Candidate => candidates.push((i, rule)),
            Prefilter::Miss => {}
        }
    }
    match candidates.len() {
        0 => literal_hit,
        1 => {
            let (i, r) = candidates[0];
            compile(&r.pattern())
                .is_some_and(|r| r.is_match(request))
                .then_some(i)
                .or(literal_hit)
        }
        _ => {
            let patterns: Vec<Cow<'_, str>> = candidates.iter().map(|c| c.1.pattern()).collect();
            let set = regex::RegexSetBuilder::new(patterns.iter().map(|p| &**p))
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
    fn literal_start_is_what_every_match_starts_with() {
        let cases: &[(&str, &[u8])] = &[
            ("ls -l", b"ls -l"),
            ("svc (start|stop)", b"svc "),
            ("svc (start|stop)|x", b""),
            ("svc [|(]x|y", b""),
            ("svc []|]x", b"svc "),
            ("svc [^]|]x", b"svc "),
            ("svc [[:alpha:]|]x", b"svc "),
            ("svc [[:alpha:]", b""),
            ("svc \\(|x", b""),
            ("svc )|x", b""),
            ("svc [a\\]|x", b""),
            ("docker logs --tail [0-9]+ app", b"docker logs --tail "),
            ("ab*", b"a"),
            ("ab+c", b"a"),
            ("ab?", b"a"),
            ("ab{2}", b"a"),
            ("a.b", b"a"),
            ("a\\.b", b"a"),
            ("^ab", b""),
            ("ab|cd", b""),
            ("x[|]", b"x"),
            ("(ab)", b""),
            ("*a", b""),
            // A quantified multi-byte character goes as a whole.
            ("caf\u{e9}*", b"caf"),
            ("\u{65e5}?", b""),
            ("\u{65e5}\u{e9}{2}", b"\xe6\x97\xa5"),
            ("a\tb", b"a"),
        ];
        for (rule, start) in cases {
            assert_eq!(literal_start(rule.as_bytes()), *start, "{rule:?}");
        }
    }

    #[test]
    fn the_list_file_prefilter_never_changes_a_decision() {
        let dir = std::env::temp_dir().join(format!("bastion-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("list");
        std::fs::write(
            &path,
            "svc (start|stop)\n(a)\\1\nls( -l)?\nl.\nx|ls\necho [a-z]+\nsvc x*\n",
        )
        .unwrap();
        let all = file_rules(&path, None).unwrap();
        for req in [
            "svc start",
            "ls",
            "ls -l",
            "lx",
            "echo hi",
            "svc ",
            "svc xx",
            "zz",
            "",
        ] {
            let some = file_rules(&path, Some(req)).unwrap();
            let line = |rules: &[Rule], i: Option<usize>| i.map(|i| rules[i].source.clone());
            assert_eq!(
                line(&some, first_match(&some, req)),
                line(&all, first_match(&all, req)),
                "{req:?}"
            );
        }
        // Lines that cannot match are not even parsed (the bad one among them).
        let some = file_rules(&path, Some("echo hi")).unwrap();
        let texts: Vec<&str> = some.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(texts, vec!["(a)\\1", "x|ls", "echo [a-z]+"]);
        std::fs::remove_dir_all(&dir).unwrap();
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

//! POSIX extended regular expressions as GNU `grep -E` reads them in
//! `LC_ALL=C.UTF-8`, parsed into a small tree and translated for the `regex`
//! crate. Anything whose exact grep meaning cannot be reproduced is an
//! error; nothing is ever silently reinterpreted.

use super::classes;
use std::fmt;

/// The longest rule accepted (grep has no limit; ours keeps compile time
/// bounded).
pub(crate) const MAX_RULE_LEN: usize = 4096;
/// Largest `{n}` / `{n,m}` bound (grep allows 32767).
pub(crate) const MAX_REPEAT: u32 = 255;
/// Deepest nesting of groups.
const MAX_DEPTH: usize = 64;
/// Bound on the size of the translated automaton, in rough "units" (one per
/// literal, more per class, multiplied by repetition bounds).
const MAX_WEIGHT: u64 = 100_000;

/// Why a rule was rejected, with the byte offset in the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EreError {
    pub(crate) offset: usize,
    pub(crate) problem: String,
}

impl fmt::Display for EreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.problem)
    }
}

/// A parsed ERE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Node {
    Empty,
    Literal(char),
    /// `.`: any character.
    Any,
    /// A bracket expression or `\w`-style class: inclusive code-point ranges.
    Class {
        ranges: Vec<(u32, u32)>,
        negated: bool,
    },
    Start,
    End,
    Group(Box<Node>),
    Concat(Vec<Node>),
    Alt(Vec<Node>),
    Repeat {
        node: Box<Node>,
        min: u32,
        max: Option<u32>,
    },
}

/// What a whole-line match can be decided by without running a regex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shortcut {
    /// The rule matches exactly one of these strings and nothing else.
    Exact(Vec<String>),
    /// Any request the rule matches starts with one of these (non-empty)
    /// strings.
    Prefixes(Vec<String>),
    /// No cheap necessary condition.
    None,
}

/// A rule checked and ready for the `regex` crate. The pattern text is
/// built only when a request needs it (most rules are settled by their
/// shortcut).
#[derive(Debug, Clone)]
pub(crate) struct Translated {
    node: Node,
    pub(crate) shortcut: Shortcut,
}

impl Translated {
    /// `^(?:...)$` around the translation.
    pub(crate) fn pattern(&self) -> String {
        let mut pattern = String::with_capacity(64);
        pattern.push_str("^(?:");
        emit(&self.node, &mut pattern);
        pattern.push_str(")$");
        pattern
    }
}

/// Characters that make a rule more than a plain string.
pub(crate) const META: &[char] = &[
    '.', '[', ']', '(', ')', '*', '+', '?', '{', '}', '|', '^', '$', '\\',
];

/// Parses `rule` as GNU grep's ERE and translates it.
pub(crate) fn translate(rule: &str) -> Result<Translated, EreError> {
    // Fast path for the common plain-string rule: nothing to parse.
    if rule.len() <= MAX_RULE_LEN
        && !rule.contains(META)
        && !rule.chars().any(|c| c.is_control() && c != '\t')
    {
        return Ok(Translated {
            node: Node::Concat(rule.chars().map(Node::Literal).collect()),
            shortcut: Shortcut::Exact(vec![rule.to_owned()]),
        });
    }
    let node = parse(rule)?;
    if weight(&node) > MAX_WEIGHT {
        return Err(EreError {
            offset: 0,
            problem: "expression too large (repetition bounds multiply out too far)".into(),
        });
    }
    let shortcut = shortcut(&node);
    Ok(Translated { node, shortcut })
}

/// Parses `rule` into a tree, or says exactly why it is refused.
pub(crate) fn parse(rule: &str) -> Result<Node, EreError> {
    if rule.len() > MAX_RULE_LEN {
        return Err(EreError {
            offset: MAX_RULE_LEN,
            problem: format!("rule longer than {MAX_RULE_LEN} bytes"),
        });
    }
    if let Some((i, c)) = rule
        .char_indices()
        .find(|&(_, c)| c.is_control() && c != '\t')
    {
        return Err(EreError {
            offset: i,
            problem: format!("control character U+{:04X} in the rule", c as u32),
        });
    }
    let mut p = Parser { s: rule, pos: 0 };
    let node = p.alternation(0)?;
    match p.peek() {
        None => Ok(node),
        // `alternation` only stops early at `)`.
        Some(_) => Err(p.err(
            "unmatched `)` (grep -x would read it against its own wrapper); write `\\)` for a literal parenthesis",
        )),
    }
}

struct Parser<'a> {
    s: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn peek2(&self) -> Option<char> {
        let mut it = self.s[self.pos..].chars();
        it.next();
        it.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn err(&self, problem: impl Into<String>) -> EreError {
        EreError {
            offset: self.pos,
            problem: problem.into(),
        }
    }

    fn err_at(&self, offset: usize, problem: impl Into<String>) -> EreError {
        EreError {
            offset,
            problem: problem.into(),
        }
    }

    fn alternation(&mut self, depth: usize) -> Result<Node, EreError> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("groups nested deeper than {MAX_DEPTH}")));
        }
        let first = self.concat(depth)?;
        if self.peek() != Some('|') {
            return Ok(first);
        }
        let mut branches = vec![first];
        while self.peek() == Some('|') {
            self.bump();
            branches.push(self.concat(depth)?);
        }
        Ok(Node::Alt(branches))
    }

    fn concat(&mut self, depth: usize) -> Result<Node, EreError> {
        let mut items: Vec<Node> = Vec::with_capacity(16);
        loop {
            let start = self.pos;
            let Some(c) = self.peek() else { break };
            match c {
                '|' => break,
                ')' if depth > 0 => break,
                ')' => {
                    return Err(self.err(
                        "unmatched `)` (grep -x would read it against its own wrapper); write `\\)` for a literal parenthesis",
                    ))
                }
                '*' | '+' | '?' | '{' => {
                    let (min, max) = if c == '{' {
                        self.interval()?
                    } else {
                        self.bump();
                        match c {
                            '*' => (0, None),
                            '+' => (1, None),
                            _ => (0, Some(1)),
                        }
                    };
                    let shown = &self.s[start..self.pos];
                    match items.pop() {
                        None => {
                            return Err(self.err_at(
                                start,
                                format!("`{shown}` at the start of an expression repeats nothing (grep warns and guesses); write `\\{}` for a literal", &shown[..1]),
                            ))
                        }
                        Some(Node::Start | Node::End) => {
                            return Err(self.err_at(
                                start,
                                format!("`{shown}` after an anchor (`^` or `$`) repeats nothing; write `\\{}` for a literal", &shown[..1]),
                            ))
                        }
                        Some(prev) => items.push(Node::Repeat {
                            node: Box::new(prev),
                            min,
                            max,
                        }),
                    }
                }
                '(' => {
                    self.bump();
                    let inner = self.alternation(depth + 1)?;
                    if self.bump() != Some(')') {
                        return Err(self.err_at(start, "unmatched `(`"));
                    }
                    items.push(Node::Group(Box::new(inner)));
                }
                '[' => {
                    self.bump();
                    items.push(self.bracket(start)?);
                }
                '.' => {
                    self.bump();
                    items.push(Node::Any);
                }
                '^' => {
                    self.bump();
                    items.push(Node::Start);
                }
                '$' => {
                    self.bump();
                    items.push(Node::End);
                }
                '\\' => {
                    self.bump();
                    items.push(self.escape(start)?);
                }
                c => {
                    self.bump();
                    items.push(Node::Literal(c));
                }
            }
        }
        Ok(match items.len() {
            0 => Node::Empty,
            1 => items.pop().unwrap_or(Node::Empty),
            _ => Node::Concat(items),
        })
    }

    /// `{m}`, `{m,}`, `{,n}`, `{,}`, `{m,n}`. grep reads a malformed interval
    /// as a literal `{`; we refuse it instead, so `\{` is the only literal.
    fn interval(&mut self) -> Result<(u32, Option<u32>), EreError> {
        let start = self.pos;
        self.bump(); // {
        let rest = &self.s[self.pos..];
        let Some(close) = rest.find('}') else {
            return Err(self.err_at(
                start,
                "`{` does not start a valid interval; write `\\{` for a literal brace",
            ));
        };
        let body = &rest[..close];
        let bad = || EreError {
            offset: start,
            problem: format!(
                "`{{{body}}}` is not a valid interval; write `\\{{` for a literal brace"
            ),
        };
        let num = |t: &str| -> Result<Option<u32>, EreError> {
            if t.is_empty() {
                return Ok(None);
            }
            if !t.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            // Saturate: anything beyond MAX_REPEAT is refused below.
            Ok(Some(t.parse::<u32>().unwrap_or(u32::MAX)))
        };
        let (min, max) = match body.split_once(',') {
            None => {
                let n = num(body)?.ok_or_else(bad)?;
                (n, Some(n))
            }
            Some((a, b)) => (num(a)?.unwrap_or(0), num(b)?),
        };
        if let Some(m) = max {
            if min > m {
                return Err(self.err_at(
                    start,
                    format!(
                        "interval `{{{body}}}` has its minimum above its maximum (grep refuses it)"
                    ),
                ));
            }
        }
        if min > MAX_REPEAT || max.is_some_and(|m| m > MAX_REPEAT) {
            return Err(self.err_at(
                start,
                format!("interval `{{{body}}}` is above the broker's limit of {MAX_REPEAT}"),
            ));
        }
        self.pos += close + 1;
        Ok((min, max))
    }

    fn escape(&mut self, start: usize) -> Result<Node, EreError> {
        let Some(c) = self.bump() else {
            return Err(self.err_at(start, "trailing backslash (grep refuses it)"));
        };
        let class = |ranges: Vec<(u32, u32)>, negated| Node::Class { ranges, negated };
        Ok(match c {
            '\\' | '.' | '*' | '[' | ']' | '^' | '$' | '+' | '?' | '{' | '}' | '(' | ')' | '|' => {
                Node::Literal(c)
            }
            'w' | 'W' => class(word_ranges(), c == 'W'),
            's' | 'S' => class(classes::SPACE.to_vec(), c == 'S'),
            '1'..='9' => {
                return Err(self.err_at(start, format!("back-reference `\\{c}` is not supported")))
            }
            'b' | 'B' | '<' | '>' | '`' | '\'' => {
                return Err(self.err_at(
                    start,
                    format!("`\\{c}` (a word or buffer boundary) is not supported: its grep meaning cannot be reproduced exactly"),
                ))
            }
            c => {
                return Err(self.err_at(
                    start,
                    format!("`\\{c}` is not an ERE escape (GNU grep warns and reads a plain `{c}`); write `{c}` or a bracket expression"),
                ))
            }
        })
    }

    /// After `[`: a POSIX bracket expression. `]` first is literal, a
    /// backslash is literal, `-` is literal first or last, ranges are in
    /// code-point order between ASCII end points.
    fn bracket(&mut self, start: usize) -> Result<Node, EreError> {
        let unmatched = |p: &Self| p.err_at(start, "unmatched `[` (grep refuses it)");
        let mut negated = false;
        if self.peek() == Some('^') {
            self.bump();
            negated = true;
        }
        let mut ranges: Vec<(u32, u32)> = Vec::new();
        let mut first = true;
        // grep refuses `[:alpha:]` written without the outer brackets: a
        // bracket of single characters that starts and ends with `:` (bit 1:
        // starts with `:`, 2: last element is `:`, 4: some other character,
        // 8: a class or a range, which lifts the refusal).
        let mut colon_state = u8::from(self.peek() == Some(':'));
        loop {
            let elem_start = self.pos;
            let Some(c) = self.bump() else {
                return Err(unmatched(self));
            };
            if c == ']' && !first {
                break;
            }
            first = false;
            colon_state &= !2;
            // One element: a class, or a single character (maybe a range start).
            let lo = if c == '[' && matches!(self.peek(), Some(':' | '.' | '=')) {
                let kind = self.bump().unwrap_or(':');
                if kind != ':' {
                    return Err(self.err_at(
                        elem_start,
                        format!(
                            "`[{kind}` (collating symbol or equivalence class) is not supported"
                        ),
                    ));
                }
                let rest = &self.s[self.pos..];
                let Some(end) = rest.find(":]") else {
                    return Err(unmatched(self));
                };
                let name = &rest[..end];
                let Some(table) = classes::by_name(name) else {
                    return Err(self.err_at(
                        elem_start,
                        format!("`[:{name}:]` is not a character class name (grep refuses it)"),
                    ));
                };
                self.pos += end + 2;
                ranges.extend_from_slice(table);
                colon_state |= 8;
                if self.peek() == Some('-') && !matches!(self.peek2(), Some(']') | None) {
                    return Err(
                        self.err("a character class cannot start a range (grep refuses it)")
                    );
                }
                continue;
            } else {
                c
            };
            if self.peek() == Some('-') && !matches!(self.peek2(), Some(']') | None) {
                self.bump(); // -
                let end_at = self.pos;
                let hi = self.bump().ok_or_else(|| unmatched(self))?;
                if hi == '[' && matches!(self.peek(), Some(':' | '.' | '=')) {
                    return Err(self.err_at(
                        end_at,
                        "a range cannot end in a class, collating symbol or equivalence class",
                    ));
                }
                if !lo.is_ascii() || !hi.is_ascii() {
                    return Err(self.err_at(
                        elem_start,
                        format!("range `{lo}-{hi}` has a non-ASCII end point (grep refuses it in C.UTF-8)"),
                    ));
                }
                if lo > hi {
                    return Err(self.err_at(
                        elem_start,
                        format!("range `{lo}-{hi}` is reversed (grep refuses it)"),
                    ));
                }
                ranges.push((lo as u32, hi as u32));
                colon_state |= 8;
                if self.peek() == Some('-') && !matches!(self.peek2(), Some(']') | None) {
                    return Err(self.err(
                        "`-` right after a range is ambiguous (grep refuses it); put `-` first or last",
                    ));
                }
            } else {
                ranges.push((lo as u32, lo as u32));
                colon_state |= if lo == ':' { 2 } else { 4 };
            }
        }
        if colon_state == 7 {
            return Err(self.err_at(
                start,
                "character class syntax is [[:space:]], not [:space:] (grep refuses it)",
            ));
        }
        Ok(Node::Class { ranges, negated })
    }
}

/// `\w`: `[_[:alnum:]]`, as grep documents it.
fn word_ranges() -> Vec<(u32, u32)> {
    let mut r = classes::ALNUM.to_vec();
    r.push(('_' as u32, '_' as u32));
    r
}

fn weight(node: &Node) -> u64 {
    match node {
        Node::Empty | Node::Start | Node::End => 1,
        Node::Literal(_) => 1,
        Node::Any => 8,
        Node::Class { ranges, .. } => 2 + ranges.len() as u64,
        Node::Group(n) => weight(n),
        Node::Concat(v) | Node::Alt(v) => v.iter().map(weight).fold(0u64, u64::saturating_add),
        Node::Repeat { node, min, max } => {
            let times = u64::from(max.unwrap_or(*min).max(*min).max(1));
            weight(node).saturating_mul(times)
        }
    }
}

fn emit(node: &Node, out: &mut String) {
    match node {
        Node::Empty => out.push_str("(?:)"),
        Node::Literal(c) => {
            let mut buf = [0u8; 4];
            regex_syntax::escape_into(c.encode_utf8(&mut buf), out);
        }
        Node::Any => out.push_str("(?s:.)"),
        Node::Class { ranges, negated } => {
            out.push('[');
            if *negated {
                out.push('^');
            }
            for &(lo, hi) in ranges {
                use std::fmt::Write as _;
                if lo == hi {
                    let _ = write!(out, "\\x{{{lo:x}}}");
                } else {
                    let _ = write!(out, "\\x{{{lo:x}}}-\\x{{{hi:x}}}");
                }
            }
            out.push(']');
        }
        Node::Start => out.push('^'),
        Node::End => out.push('$'),
        Node::Group(n) => {
            out.push_str("(?:");
            emit(n, out);
            out.push(')');
        }
        Node::Concat(v) => v.iter().for_each(|n| emit(n, out)),
        Node::Alt(v) => {
            out.push_str("(?:");
            for (i, n) in v.iter().enumerate() {
                if i > 0 {
                    out.push('|');
                }
                emit(n, out);
            }
            out.push(')');
        }
        Node::Repeat { node, min, max } => {
            out.push_str("(?:");
            emit(node, out);
            out.push(')');
            match (min, max) {
                (0, None) => out.push('*'),
                (1, None) => out.push('+'),
                (0, Some(1)) => out.push('?'),
                (m, None) => out.push_str(&format!("{{{m},}}")),
                (m, Some(n)) if m == n => out.push_str(&format!("{{{m}}}")),
                (m, Some(n)) => out.push_str(&format!("{{{m},{n}}}")),
            }
        }
    }
}

/// The literal text a node starts with, and whether it is all the node
/// matches (a plain string).
fn literal_prefix(node: &Node, acc: &mut String) -> bool {
    match node {
        Node::Empty => true,
        Node::Literal(c) => {
            acc.push(*c);
            true
        }
        Node::Group(n) => literal_prefix(n, acc),
        Node::Concat(v) => v.iter().all(|n| literal_prefix(n, acc)),
        _ => false,
    }
}

fn shortcut(node: &Node) -> Shortcut {
    // Leading `^` and trailing `$` of the whole rule are redundant under
    // whole-line matching; anywhere else they change the meaning.
    let stripped: &[Node] = match node {
        Node::Concat(v) => {
            let mut s: &[Node] = v;
            if let [Node::Start, rest @ ..] = s {
                s = rest;
            }
            if let [rest @ .., Node::End] = s {
                s = rest;
            }
            s
        }
        Node::Start | Node::End => &[],
        n => std::slice::from_ref(n),
    };
    let mut exact = Vec::new();
    let mut prefixes = Vec::new();
    let mut all_exact = true;
    let mut add = |nodes: &[Node]| {
        let mut acc = String::new();
        if nodes.iter().all(|n| literal_prefix(n, &mut acc)) {
            exact.push(acc.clone());
        } else {
            all_exact = false;
        }
        prefixes.push(acc);
    };
    match stripped {
        [Node::Alt(alts)] => alts.iter().for_each(|a| add(std::slice::from_ref(a))),
        s => add(s),
    }
    if all_exact {
        Shortcut::Exact(exact)
    } else if prefixes.iter().all(|p| !p.is_empty()) {
        Shortcut::Prefixes(prefixes)
    } else {
        Shortcut::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(rule: &str) -> Translated {
        translate(rule).unwrap_or_else(|e| panic!("{rule:?} rejected: {e}"))
    }

    fn is_match(rule: &str, req: &str) -> bool {
        regex::Regex::new(&ok(rule).pattern())
            .unwrap()
            .is_match(req)
    }

    #[test]
    fn brackets_follow_posix() {
        assert!(is_match("[]a]", "]"));
        assert!(is_match("[^]a]", "b"));
        assert!(!is_match("[^]a]", "]"));
        assert!(is_match("[a-]", "-"));
        assert!(is_match("[a\\]", "\\"));
        assert!(is_match("[]-a]", "^"));
        assert!(is_match("[--/]", "."));
        assert!(is_match("[[]", "["));
        assert!(is_match("[\\w]", "w"));
        assert!(!is_match("[\\w]", "x"));
        assert!(is_match("[[:alpha:]]", "é"));
        assert!(!is_match("[^[:alpha:]]", "é"));
    }

    #[test]
    fn grep_refusals_are_refused() {
        for r in [
            "(",
            "a)(b",
            "[a",
            "[]",
            "[^]",
            "\\",
            "a\\",
            "[[:foo:]]",
            "[[:a]",
            "[z-a]",
            "[a-z-9]",
            "[[:alpha:]-z]",
            "a{2,1}",
            "[a-é]",
            "(+)",
            "\\1",
            "(a)\\1",
            "[:alpha:]",
            "[^:a:]",
            "x[:graph:]É]",
        ] {
            assert!(translate(r).is_err(), "{r:?} accepted");
        }
    }

    #[test]
    fn unexact_constructs_are_refused() {
        for r in [
            "*a", "a|*b", "(*a)", "^*", "x^*", "a$*", "{1}", "a{1", "a{x}", "a{", "\\<a", "\\b",
            "\\d", "\\-", "\\/", "[[=a=]]", "[[.-.]]", "a)", ")", "a|b)c", "a{256}", "\\é",
        ] {
            assert!(translate(r).is_err(), "{r:?} accepted");
        }
    }

    #[test]
    fn wrapping_keeps_alternation_whole() {
        assert!(is_match("a|b", "b"));
        assert!(!is_match("a|b", "ab"));
        assert!(is_match("^a|b$", "b"));
        assert!(is_match("a||b", ""));
        assert!(is_match("()", ""));
        assert!(!is_match("a^b", "a^b"));
        assert!(!is_match("a$b", "a$b"));
    }

    #[test]
    fn repetition_stacks_like_grep() {
        assert!(is_match("a**", "aaa"));
        assert!(is_match("a+?", ""));
        assert!(is_match("a{1,2}{3}", "aaaa"));
        assert!(is_match("a{,3}", "aaa"));
        assert!(is_match("a{,}", "aaaa"));
        assert!(is_match("a{0}", ""));
        assert!(is_match("(a|)+", "aa"));
    }

    #[test]
    fn shortcuts() {
        assert_eq!(
            ok("^ls -l$").shortcut,
            Shortcut::Exact(vec!["ls -l".into()])
        );
        assert_eq!(
            ok("a|(b)c").shortcut,
            Shortcut::Exact(vec!["a".into(), "bc".into()])
        );
        assert_eq!(
            ok("ls( -l)?").shortcut,
            Shortcut::Prefixes(vec!["ls".into()])
        );
        assert_eq!(ok("a^b").shortcut, Shortcut::Prefixes(vec!["a".into()]));
        assert_eq!(ok(".*").shortcut, Shortcut::None);
        assert_eq!(ok("a|.").shortcut, Shortcut::None);
    }
}

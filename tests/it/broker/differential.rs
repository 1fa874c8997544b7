//! The broker's rule matching against the oracle: real GNU `grep -Ex` in
//! `LC_ALL=C.UTF-8` (and busybox `grep`, for information), over seeded
//! generated (rule, request) pairs. Pass: nothing we allow is refused by
//! grep, every rule grep refuses we refuse, and on every rule we accept
//! we agree with grep on every request.

use crate::harness::{bin, clean_cmd, output};
use bastion::broker::probe;
use std::collections::HashSet;
use std::io::Write as _;
use std::process::{Command, Stdio};

/// Deterministic xorshift64*: same seed, same cases, on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len())]
    }
}

/// Characters requests are made of: ERE metacharacters, blanks, and
/// multi-byte characters on both sides of glibc's class boundaries.
const ALPHABET: &[char] = &[
    'a',
    'b',
    'c',
    'x',
    'A',
    'Z',
    '0',
    '1',
    '9',
    '-',
    '_',
    ']',
    '[',
    '\\',
    '^',
    '$',
    '.',
    '*',
    '(',
    ')',
    '{',
    '}',
    '|',
    '+',
    '?',
    ' ',
    '\t',
    ':',
    '/',
    '=',
    ',',
    '@',
    '"',
    '\'',
    'é',
    'É',
    'ü',
    'ж',
    '日',
    'ª',
    '«',
    '٣',
    '\u{2000}',
    '\u{3000}',
    '\u{a0}',
    '\u{1F600}',
    '~',
];

/// A generated rule piece that knows how to produce text it should match.
enum Gen {
    Text(String, String), // rule text, a matching sample
    Bracket(String, Vec<char>),
    Any,
    Group(Box<Gen>),
    Alt(Vec<Gen>),
    Concat(Vec<Gen>),
    Rep(Box<Gen>, String, usize, usize),
}

impl Gen {
    fn text(&self, out: &mut String) {
        match self {
            Gen::Text(t, _) | Gen::Bracket(t, _) => out.push_str(t),
            Gen::Any => out.push('.'),
            Gen::Group(g) => {
                out.push('(');
                g.text(out);
                out.push(')');
            }
            Gen::Alt(v) => {
                for (i, g) in v.iter().enumerate() {
                    if i > 0 {
                        out.push('|');
                    }
                    g.text(out);
                }
            }
            Gen::Concat(v) => v.iter().for_each(|g| g.text(out)),
            Gen::Rep(g, q, _, _) => {
                g.text(out);
                out.push_str(q);
            }
        }
    }

    fn sample(&self, rng: &mut Rng, out: &mut String) {
        match self {
            Gen::Text(_, s) => out.push_str(s),
            Gen::Bracket(_, members) => {
                if !members.is_empty() {
                    out.push(rng.pick(members));
                } else {
                    out.push(rng.pick(ALPHABET));
                }
            }
            Gen::Any => out.push(rng.pick(ALPHABET)),
            Gen::Group(g) => g.sample(rng, out),
            Gen::Alt(v) => v[rng.below(v.len())].sample(rng, out),
            Gen::Concat(v) => v.iter().for_each(|g| g.sample(rng, out)),
            Gen::Rep(g, _, min, max) => {
                let n = *min + rng.below(max - min + 1);
                for _ in 0..n {
                    g.sample(rng, out);
                }
            }
        }
    }
}

const CLASSES: &[&str] = &[
    "alpha", "digit", "alnum", "upper", "lower", "space", "blank", "punct", "print", "graph",
    "cntrl", "xdigit",
];

fn bracket(rng: &mut Rng) -> Gen {
    // Hand-picked edge cases first, then random constructions.
    const FIXED: &[(&str, &str)] = &[
        ("[]a]", "]a"),
        ("[^]a]", "b-"),
        ("[a-]", "a-"),
        ("[-a]", "-a"),
        ("[a\\]", "a\\"),
        ("[]-a]", "]^_`a"),
        ("[--/]", "-./"),
        ("[[]", "["),
        ("[\\w]", "\\w"),
        ("[a-z-]", "aq-"),
        ("[%--]", "%+-"),
        ("[[:alpha:]-]", "aé-"),
        ("[^[:alpha:]]", "1 -"),
        ("[[:alpha:][:digit:]]", "a1é"),
        ("[^[:space:]]", "ab"),
        ("[]", ""),
        ("[^]", ""),
        ("[a", ""),
        ("[[:foo:]]", ""),
        ("[[:alpha:]", ""),
        ("[[=a=]]", "a"),
        ("[[.-.]]", "-"),
        ("[z-a]", ""),
        ("[a-é]", ""),
        ("[a-z-9]", ""),
        ("[[:alpha:]-z]", ""),
        ("[é日]", "é日"),
        ("[ -~]", "a ~"),
        ("[^a-z]", "A-"),
        ("[[:]", ""),
        ("[[:a]", ""),
        ("[a-\\]", ""),
    ];
    if rng.chance(50) {
        let (t, m) = rng.pick(FIXED);
        return Gen::Bracket(t.to_string(), m.chars().collect());
    }
    let mut t = String::from("[");
    let negated = rng.chance(25);
    if negated {
        t.push('^');
    }
    let mut members = Vec::new();
    if rng.chance(15) {
        t.push(']');
        members.push(']');
    }
    for _ in 0..1 + rng.below(3) {
        match rng.below(5) {
            0 => {
                let c = rng.pick(CLASSES);
                t.push_str(&format!("[:{c}:]"));
            }
            1 => {
                let a = rng.pick(&['a', '0', ' ', '!', '-', 'A', '[', ']', '\\', 'x']);
                let b = rng.pick(&['z', '9', '~', '/', '-', 'Z', 'c', ']', 'é', '\\']);
                t.push(a);
                t.push('-');
                t.push(b);
                if a <= b {
                    members.push(a);
                    members.push(b);
                }
            }
            _ => {
                let c = rng.pick(ALPHABET);
                if c != '\t' && c != '[' {
                    t.push(c);
                    members.push(c);
                }
            }
        }
    }
    if rng.chance(15) {
        t.push('-');
        members.push('-');
    }
    t.push(']');
    if negated {
        members.clear();
    }
    Gen::Bracket(t, members)
}

fn atom(rng: &mut Rng, depth: usize) -> Gen {
    let t = |s: &str, m: &str| Gen::Text(s.to_string(), m.to_string());
    match rng.below(if depth > 2 { 8 } else { 11 }) {
        0..=2 => {
            let c = rng.pick(&[
                'a', 'b', 'x', '-', ' ', '/', '@', 'é', '日', '1', '=', ',', '}', ']', ':',
            ]);
            Gen::Text(c.to_string(), c.to_string())
        }
        3 => {
            let c = rng.pick(&[
                '.', '*', '[', ']', '(', ')', '{', '}', '|', '+', '?', '^', '$', '\\',
            ]);
            Gen::Text(format!("\\{c}"), c.to_string())
        }
        4 => Gen::Any,
        5 | 6 => bracket(rng),
        7 => match rng.below(12) {
            0 => t("\\w", "é"),
            1 => t("\\W", "-"),
            2 => t("\\s", " "),
            3 => t("\\S", "x"),
            4 => t("^", ""),
            5 => t("$", ""),
            6 => t("\\d", "d"),
            7 => t("\\b", ""),
            8 => t("\\<", ""),
            9 => t("\\1", ""),
            10 => t("\\-", "-"),
            _ => t("\\/", "/"),
        },
        _ => {
            if rng.chance(10) {
                Gen::Group(Box::new(t("", "")))
            } else {
                Gen::Group(Box::new(alternation(rng, depth + 1)))
            }
        }
    }
}

fn quantified(rng: &mut Rng, depth: usize) -> Gen {
    let mut g = atom(rng, depth);
    while rng.chance(if depth == 0 { 30 } else { 20 }) {
        let (q, min, max) = match rng.below(10) {
            0 => ("*".to_string(), 0, 3),
            1 => ("+".to_string(), 1, 3),
            2 => ("?".to_string(), 0, 1),
            3 => {
                let n = rng.below(4);
                (format!("{{{n}}}"), n, n)
            }
            4 => {
                let n = rng.below(3);
                (format!("{{{n},}}"), n, n + 2)
            }
            5 => {
                let m = rng.below(4);
                (format!("{{,{m}}}"), 0, m)
            }
            6 | 7 => {
                let n = rng.below(3);
                let m = n + rng.below(3);
                (format!("{{{n},{m}}}"), n, m)
            }
            8 => (
                rng.pick(&["{", "{x}", "{1", "{2,1}", "{,}"]).to_string(),
                0,
                0,
            ),
            _ => ("{1}{2}".to_string(), 2, 2),
        };
        g = Gen::Rep(Box::new(g), q, min, max);
    }
    g
}

fn concat(rng: &mut Rng, depth: usize) -> Gen {
    let n = rng.below(if depth == 0 { 6 } else { 4 });
    Gen::Concat((0..n).map(|_| quantified(rng, depth)).collect())
}

fn alternation(rng: &mut Rng, depth: usize) -> Gen {
    if rng.chance(25) {
        let n = 2 + rng.below(2);
        Gen::Alt((0..n).map(|_| concat(rng, depth)).collect())
    } else {
        concat(rng, depth)
    }
}

/// One rule and its requests. A few rules get raw syntax damage.
fn case(rng: &mut Rng) -> (String, Vec<String>) {
    let g = alternation(rng, 0);
    let mut rule = String::new();
    g.text(&mut rule);
    if rng.chance(6) {
        let damage = rng.pick(&["*", "+", "?", "(", ")", "\\", "{1}", "|", "[:alpha:]", "a)"]);
        if rng.chance(50) {
            rule.insert_str(0, damage);
        } else {
            rule.push_str(damage);
        }
    }
    let mut reqs = Vec::new();
    for _ in 0..4 {
        let mut s = String::new();
        g.sample(rng, &mut s);
        reqs.push(s);
    }
    for i in 0..3 {
        let mut chars: Vec<char> = reqs[i].chars().collect();
        let at = if chars.is_empty() {
            0
        } else {
            rng.below(chars.len() + 1)
        };
        match rng.below(3) {
            0 => chars.insert(at, rng.pick(ALPHABET)),
            1 if at < chars.len() => {
                chars.remove(at);
            }
            _ if at < chars.len() => chars[at] = rng.pick(ALPHABET),
            _ => chars.push(rng.pick(ALPHABET)),
        }
        reqs.push(chars.into_iter().collect());
    }
    for _ in 0..2 {
        let n = rng.below(6);
        reqs.push((0..n).map(|_| rng.pick(ALPHABET)).collect());
    }
    reqs.push(String::new());
    (rule, reqs)
}

/// `grep -nEx -e RULE` over all requests at once: which lines match, or
/// `None` when grep refuses the rule (exit 2). Requests never hold a
/// newline, so line N is request N and the batch answers exactly what N
/// separate `grep -Eqx` runs would. Also returns whether grep warned.
pub fn grep_lines(grep: &[&str], rule: &str, reqs: &[String]) -> (Option<HashSet<usize>>, bool) {
    let mut input = Vec::new();
    for r in reqs {
        assert!(!r.contains('\n'));
        input.extend_from_slice(r.as_bytes());
        input.push(b'\n');
    }
    let mut child = Command::new(grep[0])
        .args(&grep[1..])
        .args(["-nEx", "-e", rule])
        .env_clear()
        .env("LC_ALL", "C.UTF-8")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("grep runs");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    let warned = !out.stderr.is_empty();
    match out.status.code() {
        Some(0) | Some(1) => {}
        Some(2) => return (None, warned),
        other => panic!("grep {rule:?} exited {other:?}"),
    }
    let text = String::from_utf8(out.stdout).expect("grep output is UTF-8");
    let lines = text
        .lines()
        .map(|l| {
            l.split_once(':')
                .expect("-n output")
                .0
                .parse::<usize>()
                .unwrap()
                - 1
        })
        .collect();
    (Some(lines), warned)
}

fn busybox_available() -> bool {
    Command::new("busybox")
        .arg("grep")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[test]
fn differential_against_gnu_grep() {
    let mut rng = Rng::new(0x5eed_b40c_e2e5);
    let mut pairs = 0;
    let mut accepted_rules = 0;
    let mut accepted_pairs = 0;
    let mut gnu_refused = 0;
    let mut matched = 0;
    let mut failures = Vec::new();
    let mut busybox_diffs = Vec::new();
    let busybox = busybox_available();
    for _ in 0..2200 {
        let (rule, reqs) = case(&mut rng);
        pairs += reqs.len();
        let (gnu, warned) = grep_lines(&["grep"], &rule, &reqs);
        let refs: Vec<&str> = reqs.iter().map(String::as_str).collect();
        let ours = probe::matches(&rule, &refs);
        // The boot-compiled path (snapshot written, read back, decided
        // from) must give the same answers, refusals included.
        let compiled = probe::matches_compiled(&rule, &refs);
        if compiled.as_ref().ok() != ours.as_ref().ok() {
            failures.push(format!(
                "rule {rule:?}: compiled path {compiled:?}, parsed path {ours:?}"
            ));
        }
        match (&gnu, &ours) {
            (None, Ok(_)) => failures.push(format!("grep refuses {rule:?}, we accept it")),
            (None, Err(_)) => gnu_refused += 1,
            (Some(_), Err(_)) => {}
            (Some(lines), Ok(ours)) => {
                accepted_rules += 1;
                accepted_pairs += ours.len();
                if warned {
                    failures.push(format!("grep warns about {rule:?}, we accept it"));
                }
                for (i, &we) in ours.iter().enumerate() {
                    let they = lines.contains(&i);
                    matched += usize::from(they);
                    // The live list's prefilter must never drop a rule
                    // from a request it matches.
                    let start = probe::literal_start(&rule);
                    if they && !reqs[i].as_bytes().starts_with(start) {
                        failures.push(format!(
                            "rule {rule:?} matches {:?} (grep) but its literal start is {:?}",
                            reqs[i],
                            String::from_utf8_lossy(start)
                        ));
                    }
                    if we != they {
                        failures.push(format!(
                            "rule {rule:?} request {:?}: grep {they}, broker {we} (pattern {:?})",
                            reqs[i],
                            probe::translate(&rule)
                        ));
                    }
                }
                if busybox {
                    let (bb, _) = grep_lines(&["busybox", "grep"], &rule, &reqs);
                    match bb {
                        None => busybox_diffs.push(format!("busybox refuses {rule:?}")),
                        Some(bb) if &bb != lines => busybox_diffs.push(format!(
                            "busybox differs on {rule:?}: {:?}",
                            bb.symmetric_difference(lines)
                                .map(|&i| &reqs[i])
                                .collect::<Vec<_>>()
                        )),
                        Some(_) => {}
                    }
                }
            }
        }
    }
    eprintln!(
        "{pairs} pairs, {accepted_rules} rules accepted ({accepted_pairs} pairs), \
         {gnu_refused} refused by grep, {matched} matches, {} busybox differences from GNU",
        busybox_diffs.len()
    );
    for d in busybox_diffs.iter().take(15) {
        eprintln!("  (GNU followed) {d}");
    }
    assert!(
        accepted_pairs >= 10_000,
        "only {accepted_pairs} pairs on accepted rules"
    );
    assert!(
        accepted_rules >= 500,
        "generator too hostile: {accepted_rules} accepted"
    );
    assert!(matched >= 2_000, "generator too timid: {matched} matches");
    assert!(gnu_refused >= 20, "generator never hits grep's refusals");
    assert!(
        failures.is_empty(),
        "{} disagreements:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The same oracle through the real binary's `--check`, on a slice of the
/// generated cases (rules without surrounding blanks or a leading `#`,
/// which the rule-line trimming would change).
#[test]
fn check_cli_agrees_with_grep() {
    let mut rng = Rng::new(0xc11_c4ec);
    let mut runs = 0;
    while runs < 150 {
        let (rule, reqs) = case(&mut rng);
        if rule.trim() != rule || rule.is_empty() || rule.starts_with('#') {
            continue;
        }
        let (gnu, _) = grep_lines(&["grep"], &rule, &reqs);
        for (i, req) in reqs.iter().enumerate().take(2) {
            if req.trim_matches([' ', '\t']).is_empty() {
                continue;
            }
            runs += 1;
            let mut cmd = clean_cmd(bin("bastion-broker"));
            cmd.env("ALLOWED_COMMANDS", &rule)
                .args(["--check", "--"])
                .arg(req);
            let out = output(&mut cmd);
            let grep_allows = gnu.as_ref().is_some_and(|l| l.contains(&i));
            let code = out.status.code();
            if grep_allows {
                // We may refuse a rule grep accepts, never allow what it refuses.
                assert!(
                    code == Some(0) || probe::translate(&rule).is_err(),
                    "{}",
                    crate::harness::describe(&cmd, &out)
                );
            } else {
                assert_eq!(code, Some(126), "{}", crate::harness::describe(&cmd, &out));
            }
        }
    }
}

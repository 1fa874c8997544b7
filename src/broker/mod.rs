//! The broker (SPEC 4): anchored allowlist decision over POSIX ERE rules,
//! then a shell-free exec. It must never run anything a rule does not allow,
//! and never hand a byte of the request to a shell.

mod argv;
mod classes;
pub(crate) mod ere;
pub(crate) mod rules;
pub(crate) mod snapshot;

use crate::audit::{self, Event};
use crate::config::{ConfigError, Runtime};
use crate::exit::{self, Failure, Tool};
use crate::lock::LockGuard;
use crate::session::{self, Runner, SessionEnv};
use clap::Parser;
use rules::{DenyReason, Rule, RuleError};
use snapshot::CompiledRule;
use std::borrow::Cow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Where the rules and the prefix come from: the runtime file inside the
/// container, or the environment outside it.
#[derive(Debug, Clone)]
pub(crate) struct BrokerConfig {
    pub(crate) allowed_commands: String,
    pub(crate) allowed_commands_file: PathBuf,
    pub(crate) command_prefix: String,
    /// `ALLOWED_COMMANDS` compiled at boot; when set, it replaces
    /// `allowed_commands`, and a snapshot that cannot be used runs nothing.
    pub(crate) snapshot: Option<PathBuf>,
    /// `snapshot` as read (and its owner and mode checked) once, by a
    /// long-running caller: the HTTP listener reads it when it starts
    /// instead of on every request. The bytes are still checked
    /// (`decode`) before each use, and a file that could not be used
    /// refuses every request as a fresh read would.
    pub(crate) preloaded: Option<Arc<Result<Vec<u8>, snapshot::SnapshotError>>>,
}

impl BrokerConfig {
    pub(crate) fn from_runtime(rt: &Runtime) -> Self {
        Self {
            allowed_commands: rt.allowed_commands.clone(),
            allowed_commands_file: rt.allowed_commands_file.clone(),
            command_prefix: rt.command_prefix.clone(),
            snapshot: rt.rules_snapshot.clone(),
            preloaded: None,
        }
    }

    /// [`BrokerConfig::from_runtime`], the snapshot read now once for
    /// every later decision (see `preloaded`).
    pub(crate) fn preloaded_from_runtime(rt: &Runtime) -> Self {
        let mut cfg = Self::from_runtime(rt);
        cfg.preloaded = cfg
            .snapshot
            .as_deref()
            .map(|path| Arc::new(snapshot::read(path)));
        cfg
    }

    /// No rules from the environment, the default list file, no prefix.
    fn empty() -> Self {
        Self {
            allowed_commands: String::new(),
            allowed_commands_file: PathBuf::from(crate::config::ALLOWED_COMMANDS_FILE),
            command_prefix: String::new(),
            snapshot: None,
            preloaded: None,
        }
    }
}

/// The effective rules of one request: `ALLOWED_COMMANDS` first (compiled
/// at boot, or parsed now when there is no snapshot), then the live list
/// file, in line order.
struct Loaded<'a> {
    boot: Vec<CompiledRule<'a>>,
    rules: Vec<Rule>,
    list_error: Option<rules::ListFileError>,
}

/// The rule that allowed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Allowing {
    Boot(usize),
    Parsed(usize),
}

impl Loaded<'_> {
    /// Text and source of the allowing rule.
    fn shown(&self, a: Allowing) -> (String, rules::Source) {
        match a {
            Allowing::Boot(i) => (rules::show_rule(self.boot[i].text), self.boot[i].source()),
            Allowing::Parsed(i) => (
                rules::show_rule(&self.rules[i].text),
                self.rules[i].source.clone(),
            ),
        }
    }
}

/// The snapshot's bytes when the configuration names one (the boot rules
/// borrow from them), else nothing.
fn read_snapshot(cfg: &BrokerConfig) -> Result<Cow<'_, [u8]>, snapshot::SnapshotError> {
    if let Some(read) = &cfg.preloaded {
        return match &**read {
            Ok(bytes) => Ok(Cow::Borrowed(bytes)),
            Err(e) => Err(e.clone()),
        };
    }
    cfg.snapshot
        .as_deref()
        .map_or(Ok(Vec::new()), snapshot::read)
        .map(Cow::Owned)
}

/// With `request`, list-file lines that cannot match it are left out (see
/// `rules::file_rules`). `snapshot` is what `read_snapshot` gave.
fn load<'a>(
    cfg: &BrokerConfig,
    snapshot: &'a [u8],
    request: Option<&str>,
) -> Result<Loaded<'a>, snapshot::SnapshotError> {
    let (boot, mut rules) = match &cfg.snapshot {
        Some(path) => (snapshot::decode_file(path, snapshot)?, Vec::new()),
        None => (Vec::new(), rules::env_rules(&cfg.allowed_commands)),
    };
    let list_error = match rules::file_rules(&cfg.allowed_commands_file, request) {
        Ok(more) => {
            rules.extend(more);
            None
        }
        Err(e) => Some(e),
    };
    Ok(Loaded {
        boot,
        rules,
        list_error,
    })
}

/// The snapshot could not be used: said once, exit 78.
fn refuse(e: &snapshot::SnapshotError) -> ExitCode {
    Tool::Broker.say(e);
    exit::code(exit::CONFIG)
}

/// Every unusable rule and an unreadable list file (they are skipped; the
/// other rules still apply), one message each, without the prefix.
fn problems(loaded: &Loaded) -> Vec<String> {
    let mut notes: Vec<String> = loaded.list_error.iter().map(ToString::to_string).collect();
    for rule in &loaded.rules {
        if let Err(error) = &rule.translated {
            notes.push(format!("skipped: {}", RuleError { rule, error }));
        }
    }
    notes
}

/// Logs [`problems`].
fn log_problems(loaded: &Loaded) {
    for note in problems(loaded) {
        Tool::Broker.say(note);
    }
}

/// Why a request that is not UTF-8 is refused: grep in a UTF-8 locale
/// matches no rule against it.
pub(crate) const NOT_UTF8: &str = "request is not valid UTF-8";

fn deny(request: &str, reason: DenyReason) -> ExitCode {
    deny_bytes(request.as_bytes(), reason.to_string())
}

/// The DENY audit line for a request (also one that is not UTF-8).
pub(crate) fn deny_bytes(request: &[u8], reason: String) -> ExitCode {
    let event = Event::BrokerDeny {
        request,
        reason: Some(reason),
    };
    eprintln!("{}", audit::render(&event));
    exit::code(exit::DENIED)
}

/// The decision for one request: the allowing rule, the first in order.
fn decide(cfg: &BrokerConfig, loaded: &Loaded, request: &str) -> Result<Allowing, DenyReason> {
    rules::precheck(request, !cfg.command_prefix.trim().is_empty())?;
    rules::first_match(&loaded.boot, request)
        .map(Allowing::Boot)
        .or_else(|| rules::first_match(&loaded.rules, request).map(Allowing::Parsed))
        .ok_or(DenyReason::NoRuleMatches)
}

fn prefix_words(prefix: &str) -> Result<Vec<String>, ConfigError> {
    shell_words::split(prefix).map_err(|e| {
        ConfigError::new(
            "COMMAND_PREFIX",
            Some(prefix),
            format!("cannot be split into words ({e})"),
            "close every quote and do not end with a backslash",
        )
    })
}

/// Why `allowed_argv` gives no argv.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The decision: 126.
    Denied(DenyReason),
    /// The boot-compiled rules cannot be used: nothing is decided, 78.
    Snapshot(snapshot::SnapshotError),
}

impl From<DenyReason> for Refusal {
    fn from(r: DenyReason) -> Self {
        Refusal::Denied(r)
    }
}

/// Decides on `request`: the argv to run when a rule allows it. Unusable
/// rules and a bad prefix are logged here; the decision itself is not.
pub(crate) fn allowed_argv(cfg: &BrokerConfig, request: &str) -> Result<Vec<String>, Refusal> {
    let (notes, decision) = allowed_argv_noted(cfg, request);
    for note in notes {
        Tool::Broker.say(note);
    }
    decision
}

/// [`allowed_argv`] writing nothing: the messages it would log (without
/// the prefix), and the decision. For a caller whose stderr is not the
/// session's (the HTTP listener puts them in the response body).
pub(crate) fn allowed_argv_noted(
    cfg: &BrokerConfig,
    request: &str,
) -> (Vec<String>, Result<Vec<String>, Refusal>) {
    let (notes, decision) = allowed_noted(cfg, request);
    (notes, decision.map(|a| a.argv))
}

/// An allowed request: the argv, and the rule that allowed it and where
/// that rule came from (for the audit trail).
#[derive(Debug, Clone)]
pub(crate) struct Allowed {
    pub(crate) argv: Vec<String>,
    pub(crate) rule: String,
    pub(crate) source: String,
}

/// [`allowed_argv_noted`] with the rule that allowed the request.
pub(crate) fn allowed_noted(
    cfg: &BrokerConfig,
    request: &str,
) -> (Vec<String>, Result<Allowed, Refusal>) {
    let snap = match read_snapshot(cfg) {
        Ok(s) => s,
        Err(e) => return (Vec::new(), Err(Refusal::Snapshot(e))),
    };
    let loaded = match load(cfg, &snap, Some(request)) {
        Ok(l) => l,
        Err(e) => return (Vec::new(), Err(Refusal::Snapshot(e))),
    };
    let mut notes = problems(&loaded);
    let decision = match prefix_words(&cfg.command_prefix) {
        // Validated at boot; only a hand-set environment gets here.
        Err(e) => {
            notes.push(e.to_string());
            Err(DenyReason::BadPrefix.into())
        }
        Ok(prefix) => decide(cfg, &loaded, request)
            .map_err(Refusal::from)
            .and_then(|allowing| {
                let argv = argv::argv(&prefix, request);
                if argv.is_empty() {
                    Err(DenyReason::Empty.into())
                } else {
                    let (rule, source) = loaded.shown(allowing);
                    Ok(Allowed {
                        argv,
                        rule,
                        source: source.to_string(),
                    })
                }
            }),
    };
    (notes, decision)
}

/// The broker's answer for a runner that reports the decision itself.
pub(crate) enum Verdict {
    Allow {
        argv: Vec<String>,
        rule: String,
        source: String,
    },
    Deny {
        reason: String,
    },
    /// The boot-compiled rules cannot be used (said already): exit 78.
    Unusable,
}

/// Decides like [`run`] and writes the same `[broker] ALLOW`/`DENY` line,
/// but hands back the argv and the rule that allowed it instead of running it.
pub(crate) fn judge(cfg: &BrokerConfig, request: &str) -> Verdict {
    let refuse_with = |reason: DenyReason| {
        let reason = reason.to_string();
        let _ = deny_bytes(request.as_bytes(), reason.clone());
        Verdict::Deny { reason }
    };
    let snap = match read_snapshot(cfg) {
        Ok(s) => s,
        Err(e) => {
            let _ = refuse(&e);
            return Verdict::Unusable;
        }
    };
    let loaded = match load(cfg, &snap, Some(request)) {
        Ok(l) => l,
        Err(e) => {
            let _ = refuse(&e);
            return Verdict::Unusable;
        }
    };
    log_problems(&loaded);
    let prefix = match prefix_words(&cfg.command_prefix) {
        Ok(p) => p,
        Err(e) => {
            Tool::Broker.say(&e);
            return refuse_with(DenyReason::BadPrefix);
        }
    };
    let allowing = match decide(cfg, &loaded, request) {
        Ok(a) => a,
        Err(reason) => return refuse_with(reason),
    };
    let argv = argv::argv(&prefix, request);
    if argv.is_empty() {
        return refuse_with(DenyReason::Empty);
    }
    let allow = Event::BrokerAllow {
        request: request.as_bytes(),
    };
    eprintln!("{}", audit::render(&allow));
    let (rule, source) = loaded.shown(allowing);
    Verdict::Allow {
        argv,
        rule,
        source: source.to_string(),
    }
}

/// Decides, logs the audit line and, when allowed, hands the argv to
/// `runner` (the exec runner does not return). Otherwise returns 126
/// (denied), 127 (program not found) or 78 (the boot-compiled rules cannot
/// be used).
pub(crate) fn run(
    cfg: &BrokerConfig,
    request: &str,
    runner: impl Runner,
    lock: Option<LockGuard>,
) -> ExitCode {
    let argv = match allowed_argv(cfg, request) {
        Ok(argv) => argv,
        Err(Refusal::Denied(reason)) => return deny(request, reason),
        Err(Refusal::Snapshot(e)) => return refuse(&e),
    };
    let allow = Event::BrokerAllow {
        request: request.as_bytes(),
    };
    eprintln!("{}", audit::render(&allow));
    let cmd = session::Command::argv(argv, SessionEnv::from_process());
    match runner.run(cmd, lock) {
        Ok(code) => code,
        Err(e) => {
            Tool::Broker.say(&e);
            exit::code(e.exit_code())
        }
    }
}

/// Boot-time check of `ALLOWED_COMMANDS` and `COMMAND_PREFIX`: one error per
/// bad rule, naming the rule and its line.
pub(crate) fn validate_boot(allowed_commands: &str, command_prefix: &str) -> Vec<ConfigError> {
    let mut errors: Vec<ConfigError> = rules::env_rules(allowed_commands)
        .iter()
        .filter_map(|rule| {
            let error = rule.translated.as_ref().err()?;
            Some(ConfigError {
                var: "ALLOWED_COMMANDS".into(),
                value: None,
                problem: RuleError { rule, error }.to_string(),
                fix: "fix or remove that line (rules are POSIX EREs as `grep -Ex` reads them; see the README's Broker section)".into(),
            })
        })
        .collect();
    if let Err(e) = prefix_words(command_prefix) {
        errors.push(e);
    }
    errors
}

/// `bastion-broker`: decide on a request and exec it, or explain rules.
#[derive(Parser, Debug)]
#[command(
    name = "bastion-broker",
    about = "Run a request only if an allowlist rule matches it, without a shell",
    long_about = "Rules come from ALLOWED_COMMANDS, ALLOWED_COMMANDS_FILE and COMMAND_PREFIX \
when any of them is set in the environment, otherwise from the runtime file. \
Exit codes: 126 refused, 127 program not found, else the command's own."
)]
struct Cli {
    /// Decide only, never execute: exit 0 and print the matching rule, or 126.
    #[arg(long, conflicts_with = "list")]
    check: bool,
    /// Print the effective rules with their source; bad ones are flagged
    /// (exit 78 when any is).
    #[arg(long)]
    list: bool,
    /// Runtime file to read when the environment does not configure the
    /// broker.
    #[arg(long, value_name = "PATH")]
    runtime: Option<PathBuf>,
    /// The request; defaults to $SSH_ORIGINAL_COMMAND.
    #[arg(conflicts_with = "list")]
    request: Option<std::ffi::OsString>,
}

const ENV_VARS: [&str; 3] = [
    "ALLOWED_COMMANDS",
    "ALLOWED_COMMANDS_FILE",
    "COMMAND_PREFIX",
];

/// The environment when any of its variables is set, else the runtime file
/// (none at all: no rules, the default list file).
fn config_from(runtime: Option<PathBuf>) -> Result<BrokerConfig, Failure> {
    if ENV_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
        let mut cfg = BrokerConfig::empty();
        let get = |var: &str| -> Result<Option<String>, Failure> {
            crate::config::env_var(var).map_err(|e| Failure::Other {
                code: exit::CONFIG,
                message: e.to_string(),
            })
        };
        if let Some(v) = get("ALLOWED_COMMANDS")? {
            cfg.allowed_commands = v;
        }
        if let Some(v) = std::env::var_os("ALLOWED_COMMANDS_FILE").filter(|v| !v.is_empty()) {
            cfg.allowed_commands_file = PathBuf::from(v);
        }
        if let Some(v) = get("COMMAND_PREFIX")? {
            cfg.command_prefix = v;
        }
        return Ok(cfg);
    }
    let path = runtime.unwrap_or_else(|| PathBuf::from(crate::config::RUNTIME_FILE));
    match Runtime::load(&path) {
        Ok(rt) => Ok(BrokerConfig::from_runtime(&rt)),
        Err(_) if !path.exists() => Ok(BrokerConfig::empty()),
        Err(e) => Err(Failure::Runtime(e)),
    }
}

pub fn main() -> ExitCode {
    exit::main(Tool::Broker, run_cli)
}

fn run_cli() -> Result<ExitCode, Failure> {
    crate::sys::fd::cloexec_inherited().map_err(Failure::descriptors)?;
    let cli = exit::parse_args::<Cli>()?;
    let cfg = config_from(cli.runtime)?;
    if cli.list {
        return Ok(list(&cfg));
    }
    let raw = cli
        .request
        .or_else(|| std::env::var_os("SSH_ORIGINAL_COMMAND"))
        .unwrap_or_default();
    let request = match raw.into_string() {
        Ok(r) => r,
        Err(raw) => return Ok(deny_bytes(raw.as_encoded_bytes(), NOT_UTF8.into())),
    };
    if cli.check {
        return Ok(check(&cfg, &request));
    }
    Ok(run(&cfg, &request, session::ExecRunner, None))
}

fn check(cfg: &BrokerConfig, request: &str) -> ExitCode {
    let snap = match read_snapshot(cfg) {
        Ok(s) => s,
        Err(e) => return refuse(&e),
    };
    let loaded = match load(cfg, &snap, Some(request)) {
        Ok(l) => l,
        Err(e) => return refuse(&e),
    };
    log_problems(&loaded);
    if let Err(e) = prefix_words(&cfg.command_prefix) {
        Tool::Broker.say(&e);
        return deny(request, DenyReason::BadPrefix);
    }
    match decide(cfg, &loaded, request) {
        Ok(a) => {
            let (text, source) = loaded.shown(a);
            println!("allowed by rule \"{text}\" ({source})");
            exit::code(exit::OK)
        }
        Err(reason) => deny(request, reason),
    }
}

fn list(cfg: &BrokerConfig) -> ExitCode {
    let bad_snapshot = |e: snapshot::SnapshotError| {
        println!("BAD  {e}");
        exit::code(exit::CONFIG)
    };
    let snap = match read_snapshot(cfg) {
        Ok(s) => s,
        Err(e) => return bad_snapshot(e),
    };
    let loaded = match load(cfg, &snap, None) {
        Ok(l) => l,
        Err(e) => return bad_snapshot(e),
    };
    let mut bad = false;
    if let Err(e) = prefix_words(&cfg.command_prefix) {
        println!("BAD  {e}");
        bad = true;
    }
    if let Some(e) = &loaded.list_error {
        println!("BAD  {e}");
        bad = true;
    }
    for rule in &loaded.boot {
        println!("ok   {}: {}", rule.source(), rules::show_rule(rule.text));
    }
    for rule in &loaded.rules {
        match &rule.translated {
            Ok(_) => println!("ok   {}: {}", rule.source, rules::show_rule(&rule.text)),
            Err(error) => {
                bad = true;
                println!(
                    "BAD  {}: {}: {error}",
                    rule.source,
                    rules::show_rule(&rule.text)
                );
            }
        }
    }
    if loaded.boot.is_empty() && loaded.rules.is_empty() {
        println!("(no rules: every request is refused)");
    }
    exit::code(if bad { exit::CONFIG } else { exit::OK })
}

/// Entry points for the differential tests and the fuzz targets, so they
/// exercise exactly the code a request goes through. Not a stable API.
#[doc(hidden)]
pub mod probe {
    /// The `regex` pattern a rule translates to, or why it is refused.
    pub fn translate(rule: &str) -> Result<String, String> {
        super::ere::translate(rule)
            .map(|t| t.pattern())
            .map_err(|e| e.to_string())
    }

    /// Whether `rule` (one line, untrimmed, as `grep -e` gets it) matches
    /// each request over the whole line, through the same decision the
    /// broker makes (literal shortcuts, then the compiled pattern).
    pub fn matches(rule: &str, requests: &[&str]) -> Result<Vec<bool>, String> {
        let translated = super::ere::translate(rule).map_err(|e| e.to_string())?;
        let rules = [super::rules::Rule {
            text: rule.to_owned(),
            source: super::rules::Source::Env { line: 1 },
            translated: Ok(translated),
        }];
        Ok(requests
            .iter()
            .map(|r| super::rules::first_match(&rules, r).is_some())
            .collect())
    }

    /// `matches` through the boot-compiled path: the rule is translated,
    /// written into a snapshot, read back (checked) and decided from it.
    pub fn matches_compiled(rule: &str, requests: &[&str]) -> Result<Vec<bool>, String> {
        let t = super::ere::translate(rule).map_err(|e| e.to_string())?;
        let pattern = t.pattern();
        let bytes = super::snapshot::encode([(1, rule, pattern.as_str(), &t.shortcut)].into_iter());
        let rules = super::snapshot::decode(&bytes)?;
        Ok(requests
            .iter()
            .map(|r| super::rules::first_match(&rules, r).is_some())
            .collect())
    }

    /// What every request `rule` matches starts with, as the live list's
    /// prefilter reads it off the text.
    pub fn literal_start(rule: &str) -> &[u8] {
        super::rules::literal_start(rule.as_bytes())
    }

    /// Fuzz oracle: for a rule the broker accepts, the translated pattern
    /// compiles, and the decision path (literal shortcuts, the rule set)
    /// agrees with the compiled pattern on `request`. Err describes a bug.
    pub fn check_consistency(rule: &str, request: &str) -> Result<(), String> {
        let Ok(t) = super::ere::translate(rule) else {
            return Ok(());
        };
        let re = regex::RegexBuilder::new(&t.pattern())
            .size_limit(64 << 20)
            .build()
            .map_err(|e| format!("accepted rule {rule:?} does not compile: {e}"))?;
        let direct = re.is_match(request);
        let decided = matches(rule, &[request])?[0];
        if direct != decided {
            return Err(format!(
                "rule {rule:?} request {request:?}: regex {direct}, decision {decided}"
            ));
        }
        Ok(())
    }

    /// The code-point ranges of a POSIX class as the broker reads it.
    pub fn class_table(name: &str) -> Option<Vec<(u32, u32)>> {
        super::classes::by_name(name).map(<[_]>::to_vec)
    }

    /// The full decision for `ALLOWED_COMMANDS`-style text: the 0-based
    /// index (among usable rules' lines) of the allowing rule, or the
    /// refusal reason.
    pub fn decide(allowed_commands: &str, request: &str, prefix: &str) -> Result<usize, String> {
        let cfg = super::BrokerConfig {
            allowed_commands: allowed_commands.to_owned(),
            allowed_commands_file: std::path::PathBuf::new(),
            command_prefix: prefix.to_owned(),
            snapshot: None,
            preloaded: None,
        };
        let loaded = super::Loaded {
            boot: Vec::new(),
            rules: super::rules::env_rules(allowed_commands),
            list_error: None,
        };
        match super::decide(&cfg, &loaded, request) {
            Ok(super::Allowing::Parsed(i)) => Ok(i),
            Ok(super::Allowing::Boot(_)) => unreachable!("no snapshot here"),
            Err(r) => Err(r.to_string()),
        }
    }

    /// `decide` through the boot-compiled path (the snapshot the entrypoint
    /// writes for `allowed_commands`, read back and checked); the outer
    /// error when the rules cannot be compiled (the entrypoint refuses them).
    pub fn decide_compiled(
        allowed_commands: &str,
        request: &str,
        prefix: &str,
    ) -> Result<Result<usize, String>, String> {
        let bytes = super::snapshot::compile(allowed_commands)?;
        let cfg = super::BrokerConfig {
            allowed_commands: String::new(),
            allowed_commands_file: std::path::PathBuf::new(),
            command_prefix: prefix.to_owned(),
            snapshot: None,
            preloaded: None,
        };
        let loaded = super::Loaded {
            boot: super::snapshot::decode(&bytes)?,
            rules: Vec::new(),
            list_error: None,
        };
        Ok(match super::decide(&cfg, &loaded, request) {
            Ok(super::Allowing::Boot(i)) => Ok(i),
            Ok(super::Allowing::Parsed(_)) => unreachable!("no parsed rules here"),
            Err(r) => Err(r.to_string()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_boot_names_each_bad_rule_and_line() {
        let errors = validate_boot("ls\n# comment\n(a)\\1\n\n[z-a]\nuptime", "");
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(shown.len(), 2, "{shown:#?}");
        assert!(
            shown[0].starts_with(
                "config error: ALLOWED_COMMANDS: rule \"(a)\\1\" (ALLOWED_COMMANDS line 3) refused"
            ),
            "{}",
            shown[0]
        );
        assert!(
            shown[1].contains("\"[z-a]\" (ALLOWED_COMMANDS line 5)"),
            "{}",
            shown[1]
        );
        assert!(validate_boot("ls\nuptime( -p)?", "docker exec app").is_empty());
    }

    #[test]
    fn validate_boot_rejects_an_unsplittable_prefix() {
        let errors = validate_boot("ls", "docker exec 'app");
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].var, "COMMAND_PREFIX");
        assert!(errors[0].to_string().contains("docker exec 'app"));
    }
}

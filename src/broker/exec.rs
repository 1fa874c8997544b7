//! The shell-free exec of an allowed request: argv is the prefix's words
//! plus the request split on spaces and tabs, run by `execvp` on the fixed
//! safe PATH with an explicit environment. Never a shell, never a glob.

use std::fmt;
use std::os::unix::process::CommandExt as _;

/// `shell_words(prefix) ++ request split on spaces and tabs` (empty fields
/// dropped; no quoting, globbing or expansion of the request).
pub(crate) fn argv(prefix_words: &[String], request: &str) -> Vec<String> {
    prefix_words
        .iter()
        .cloned()
        .chain(
            request
                .split([' ', '\t'])
                .filter(|w| !w.is_empty())
                .map(str::to_owned),
        )
        .collect()
}

/// The exec did not happen.
#[derive(Debug)]
pub(crate) enum ExecError {
    NotFound { program: String },
    NotExecutable { program: String, problem: String },
    Other { program: String, problem: String },
}

impl ExecError {
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            ExecError::NotFound { .. } => crate::exit::NOT_FOUND,
            ExecError::NotExecutable { .. } => crate::exit::DENIED,
            ExecError::Other { .. } => crate::exit::FAILURE,
        }
    }
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::NotFound { program } => write!(
                f,
                "[broker] command not found: \"{}\" is not on PATH {}",
                crate::audit::escape(program),
                crate::config::SAFE_PATH
            ),
            ExecError::NotExecutable { program, problem } => write!(
                f,
                "[broker] cannot execute \"{}\": {problem}",
                crate::audit::escape(program)
            ),
            ExecError::Other { program, problem } => write!(
                f,
                "[broker] cannot run \"{}\": {problem}",
                crate::audit::escape(program)
            ),
        }
    }
}

/// Replaces the process with `argv`. Returns only on failure.
pub(crate) fn exec(argv: &[String]) -> ExecError {
    let Some((program, args)) = argv.split_first() else {
        return ExecError::Other {
            program: String::new(),
            problem: "empty command".into(),
        };
    };
    let e = crate::config::session_command(program).args(args).exec();
    classify(program, &e)
}

/// The exec error for `e`, a failure to execute `program`.
pub(crate) fn classify(program: &str, e: &std::io::Error) -> ExecError {
    let program = program.to_owned();
    match e.kind() {
        std::io::ErrorKind::NotFound => ExecError::NotFound { program },
        std::io::ErrorKind::PermissionDenied => ExecError::NotExecutable {
            program,
            problem: e.to_string(),
        },
        _ if e.raw_os_error() == Some(nix::libc::ENOEXEC) => ExecError::NotExecutable {
            program,
            problem: e.to_string(),
        },
        _ => ExecError::Other {
            program,
            problem: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argv_splits_on_blanks_only() {
        let p = vec!["printf".to_string(), "<%s>\\n".to_string()];
        assert_eq!(
            argv(&p, "  a\t'b c'  $(x) ;|&  "),
            vec!["printf", "<%s>\\n", "a", "'b", "c'", "$(x)", ";|&"]
        );
        assert_eq!(argv(&[], ""), Vec::<String>::new());
    }
}

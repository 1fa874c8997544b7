//! The environment of every child the bastion starts, built once as a
//! value. It never reads the process environment by itself: a caller hands
//! it a lookup, so the rules are testable over a map and a client's
//! variables reach a command only when this list names them.

use crate::config::SAFE_PATH;
use crate::sys::privilege::Account;
use std::ffi::{OsStr, OsString};

/// The variables a session command may inherit, when set (by sshd or the
/// HTTP listener). Everything else is dropped: no `LD_*`, no `BASH_ENV`,
/// and above all no `SSH_ORIGINAL_COMMAND`: the request reaches a command
/// only as argv, so no script can be led to re-parse it.
pub(crate) const SESSION_VARS: &[&str] = &[
    "HOME",
    "USER",
    "LOGNAME",
    "SHELL",
    "TERM",
    "TZ",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LC_MESSAGES",
    "LC_NUMERIC",
    "LC_TIME",
    "LC_COLLATE",
    "SSH_CLIENT",
    "SSH_CONNECTION",
    "SSH_TTY",
    "SSH_USER_AUTH",
    // Set by the wrapper from the runtime file (SPEC 13), never taken
    // from the client.
    "SSH_AUTH_SOCK",
];

/// An explicit child environment: exactly these variables, in this order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SessionEnv {
    vars: Vec<(OsString, OsString)>,
}

impl SessionEnv {
    /// Nothing at all (tools that need no PATH: ssh-keygen by full path,
    /// the listener, the key index).
    pub(crate) fn empty() -> Self {
        Self::default()
    }

    /// `PATH` = [`SAFE_PATH`] and nothing else (sshd and its config check).
    pub(crate) fn safe_path() -> Self {
        Self::empty().with("PATH", SAFE_PATH)
    }

    /// A session command's environment: `PATH` = [`SAFE_PATH`] plus every
    /// [`SESSION_VARS`] entry `lookup` knows.
    pub(crate) fn session(lookup: impl Fn(&str) -> Option<OsString>) -> Self {
        let mut env = Self::safe_path();
        for name in SESSION_VARS {
            if let Some(v) = lookup(name) {
                env = env.with(name, v);
            }
        }
        env
    }

    /// [`SessionEnv::session`] over this process's environment.
    pub(crate) fn from_process() -> Self {
        Self::session(|name| std::env::var_os(name))
    }

    /// What the HTTP listener gives the wrapper: the account's identity and
    /// a plain shell, as sshd would.
    pub(crate) fn for_account(account: &Account) -> Self {
        Self::safe_path()
            .with("HOME", &account.home)
            .with("USER", &account.name)
            .with("LOGNAME", &account.name)
            .with("SHELL", "/bin/sh")
    }

    /// Sets `name` (replacing an earlier value).
    pub(crate) fn with(mut self, name: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        let name = name.as_ref();
        self.vars.retain(|(n, _)| n != name);
        self.vars.push((name.to_owned(), value.as_ref().to_owned()));
        self
    }

    #[cfg(test)]
    pub(crate) fn get(&self, name: &str) -> Option<&OsStr> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_os_str())
    }

    pub(crate) fn vars(&self) -> impl Iterator<Item = (&OsStr, &OsStr)> {
        self.vars
            .iter()
            .map(|(n, v)| (n.as_os_str(), v.as_os_str()))
    }

    /// A `Command` for `program` with exactly this environment.
    pub(crate) fn command(&self, program: impl AsRef<OsStr>) -> std::process::Command {
        let mut cmd = std::process::Command::new(program);
        cmd.env_clear().envs(self.vars());
        cmd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), OsString::from(v)))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn session_keeps_only_the_listed_variables_and_the_safe_path() {
        let env = SessionEnv::session(lookup(&[
            ("PATH", "/tmp/evil"),
            ("LD_PRELOAD", "/tmp/x.so"),
            ("BASH_ENV", "/tmp/rc"),
            ("SSH_ORIGINAL_COMMAND", "rm -rf /"),
            ("HOME", "/home/agent"),
            ("LANG", "C.UTF-8"),
        ]));
        let names: Vec<&OsStr> = env.vars().map(|(n, _)| n).collect();
        assert_eq!(names, ["PATH", "HOME", "LANG"]);
        assert_eq!(env.get("PATH"), Some(OsStr::new(SAFE_PATH)));
        assert_eq!(env.get("SSH_ORIGINAL_COMMAND"), None);
    }

    #[test]
    fn with_replaces() {
        let env = SessionEnv::safe_path().with("PATH", "/x").with("A", "1");
        assert_eq!(env.vars().count(), 2);
        assert_eq!(env.get("PATH"), Some(OsStr::new("/x")));
    }

    #[test]
    fn account_env_names_the_account() {
        let a = Account {
            name: "agent".into(),
            uid: 1000,
            home: "/home/agent".into(),
        };
        let env = SessionEnv::for_account(&a);
        assert_eq!(env.get("USER"), Some(OsStr::new("agent")));
        assert_eq!(env.get("HOME"), Some(OsStr::new("/home/agent")));
        assert_eq!(env.get("SHELL"), Some(OsStr::new("/bin/sh")));
    }
}

//! The binaries by name, and the prefix each one's messages start with:
//! the one place that spells them. Depends on nothing.

use std::fmt;

/// The binaries, for their message prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    Entrypoint,
    Wrapper,
    Broker,
    Cgi,
    Keys,
    AgentProxy,
    Monitor,
    Gate,
}

impl Tool {
    /// What starts every line the tool writes about itself on stderr.
    pub(crate) const fn prefix(self) -> &'static str {
        match self {
            Tool::Entrypoint => "bastion-entrypoint:",
            Tool::Wrapper => "bastion-wrapper:",
            Tool::Broker => "[broker]",
            Tool::Cgi => "bastion-cgi:",
            Tool::Keys => "bastion-keys:",
            Tool::AgentProxy => "bastion-agent-proxy:",
            Tool::Monitor => "bastion-monitor:",
            Tool::Gate => "bastion-gate:",
        }
    }

    /// The tool's lines as events in `LOG_FORMAT=json` (`"event":NAME`).
    pub(crate) const fn event(self) -> &'static str {
        match self {
            Tool::Entrypoint => "entrypoint",
            Tool::Wrapper => "wrapper",
            Tool::Broker => "broker",
            Tool::Cgi => "cgi",
            Tool::Keys => "keys",
            Tool::AgentProxy => "agent-proxy",
            Tool::Monitor => "monitor",
            Tool::Gate => "gate",
        }
    }

    /// Writes one diagnostic line: `PREFIX message`.
    pub(crate) fn say(self, message: impl fmt::Display) {
        eprintln!("{} {message}", self.prefix());
    }
}

//! What the proxy lets through to the agent, one connection at a time:
//! *request identities*, one `session-bind@openssh.com` (not forwarded),
//! and *sign* only for a user-auth request of the bound session, with the
//! key of an upstream whose pinned host key the connection is bound to,
//! as that upstream's user. The agent's destination constraint checks the
//! same again; this is the second lock on the same door.

use super::protocol::{self, Forbidden, Malformed, Request};

/// One upstream as the filter sees it: public facts only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub user: String,
    pub fingerprint: String,
    pub key: Vec<u8>,
    pub host_keys: Vec<Vec<u8>>,
}

/// Why a request was refused: the `reason` label of
/// `bastion_upstream_refused_total` (a small fixed set).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Forbidden(Forbidden),
    Malformed(Malformed),
    /// A frame of length 0 or over the limit.
    BadFrame,
    /// Sign on a connection no session-bind succeeded on.
    Unbound,
    /// A session-bind for agent forwarding: keys never leave the bastion.
    ForwardedBind,
    /// A second session-bind on a bound connection.
    Rebind,
    /// Sign with a key that is no upstream's.
    UnknownKey,
    /// The connection is bound to a host key not pinned for the key's
    /// upstream.
    WrongHost,
    /// The data is not a user-auth request for the bound session.
    NotUserAuth,
    /// A user-auth request as another user than the upstream's.
    WrongUser,
    /// The agent itself said no.
    Agent,
}

impl Refusal {
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Forbidden(f) => f.reason(),
            Self::Malformed(_) | Self::BadFrame => "malformed",
            Self::Unbound => "unbound",
            Self::ForwardedBind => "forwarded-bind",
            Self::Rebind => "rebind",
            Self::UnknownKey => "unknown-key",
            Self::WrongHost => "wrong-host",
            Self::NotUserAuth => "not-userauth",
            Self::WrongUser => "wrong-user",
            Self::Agent => "agent",
        }
    }
}

/// Every reason there is, for the metrics (each shown at 0 from the start).
pub const REASONS: &[&str] = &[
    "add",
    "remove",
    "lock",
    "unlock",
    "smartcard",
    "legacy",
    "extension",
    "unknown-message",
    "malformed",
    "unbound",
    "forwarded-bind",
    "rebind",
    "unknown-key",
    "wrong-host",
    "not-userauth",
    "wrong-user",
    "agent",
    "peer",
    "connection-limit",
];

/// What to do with one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it to the agent as is.
    Forward(Pending),
    /// Answer `SSH_AGENT_FAILURE` without asking the agent.
    Refuse(Refusal),
}

/// What a forwarded message waits for in the agent's reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pending {
    Identities,
    /// A bind that holds once the agent answers SUCCESS.
    Bind {
        host_key: Vec<u8>,
        session_id: Vec<u8>,
    },
    /// A signature for upstream `target` (index into the table).
    Sign {
        target: usize,
    },
}

/// What the agent's reply means for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Listed,
    Bound,
    Signed { target: usize },
    Refused(Refusal),
}

struct Bound {
    host_key: Vec<u8>,
    session_id: Vec<u8>,
}

/// The state of one client connection.
#[derive(Default)]
pub struct Connection {
    bound: Option<Bound>,
}

impl Connection {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_bound(&self) -> bool {
        self.bound.is_some()
    }

    /// Decides on one message body (after the length).
    pub fn decide(&self, targets: &[Target], body: &[u8]) -> Verdict {
        let req = match protocol::parse_request(body) {
            Ok(r) => r,
            Err(m) => return Verdict::Refuse(Refusal::Malformed(m)),
        };
        match req {
            Request::RequestIdentities => Verdict::Forward(Pending::Identities),
            Request::Forbidden(f) => Verdict::Refuse(Refusal::Forbidden(f)),
            Request::SessionBind {
                host_key,
                session_id,
                forwarding,
                ..
            } => {
                if forwarding {
                    Verdict::Refuse(Refusal::ForwardedBind)
                } else if self.bound.is_some() {
                    Verdict::Refuse(Refusal::Rebind)
                } else {
                    Verdict::Forward(Pending::Bind {
                        host_key: host_key.to_vec(),
                        session_id: session_id.to_vec(),
                    })
                }
            }
            Request::Sign { key, data, .. } => match self.check_sign(targets, key, data) {
                Ok(target) => Verdict::Forward(Pending::Sign { target }),
                Err(r) => Verdict::Refuse(r),
            },
        }
    }

    fn check_sign(&self, targets: &[Target], key: &[u8], data: &[u8]) -> Result<usize, Refusal> {
        let bound = self.bound.as_ref().ok_or(Refusal::Unbound)?;
        let target = targets
            .iter()
            .position(|t| t.key == key)
            .ok_or(Refusal::UnknownKey)?;
        let t = &targets[target];
        if !t.host_keys.contains(&bound.host_key) {
            return Err(Refusal::WrongHost);
        }
        let auth = protocol::parse_userauth(data).ok_or(Refusal::NotUserAuth)?;
        if auth.session_id != bound.session_id
            || auth.key != key
            || auth.service != b"ssh-connection"
        {
            return Err(Refusal::NotUserAuth);
        }
        if auth.host_key.is_some_and(|h| h != bound.host_key) {
            return Err(Refusal::WrongHost);
        }
        if auth.user != t.user.as_bytes() {
            return Err(Refusal::WrongUser);
        }
        Ok(target)
    }

    /// Takes the agent's reply to a forwarded message into account.
    pub fn reply(&mut self, pending: Pending, reply: &[u8]) -> Outcome {
        let kind = protocol::reply_kind(reply);
        match pending {
            Pending::Identities => match kind {
                Some(protocol::IDENTITIES_ANSWER) => Outcome::Listed,
                _ => Outcome::Refused(Refusal::Agent),
            },
            Pending::Bind {
                host_key,
                session_id,
            } => match kind {
                Some(protocol::SUCCESS) => {
                    self.bound = Some(Bound {
                        host_key,
                        session_id,
                    });
                    Outcome::Bound
                }
                _ => Outcome::Refused(Refusal::Agent),
            },
            Pending::Sign { target } => match kind {
                Some(protocol::SIGN_RESPONSE) => Outcome::Signed { target },
                _ => Outcome::Refused(Refusal::Agent),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::protocol::build::*;
    use super::*;

    fn targets() -> Vec<Target> {
        vec![
            Target {
                name: "prod".into(),
                user: "deploy".into(),
                fingerprint: "SHA256:prod".into(),
                key: b"PRODKEY".to_vec(),
                host_keys: vec![b"PRODHOST".to_vec(), b"PRODHOST2".to_vec()],
            },
            Target {
                name: "backup".into(),
                user: "backup".into(),
                fingerprint: "SHA256:backup".into(),
                key: b"BACKUPKEY".to_vec(),
                host_keys: vec![b"BACKUPHOST".to_vec()],
            },
        ]
    }

    fn bound_to(host: &[u8]) -> Connection {
        let t = targets();
        let mut c = Connection::new();
        let Verdict::Forward(p) = c.decide(&t, &session_bind(host, b"SID", b"SIG", false)) else {
            panic!("bind refused")
        };
        assert_eq!(c.reply(p, &[protocol::SUCCESS]), Outcome::Bound);
        c
    }

    fn refusal(c: &Connection, body: &[u8]) -> &'static str {
        match c.decide(&targets(), body) {
            Verdict::Refuse(r) => r.reason(),
            v => panic!("forwarded: {v:?}"),
        }
    }

    #[test]
    fn identities_always_pass() {
        let c = Connection::new();
        assert_eq!(
            c.decide(&targets(), &[protocol::REQUEST_IDENTITIES]),
            Verdict::Forward(Pending::Identities)
        );
    }

    #[test]
    fn a_login_signature_on_the_pinned_host_passes() {
        let c = bound_to(b"PRODHOST2");
        let data = userauth(b"SID", b"deploy", b"PRODKEY", None);
        assert_eq!(
            c.decide(&targets(), &sign(b"PRODKEY", &data, 0)),
            Verdict::Forward(Pending::Sign { target: 0 })
        );
        let hb = userauth(b"SID", b"deploy", b"PRODKEY", Some(b"PRODHOST2"));
        assert_eq!(
            c.decide(&targets(), &sign(b"PRODKEY", &hb, 4)),
            Verdict::Forward(Pending::Sign { target: 0 })
        );
    }

    #[test]
    fn signing_is_refused_unless_everything_matches() {
        let unbound = Connection::new();
        let good = userauth(b"SID", b"deploy", b"PRODKEY", None);
        assert_eq!(refusal(&unbound, &sign(b"PRODKEY", &good, 0)), "unbound");
        let c = bound_to(b"PRODHOST");
        // Another upstream's key on prod's host; a key no upstream has.
        let bk = userauth(b"SID", b"backup", b"BACKUPKEY", None);
        assert_eq!(refusal(&c, &sign(b"BACKUPKEY", &bk, 0)), "wrong-host");
        assert_eq!(refusal(&c, &sign(b"OTHER", &good, 0)), "unknown-key");
        // An arbitrary blob, another session, another key in the data,
        // another service, another user, another host key in the data.
        assert_eq!(
            refusal(&c, &sign(b"PRODKEY", b"file to sign", 0)),
            "not-userauth"
        );
        let other_sid = userauth(b"SID2", b"deploy", b"PRODKEY", None);
        assert_eq!(
            refusal(&c, &sign(b"PRODKEY", &other_sid, 0)),
            "not-userauth"
        );
        let other_key = userauth(b"SID", b"deploy", b"BACKUPKEY", None);
        assert_eq!(
            refusal(&c, &sign(b"PRODKEY", &other_key, 0)),
            "not-userauth"
        );
        let svc = good
            .windows(14)
            .position(|w| w == b"ssh-connection")
            .unwrap();
        let mut other_service = good.clone();
        other_service[svc..svc + 14].copy_from_slice(b"ssh-userauthXX");
        assert_eq!(
            refusal(&c, &sign(b"PRODKEY", &other_service, 0)),
            "not-userauth"
        );
        let root = userauth(b"SID", b"root", b"PRODKEY", None);
        assert_eq!(refusal(&c, &sign(b"PRODKEY", &root, 0)), "wrong-user");
        let hb = userauth(b"SID", b"deploy", b"PRODKEY", Some(b"EVILHOST"));
        assert_eq!(refusal(&c, &sign(b"PRODKEY", &hb, 0)), "wrong-host");
        // Bound to a host that is nobody's pin.
        let evil = bound_to(b"EVILHOST");
        assert_eq!(refusal(&evil, &sign(b"PRODKEY", &good, 0)), "wrong-host");
    }

    #[test]
    fn binds_are_single_and_never_forwarded() {
        let t = targets();
        let fresh = Connection::new();
        assert_eq!(
            refusal(&fresh, &session_bind(b"PRODHOST", b"SID", b"S", true)),
            "forwarded-bind"
        );
        let c = bound_to(b"PRODHOST");
        assert_eq!(
            refusal(&c, &session_bind(b"PRODHOST", b"X", b"S", false)),
            "rebind"
        );
        // A bind the agent rejects (bad signature) binds nothing.
        let mut d = Connection::new();
        let Verdict::Forward(p) = d.decide(&t, &session_bind(b"PRODHOST", b"SID", b"S", false))
        else {
            panic!()
        };
        assert_eq!(
            d.reply(p, &[protocol::FAILURE]),
            Outcome::Refused(Refusal::Agent)
        );
        assert!(!d.is_bound());
        let good = userauth(b"SID", b"deploy", b"PRODKEY", None);
        assert_eq!(refusal(&d, &sign(b"PRODKEY", &good, 0)), "unbound");
    }

    #[test]
    fn agent_replies_decide_the_outcome() {
        let mut c = bound_to(b"PRODHOST");
        assert_eq!(
            c.reply(
                Pending::Sign { target: 1 },
                &[protocol::SIGN_RESPONSE, 0, 0, 0, 0]
            ),
            Outcome::Signed { target: 1 }
        );
        assert_eq!(
            c.reply(Pending::Sign { target: 1 }, &[protocol::FAILURE]),
            Outcome::Refused(Refusal::Agent)
        );
        assert_eq!(
            c.reply(Pending::Identities, &[]),
            Outcome::Refused(Refusal::Agent)
        );
        assert_eq!(
            c.reply(
                Pending::Identities,
                &[protocol::IDENTITIES_ANSWER, 0, 0, 0, 0]
            ),
            Outcome::Listed
        );
    }

    #[test]
    fn forbidden_and_malformed_reasons_are_listed() {
        let c = Connection::new();
        for body in [
            vec![protocol::ADD_IDENTITY],
            vec![protocol::REMOVE_ALL_IDENTITIES],
            vec![protocol::LOCK],
            vec![protocol::UNLOCK],
            vec![protocol::ADD_SMARTCARD_KEY],
            vec![1],
            vec![200],
            vec![protocol::SIGN_REQUEST, 0],
            vec![protocol::REQUEST_IDENTITIES, 0],
        ] {
            assert!(REASONS.contains(&refusal(&c, &body)), "{body:?}");
        }
        let mut ext = vec![protocol::EXTENSION];
        string(&mut ext, b"query");
        assert_eq!(refusal(&c, &ext), "extension");
    }
}

//! The agent filter over any byte stream a client could send: framing and
//! parsing never panic, and nothing reaches the agent but a list, a
//! non-forwarding session-bind, or a login signature with an upstream's
//! key on a connection bound to that upstream's pinned host key, for the
//! bound session and the upstream's user.
#![no_main]

use bastion::agent::policy::{Connection, Pending, Target, Verdict};
use bastion::agent::protocol::{self, Request};
use libfuzzer_sys::fuzz_target;

fn targets() -> Vec<Target> {
    vec![Target {
        name: "prod".into(),
        user: "deploy".into(),
        fingerprint: "SHA256:x".into(),
        key: b"PRODKEY".to_vec(),
        host_keys: vec![b"PRODHOST".to_vec()],
    }]
}

fuzz_target!(|data: &[u8]| {
    let t = targets();
    let mut conn = Connection::new();
    let mut bound: Option<(Vec<u8>, Vec<u8>)> = None;
    let mut rest = data;
    // The first byte of each reply the simulated agent gives.
    let mut replies = data.iter().rev().copied();
    while rest.len() >= 4 {
        let header = [rest[0], rest[1], rest[2], rest[3]];
        let Ok(len) = protocol::frame_len(header) else { return };
        let Some(body) = rest.get(4..4 + len) else { return };
        rest = &rest[4 + len..];
        match conn.decide(&t, body) {
            Verdict::Refuse(r) => assert!(bastion::agent::policy::REASONS.contains(&r.reason())),
            Verdict::Forward(p) => {
                match (&p, protocol::parse_request(body)) {
                    (Pending::Identities, Ok(Request::RequestIdentities)) => {}
                    (
                        Pending::Bind { .. },
                        Ok(Request::SessionBind { forwarding: false, .. }),
                    ) => assert!(bound.is_none(), "second bind forwarded"),
                    (Pending::Sign { target }, Ok(Request::Sign { key, data, .. })) => {
                        let (host, sid) = bound.as_ref().expect("sign on an unbound connection");
                        let tg = &t[*target];
                        assert_eq!(key, &tg.key[..]);
                        assert!(tg.host_keys.contains(host));
                        let auth = protocol::parse_userauth(data).expect("not a user-auth request");
                        assert_eq!(auth.session_id, &sid[..]);
                        assert_eq!(auth.user, tg.user.as_bytes());
                        assert_eq!(auth.key, key);
                    }
                    (p, r) => panic!("forwarded {r:?} as {p:?}"),
                }
                let ok = replies.next().unwrap_or(0) & 1 == 1;
                let reply: &[u8] = match (&p, ok) {
                    (Pending::Bind { .. }, true) => &[protocol::SUCCESS],
                    (Pending::Sign { .. }, true) => &[protocol::SIGN_RESPONSE],
                    (Pending::Identities, true) => &[protocol::IDENTITIES_ANSWER, 0, 0, 0, 0],
                    _ => &[protocol::FAILURE],
                };
                if let (Pending::Bind { host_key, session_id }, true) = (&p, ok) {
                    bound = Some((host_key.clone(), session_id.clone()));
                }
                conn.reply(p, reply);
                assert_eq!(conn.is_bound(), bound.is_some());
            }
        }
    }
});

//! The audit trail in the real image: two SSH identities and an HTTP
//! Bearer session in `docker logs` as JSON (parsed by serde_json and by
//! `jq`), a session container's metrics, and no credential anywhere in the
//! logs.

use super::docker::{client_key, curl, require, show, ssh, Container, Network};
use crate::harness::{self, TempDir};
use std::process::Command;
use std::time::Duration;

const TOKEN: &str = "e2e-audit-token-7f3a";

#[test]
fn docker_logs_tell_who_ran_what_in_json() {
    let image = require();
    let tmp = TempDir::new("e2e-audit");
    let (alice, line) = client_key(&tmp, "alice");
    tmp.write("users.d/alice.pub", &line);
    let (bob, line) = client_key(&tmp, "bob");
    tmp.write("users.d/bob.pub", &line);
    let users = format!("{}:/etc/bastion/users.d:ro", tmp.join("users.d").display());
    let net = Network::new("audit");
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-p",
            "127.0.0.1::22",
            "-p",
            "127.0.0.1::8080",
            "-p",
            "127.0.0.1::9100",
            "-v",
            &users,
            "-e",
            "ALLOWED_COMMANDS=echo [a-z]+",
            "-e",
            &format!("HTTP_TOKEN={TOKEN}"),
            "-e",
            "LOG_FORMAT=json",
            "-e",
            "METRICS_PORT=9100",
            &image,
        ],
    );
    let port = bastion.wait_ssh();
    let http = bastion.wait_http();
    let out = ssh(port, &alice, false, &["echo", "alpha"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = ssh(port, &bob, false, &["rm", "-rf", "/"], b"");
    assert_eq!(out.status.code(), Some(126), "{}", show(&out));
    let auth = format!("Authorization: Bearer {TOKEN}");
    let r = curl(
        http,
        "/cgi-bin/run",
        &["-H", &auth, "-H", "X-Bastion-Command: echo bravo"],
    );
    assert_eq!(r.status, 200, "{r:?}");

    let events = || -> Vec<serde_json::Value> {
        bastion
            .logs()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let ends =
        |evs: &[serde_json::Value]| evs.iter().filter(|e| e["event"] == "session.end").count();
    assert!(
        harness::wait_until(Duration::from_secs(10), || ends(&events()) == 3),
        "{}",
        bastion.logs()
    );
    let evs = events();
    let find = |event: &str, identity: &str| {
        evs.iter()
            .find(|e| e["event"] == event && e["identity"] == identity)
            .unwrap_or_else(|| panic!("no {event} of {identity}: {}", bastion.logs()))
    };
    let a = find("command.allow", "alice");
    assert_eq!(a["request"], "echo alpha");
    assert_eq!(a["transport"], "ssh");
    assert!(a["key"].as_str().unwrap().starts_with("SHA256:"));
    let d = find("command.deny", "bob");
    assert_eq!(d["request"], "rm -rf /");
    let h = find("command.allow", "bearer");
    assert_eq!(h["transport"], "http");
    assert_eq!(find("session.end", "bob")["exit"], "126");
    assert_eq!(find("session.end", "bearer")["exit"], "0");

    // The listener's access line is an event too, in the same format.
    let access = evs
        .iter()
        .find(|e| e["event"] == "http.access" && e["path"] == "/cgi-bin/run")
        .unwrap_or_else(|| panic!("no http.access: {}", bastion.logs()));
    assert_eq!(access["status"], 200, "{access}");
    assert_eq!(access["who"], "bearer", "{access}");
    assert!(access["ts"].as_str().is_some(), "{access}");
    // Every line of docker logs is one JSON object: the entrypoint's, the
    // listener's, sshd's and the events alike.
    for l in bastion.logs().lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["ts"].is_string() && v["event"].is_string(), "{l}");
    }

    // jq reads the same lines (a shipper would).
    let logs = bastion.logs();
    let file = tmp.write("logs.txt", &logs);
    let jq = harness::run_expect(
        Command::new("jq")
            .args([
                "-R",
                "-r",
                r#"fromjson? | select(.event == "session.start") | .identity"#,
            ])
            .arg(&file),
        0,
    );
    let mut who: Vec<String> = harness::stdout(&jq).lines().map(str::to_owned).collect();
    who.sort();
    assert_eq!(who, ["alice", "bearer", "bob"]);

    let m = curl(bastion.port(9100), "/metrics", &[]);
    assert_eq!(m.status, 200);
    for want in [
        "bastion_sessions_total{transport=\"ssh\",mode=\"broker\",outcome=\"ok\"} 1",
        "bastion_sessions_total{transport=\"ssh\",mode=\"broker\",outcome=\"denied\"} 1",
        "bastion_sessions_total{transport=\"http\",mode=\"broker\",outcome=\"ok\"} 1",
    ] {
        assert!(m.body.contains(want), "{want}:\n{}", m.body);
    }
    assert!(
        !logs.contains(TOKEN),
        "the token is in docker logs:\n{logs}"
    );
}

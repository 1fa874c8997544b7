//! The container's life: boot errors (exit 78, readable lines), host keys
//! kept across re-creation, the docker socket's group, healthcheck, and a
//! prompt, clean `docker stop` with no zombies left behind.

use super::docker::{
    client_key, curl, docker, eventually, host_keys, require, show, ssh, Container, Network, Proc,
};
use crate::harness::{output, TempDir};
use std::process::Command;
use std::time::Duration;

#[test]
fn config_errors_exit_78_with_one_readable_line_each() {
    let image = require();
    let net = Network::new("cfgerr");
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-e",
            "HTTP_PORT=eighty",
            "-e",
            "COMMAND_LOCK=sometimes",
            &image,
        ],
    );
    assert_eq!(bastion.wait_exit(), 78, "{}", bastion.logs());
    let logs = bastion.logs();
    let lines: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("config error"))
        .collect();
    for var in ["FORCE_COMMAND", "HTTP_PORT", "COMMAND_LOCK"] {
        assert!(
            lines.iter().any(|l| l.contains(var)),
            "no line names {var}:\n{logs}"
        );
    }
    assert!(
        !logs.contains("panicked") && !logs.contains("RUST_BACKTRACE"),
        "{logs}"
    );
    // Not restarted by anything inside: it stays down with 78.
    assert_eq!(bastion.inspect("{{.RestartCount}}"), "0");
}

#[test]
fn host_keys_persist_across_container_recreation() {
    let image = require();
    let tmp = TempDir::new("e2e-hostkeys");
    std::fs::create_dir(tmp.join("keys")).unwrap();
    let mount = format!("{}:/etc/ssh/keys", tmp.join("keys").display());
    let net = Network::new("hostkeys");
    let args = [
        "-p",
        "127.0.0.1::22",
        "-v",
        &mount,
        "-e",
        "FORCE_COMMAND=true",
        &image,
    ];
    let first = {
        let c = Container::run(&net, "first", &args);
        host_keys(c.wait_ssh())
    };
    assert!(
        std::fs::read_dir(tmp.join("keys")).unwrap().count() > 0,
        "no host key written to the bind mount"
    );
    let second = {
        let c = Container::run(&net, "second", &args);
        host_keys(c.wait_ssh())
    };
    assert_eq!(first, second, "host keys changed across re-creation");
    // A fresh container without the mount gets other keys: the check can fail.
    let c = Container::run(
        &net,
        "third",
        &["-p", "127.0.0.1::22", "-e", "FORCE_COMMAND=true", &image],
    );
    assert_ne!(host_keys(c.wait_ssh()), first);
}

#[test]
fn docker_socket_group_lets_the_session_user_docker_exec() {
    let image = require();
    let tmp = TempDir::new("e2e-socket");
    let (key, line) = client_key(&tmp, "ops");
    tmp.write("users.d/ops.pub", &line);
    let gid = String::from_utf8_lossy(
        &output(Command::new("stat").args(["-c", "%g", "/var/run/docker.sock"])).stdout,
    )
    .trim()
    .to_owned();
    let net = Network::new("socket");
    let sibling = Container::sibling(&net, &image);
    let users = format!("{}:/etc/bastion/users.d:ro", tmp.join("users.d").display());
    let force = format!(
        "id -u; id -G; docker exec {} cat /etc/hostname",
        sibling.name
    );
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-p",
            "127.0.0.1::22",
            "-v",
            "/var/run/docker.sock:/var/run/docker.sock",
            "-v",
            &users,
            "-e",
            &format!("FORCE_COMMAND={force}"),
            &image,
        ],
    );
    let port = bastion.wait_ssh();
    let out = ssh(port, &key, false, &[], b"");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"1000"), "not the session user\n{text}");
    assert!(
        lines.get(1).is_some_and(|g| g.split(' ').any(|g| g == gid)),
        "the session user lacks the socket's group {gid}\n{text}"
    );
    assert_eq!(
        lines.get(2).copied(),
        Some(sibling.exec_ok(&["cat", "/etc/hostname"]).as_str()),
        "{text}"
    );
}

fn zombies(c: &Container) -> Vec<Proc> {
    c.processes()
        .into_iter()
        .filter(|p| p.state == 'Z')
        .collect()
}

#[test]
fn healthy_then_docker_stop_ends_cleanly_without_zombies() {
    let image = require();
    let tmp = TempDir::new("e2e-stop");
    let (key, line) = client_key(&tmp, "ops");
    tmp.write("users.d/ops.pub", &line);
    let users = format!("{}:/etc/bastion/users.d:ro", tmp.join("users.d").display());
    let net = Network::new("stop");
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-p",
            "127.0.0.1::22",
            "-p",
            "127.0.0.1::8080",
            "--health-interval",
            "1s",
            "-v",
            &users,
            // Leaves a background grandchild behind: tini must reap it.
            "-e",
            "FORCE_COMMAND=(sleep 0.2 &) ; echo ran",
            // The grandchild holds the lock for 0.2 s; the next run must not
            // be "busy" because of it (the lock is not what this tests).
            "-e",
            "COMMAND_LOCK=none",
            "-e",
            "HTTP_TOKEN=stop-e2e-token",
            &image,
        ],
    );
    let ssh_port = bastion.wait_ssh();
    let http_port = bastion.wait_http();
    assert!(
        eventually(Duration::from_secs(30), || bastion
            .inspect("{{.State.Health.Status}}")
            == "healthy"),
        "never healthy: {}",
        bastion.inspect("{{json .State.Health}}")
    );

    for _ in 0..3 {
        let out = ssh(ssh_port, &key, false, &[], b"");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "ran\n",
            "{}",
            show(&out)
        );
        let r = curl(
            http_port,
            "/cgi-bin/run",
            &["-H", "Authorization: Bearer stop-e2e-token"],
        );
        assert_eq!((r.status, r.body.as_str()), (200, "ran\n"), "{r:?}");
    }

    let procs = bastion.processes();
    let by_pid = |pid| procs.iter().find(|p| p.pid == pid);
    assert_eq!(
        by_pid(1).map(|p| p.comm.as_str()),
        Some("tini"),
        "{procs:?}"
    );
    assert!(
        procs
            .iter()
            .any(|p| p.ppid == 1 && p.comm == "sshd" && p.uid == 0),
        "sshd is not tini's child: {procs:?}"
    );
    let sshd = procs
        .iter()
        .find(|p| p.ppid == 1 && p.comm == "sshd")
        .unwrap();
    let listener: Vec<&Proc> = procs.iter().filter(|p| p.comm == "bastion-cgi").collect();
    // tini -g signals the process group of its child, which sshd leads: the
    // listener must be in it, or `docker stop` would not reach it.
    assert!(
        listener.iter().all(|p| p.pgrp == sshd.pid) && sshd.pgrp == sshd.pid,
        "the HTTP listener is outside the group tini signals: {procs:?}"
    );
    assert!(!listener.is_empty(), "no HTTP listener: {procs:?}");
    assert!(
        listener.iter().all(|p| p.uid == 1000),
        "the HTTP listener runs as root: {procs:?}"
    );
    assert!(
        eventually(Duration::from_secs(5), || zombies(&bastion).is_empty()),
        "zombies: {:?}",
        zombies(&bastion)
    );

    // SIGTERM must end it within the 2 s grace; past it docker would
    // SIGKILL and the exit code would be 137.
    docker(&["stop", "-t", "2", &bastion.name]);
    let code: i32 = bastion.inspect("{{.State.ExitCode}}").parse().unwrap();
    assert_ne!(
        code,
        137,
        "killed after the grace period\n{}",
        bastion.logs()
    );
    // sshd handles SIGTERM by exiting 0, and tini passes its status on.
    assert_eq!(code, 0, "not a clean stop\n{}", bastion.logs());
    assert_eq!(bastion.inspect("{{.State.OOMKilled}}"), "false");
    // sshd's own "Received signal 15" line is not asserted: the container
    // ends the moment sshd exits (tini follows its child), and the
    // monitor, which relays sshd's log, may not have written it by then
    // (README, "The monitor"). Exit 0 rather than 137 is the proof.
}

#[test]
fn healthcheck_follows_ssh_port() {
    let image = require();
    let net = Network::new("health");
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-p",
            "127.0.0.1::2200",
            "--health-interval",
            "1s",
            "-e",
            "SSH_PORT=2200",
            "-e",
            "FORCE_COMMAND=true",
            &image,
        ],
    );
    let port = bastion.port(2200);
    assert!(
        eventually(Duration::from_secs(30), || super::docker::banner(port)
            .is_some()),
        "sshd does not answer on SSH_PORT\n{}",
        bastion.logs()
    );
    assert!(
        eventually(Duration::from_secs(30), || bastion
            .inspect("{{.State.Health.Status}}")
            == "healthy"),
        "never healthy on SSH_PORT=2200: {}",
        bastion.inspect("{{json .State.Health}}")
    );
}

#[test]
fn a_killed_http_listener_comes_back_and_health_checks_are_quiet() {
    let image = require();
    let net = Network::new("health-http");
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-p",
            "127.0.0.1::22",
            "-p",
            "127.0.0.1::8080",
            "--health-interval",
            "1s",
            "--health-retries",
            "2",
            "-e",
            "FORCE_COMMAND=true",
            "-e",
            "HTTP_TOKEN=health-e2e-token",
            &image,
        ],
    );
    bastion.wait_ssh();
    bastion.wait_http();
    let health = || bastion.inspect("{{.State.Health.Status}}");
    assert!(
        eventually(Duration::from_secs(30), || health() == "healthy"),
        "never healthy: {}",
        bastion.inspect("{{json .State.Health}}")
    );

    let procs = bastion.processes();
    let listener = procs
        .iter()
        .find(|p| p.comm == "bastion-cgi")
        .unwrap_or_else(|| panic!("no HTTP listener: {procs:?}"));
    bastion.exec_ok(&["kill", "-KILL", &listener.pid.to_string()]);

    // The monitor holds the port and starts the listener again on the same
    // socket: a new process answers, and the check (which asks /healthz of
    // it) stays or turns healthy again.
    let old = listener.pid;
    assert!(
        eventually(Duration::from_secs(30), || bastion
            .processes()
            .iter()
            .any(|p| p.comm == "bastion-cgi" && p.pid != old)),
        "the HTTP listener was not started again: {:?}",
        bastion.processes()
    );
    bastion.wait_http();
    assert!(
        eventually(Duration::from_secs(30), || health() == "healthy"),
        "not healthy with the listener back: {}",
        bastion.inspect("{{json .State.Health}}")
    );
    assert!(bastion.running());
    // The dead listener is reaped (by the monitor, its parent).
    assert!(
        eventually(Duration::from_secs(5), || zombies(&bastion).is_empty()),
        "zombies: {:?}",
        zombies(&bastion)
    );
    // Health checks (one a second here) ask /healthz but write no access
    // line; only this test's own unmarked requests are logged.
    let logged = || bastion.logs().matches("path=/healthz").count();
    let before = logged();
    let checks =
        || bastion.inspect("{{len .State.Health.Log}}{{range .State.Health.Log}}{{.Start}}{{end}}");
    let seen = checks();
    assert!(
        eventually(Duration::from_secs(30), || checks() != seen),
        "no health check ran"
    );
    assert_eq!(logged(), before, "{}", bastion.logs());
}

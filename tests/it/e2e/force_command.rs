//! Force-command mode in a container: an interactive `docker exec -it` into
//! a sibling over `ssh -tt`, and a deploy-style command over HTTP Bearer.

use super::docker::{client_key, curl, require, show, ssh, Container, Network};
use crate::harness::TempDir;

const SOCKET: &str = "/var/run/docker.sock:/var/run/docker.sock";

#[test]
fn docker_exec_it_into_a_sibling_over_ssh_tt() {
    let image = require();
    let tmp = TempDir::new("e2e-force");
    let (key, line) = client_key(&tmp, "alice");
    tmp.write("users.d/alice.pub", &line);
    let net = Network::new("force");
    let sibling = Container::sibling(&net, &image);
    let force = format!("docker exec -it {} sh", sibling.name);
    let users = format!("{}:/etc/bastion/users.d:ro", tmp.join("users.d").display());
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-p",
            "127.0.0.1::22",
            "-v",
            SOCKET,
            "-v",
            &users,
            "-e",
            &format!("FORCE_COMMAND={force}"),
            &image,
        ],
    );
    let port = bastion.wait_ssh();

    // The client's own request is ignored: the session is the sibling's sh,
    // on a terminal.
    let out = ssh(
        port,
        &key,
        true,
        &["echo", "IGNORED-REQUEST"],
        b"echo marker-$((6*7)); tty; cat /etc/hostname; exit\n",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text.contains("marker-42"), "{}", show(&out));
    assert!(
        text.contains("/dev/pts/"),
        "no terminal in the sibling\n{}",
        show(&out)
    );
    let hostname = sibling.exec_ok(&["cat", "/etc/hostname"]);
    assert!(
        text.contains(&hostname),
        "not the sibling's shell\n{}",
        show(&out)
    );
    assert!(!text.contains("IGNORED-REQUEST"), "{}", show(&out));
}

#[test]
fn deploy_command_over_http_with_a_bearer_token() {
    let image = require();
    let net = Network::new("deploy");
    let sibling = Container::sibling(&net, &image);
    // A deploy step with shell syntax, as operators write them.
    let force = format!(
        "echo deploying; docker exec {s} sh -c 'echo v2 > /tmp/deployed' && echo deployed-$(docker exec {s} cat /tmp/deployed)",
        s = sibling.name
    );
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-p",
            "127.0.0.1::22",
            "-p",
            "127.0.0.1::8080",
            "-v",
            SOCKET,
            "-e",
            &format!("FORCE_COMMAND={force}"),
            "-e",
            "HTTP_TOKEN=e2e-token-0123456789",
            &image,
        ],
    );
    let port = bastion.wait_http();

    // Wrong or missing credentials: 401 with a challenge, nothing runs.
    for auth in [
        vec![],
        vec!["-H", "Authorization: Bearer e2e-token-012345678"],
        vec!["-H", "Authorization: Bearer e2e-token-0123456789x"],
        vec!["-u", "agent:e2e-token-0123456789"],
    ] {
        let r = curl(port, "/cgi-bin/run", &auth);
        assert_eq!(r.status, 401, "{auth:?}: {r:?}");
        assert!(
            r.headers.to_ascii_lowercase().contains("www-authenticate:"),
            "{r:?}"
        );
        assert!(!r.body.contains("deploying"), "{r:?}");
    }
    let absent = sibling.exec(&["test", "-e", "/tmp/deployed"]);
    assert_eq!(
        absent.status.code(),
        Some(1),
        "a refused request ran the deploy"
    );

    // X-Bastion-Command is ignored in force-command mode.
    let r = curl(
        port,
        "/cgi-bin/run",
        &[
            "-H",
            "Authorization: Bearer e2e-token-0123456789",
            "-H",
            "X-Bastion-Command: rm -rf /",
            "-X",
            "POST",
        ],
    );
    assert_eq!((r.status, r.curl), (200, 0), "{r:?}");
    assert!(r.body.contains("deploying\n"), "{r:?}");
    assert!(r.body.contains("deployed-v2"), "{r:?}");
    assert!(
        r.headers.to_ascii_lowercase().contains("text/plain"),
        "{r:?}"
    );
    assert_eq!(sibling.exec_ok(&["cat", "/tmp/deployed"]), "v2");
}

#[test]
fn token_from_a_root_only_file_like_a_docker_secret() {
    // The examples' pattern: HTTP_TOKEN_FILE pointing at a mounted secret.
    let image = require();
    let tmp = TempDir::new("e2e-secret");
    let secret = tmp.write("token.txt", "file-token-0123456789\n");
    let net = Network::new("secret");

    // Readable by the session user: refused at boot, secret not printed.
    crate::harness::set_mode(&secret, 0o644);
    let mount = format!("{}:/run/secrets/token:ro", secret.display());
    let args = [
        "-p",
        "127.0.0.1::8080",
        "-v",
        &mount,
        "-e",
        "FORCE_COMMAND=echo reloaded",
        "-e",
        "HTTP_TOKEN_FILE=/run/secrets/token",
        &image,
    ];
    let open = Container::run(&net, "open", &args);
    assert_eq!(open.wait_exit(), 78, "{}", open.logs());
    let logs = open.logs();
    assert!(logs.contains("HTTP_TOKEN_FILE"), "{logs}");
    assert!(
        !logs.contains("file-token-0123456789"),
        "secret in the logs:\n{logs}"
    );

    // Root-only (chown root:root, chmod 0400): the listener uses it, and a
    // session cannot read it back.
    crate::harness::set_mode(&secret, 0o400);
    let bastion = Container::run(&net, "bastion", &args);
    let port = bastion.wait_http();
    let r = curl(
        port,
        "/cgi-bin/run",
        &["-H", "Authorization: Bearer file-token-0123456789"],
    );
    assert_eq!((r.status, r.body.as_str()), (200, "reloaded\n"), "{r:?}");
    let peek = bastion.exec(&[
        "su",
        "-s",
        "/bin/sh",
        "agent",
        "-c",
        "cat /run/secrets/token; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline",
    ]);
    let seen = format!(
        "{}{}",
        String::from_utf8_lossy(&peek.stdout),
        String::from_utf8_lossy(&peek.stderr)
    );
    assert!(seen.contains("Permission denied"), "{seen}");
    assert!(
        !seen.contains("file-token-0123456789"),
        "the session user can read the token:\n{seen}"
    );
}

#[test]
fn one_lock_for_ssh_and_http_busy_then_free() {
    let image = require();
    let tmp = TempDir::new("e2e-lock");
    let (key, line) = client_key(&tmp, "ops");
    tmp.write("users.d/ops.pub", &line);
    let users = format!("{}:/etc/bastion/users.d:ro", tmp.join("users.d").display());
    let net = Network::new("lock");
    // The first run holds the lock until the test lets it go.
    let bastion = Container::run(
        &net,
        "bastion",
        &[
            "-p",
            "127.0.0.1::22",
            "-p",
            "127.0.0.1::8080",
            "-v",
            &users,
            "-e",
            "FORCE_COMMAND=touch /tmp/started; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo finished",
            "-e",
            "HTTP_TOKEN=lock-e2e-token",
            &image,
        ],
    );
    let ssh_port = bastion.wait_ssh();
    let http_port = bastion.wait_http();
    let first = std::thread::spawn(move || ssh(ssh_port, &key, false, &[], b""));
    assert!(
        super::docker::eventually(std::time::Duration::from_secs(30), || bastion
            .exec(&["test", "-e", "/tmp/started"])
            .status
            .success()),
        "the first run never started\n{}",
        bastion.logs()
    );

    // Held by the SSH session: HTTP gets the friendly busy line, status 200.
    let auth = ["-H", "Authorization: Bearer lock-e2e-token"];
    let r = curl(http_port, "/cgi-bin/run", &auth);
    assert_eq!((r.status, r.curl), (200, 0), "{r:?}");
    assert_eq!(r.body, "busy: another run is in progress\n", "{r:?}");

    bastion.exec_ok(&["touch", "/tmp/go"]);
    let out = first.join().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "finished\n",
        "{}",
        show(&out)
    );
    // Released with the session: the next run goes through.
    let r = curl(http_port, "/cgi-bin/run", &auth);
    assert_eq!((r.status, r.body.as_str()), (200, "finished\n"), "{r:?}");
}

//! The quickstart example runs as its README says, with docker-compose and
//! nothing else (its image swapped for the test image, its port for a free
//! one).

use super::docker::{banner, client_key, host_keys, require, show, ssh, unique};
use crate::harness::{describe, free_port, output, repo, TempDir};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Project<'a> {
    name: String,
    dir: &'a Path,
    image: String,
    port: u16,
}

impl Project<'_> {
    fn compose(&self, args: &[&str]) -> std::process::Output {
        let mut c = Command::new("docker-compose");
        c.current_dir(self.dir)
            .args(["-p", &self.name, "-f", "docker-compose.yml"])
            .args(args)
            .env("BASTION_IMAGE", &self.image)
            .env("BASTION_SSH_PORT", self.port.to_string());
        let out = output(&mut c);
        if !out.status.success() {
            panic!("docker-compose failed\n{}", describe(&c, &out));
        }
        out
    }
}

impl Drop for Project<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = std::panic::catch_unwind(|| {
                let out = self.compose(&["logs", "--no-color"]);
                eprintln!("{}", String::from_utf8_lossy(&out.stdout));
            });
        }
        let _ = std::panic::catch_unwind(|| self.compose(&["down", "-v", "-t", "2"]));
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn quickstart_compose_up_and_ssh() {
    let image = require();
    let tmp = TempDir::new("e2e-quickstart");
    let dir = tmp.join("quickstart");
    copy_dir(&repo().join("examples/quickstart"), &dir);
    let (key, line) = client_key(&tmp, "me");
    std::fs::write(dir.join("users.d/me.pub"), line).unwrap();
    let project = Project {
        name: unique("qs").replace('-', ""),
        dir: &dir,
        image,
        port: free_port(),
    };
    project.compose(&["up", "-d"]);
    wait_banner(project.port);
    let out = ssh(project.port, &key, false, &["rm", "-rf", "/"], b"");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("Hello agent, this is the bastion on ") && text.ends_with(". Bye.\n"),
        "{}",
        show(&out)
    );

    // As its README says: the host keys survive `down` + `up` (not `down -v`).
    let before = host_keys(project.port);
    project.compose(&["down", "-t", "2"]);
    project.compose(&["up", "-d"]);
    wait_banner(project.port);
    assert_eq!(
        host_keys(project.port),
        before,
        "host keys changed across down/up"
    );
}

fn wait_banner(port: u16) {
    let end = Instant::now() + Duration::from_secs(60);
    while banner(port).is_none() {
        assert!(Instant::now() < end, "the quickstart's sshd never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
}

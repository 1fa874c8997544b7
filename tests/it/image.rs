//! The image contract, read from the files themselves: the Alpine
//! `Dockerfile` (what ships) and `tests/e2e/Dockerfile.test` (what the e2e
//! suite runs) must agree on users, uid/gid, paths, ports, healthcheck,
//! entrypoint and the binary set, and both must match SPEC section 9. Also
//! the bake file, and every example's compose file through
//! `docker-compose config`.

use crate::harness::{describe, output, repo, TempDir};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// One Dockerfile instruction with its continuation lines joined.
#[derive(Debug, Clone)]
struct Instr {
    keyword: String,
    args: String,
}

/// Splits a Dockerfile into instructions: comments and blank lines dropped
/// (also inside a continuation, as Docker does), `\` continuations joined.
fn instructions(text: &str) -> Vec<Instr> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let joined = std::mem::take(&mut cur);
        let joined = joined.trim();
        if joined.is_empty() {
            continue;
        }
        let (kw, rest) = joined
            .split_once(char::is_whitespace)
            .unwrap_or((joined, ""));
        out.push(Instr {
            keyword: kw.to_ascii_uppercase(),
            args: rest.trim().to_owned(),
        });
    }
    out
}

/// What an image promises, as far as an operator or the other binaries can
/// tell. Two Dockerfiles that produce equal `Facts` are interchangeable for
/// the e2e suite.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Facts {
    /// `ARG` defaults of the final stage that shape the image.
    args: BTreeMap<String, String>,
    user: Option<UserFacts>,
    /// System accounts (`-S`/`-r`): the upstream agent's `bastion`.
    system_users: BTreeSet<String>,
    /// `install -d` directories with their mode and owner.
    dirs: BTreeMap<String, String>,
    /// Files copied into `/usr/local/bin/`.
    binaries: BTreeSet<String>,
    /// Every `chown`/`chmod` (the binaries' owner and mode, and no
    /// group/world-writable directory that sshd checks).
    perms: BTreeSet<String>,
    copies_rootfs: bool,
    exposed: BTreeSet<u16>,
    healthcheck: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<String>,
    user_instr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct UserFacts {
    name: String,
    uid: String,
    group: String,
    gid: String,
    home: String,
    shell: String,
    password: String,
}

/// Directories that exist only because of a distribution difference,
/// explained in Dockerfile.test (Debian's sshd privilege-separation dir).
const DEBIAN_ONLY_DIRS: &[&str] = &["/run/sshd"];

fn facts(text: &str) -> Facts {
    let all = instructions(text);
    let last_from = all
        .iter()
        .rposition(|i| i.keyword == "FROM")
        .expect("a FROM instruction");
    let stage = &all[last_from..];
    let mut f = Facts {
        args: BTreeMap::new(),
        user: None,
        system_users: BTreeSet::new(),
        dirs: BTreeMap::new(),
        binaries: BTreeSet::new(),
        perms: BTreeSet::new(),
        copies_rootfs: false,
        exposed: BTreeSet::new(),
        healthcheck: None,
        entrypoint: None,
        cmd: None,
        user_instr: None,
    };
    let mut group_gid: BTreeMap<String, String> = BTreeMap::new();
    let mut user_raw: Option<(String, String, String, String, String)> = None;
    let mut passwords: BTreeMap<String, String> = BTreeMap::new();
    for i in stage {
        match i.keyword.as_str() {
            "ARG" => {
                if let Some((k, v)) = i.args.split_once('=') {
                    if k.starts_with("SSH_") {
                        f.args.insert(k.to_owned(), v.to_owned());
                    }
                }
            }
            "RUN" => {
                for cmd in i.args.split("&&") {
                    let words = shell_words::split(cmd.trim())
                        .unwrap_or_else(|e| panic!("cannot split `{cmd}`: {e}"));
                    run_command(
                        &words,
                        &mut f,
                        &mut group_gid,
                        &mut user_raw,
                        &mut passwords,
                    );
                }
            }
            "COPY" => {
                let words: Vec<&str> = i
                    .args
                    .split_whitespace()
                    .filter(|w| !w.starts_with("--"))
                    .collect();
                let (dest, srcs) = words.split_last().expect("COPY has a destination");
                if *dest == "/usr/local/bin/" {
                    for s in srcs {
                        f.binaries
                            .insert(s.rsplit('/').next().unwrap_or(s).to_owned());
                    }
                } else if *dest == "/" && srcs == ["rootfs/"] {
                    f.copies_rootfs = true;
                }
            }
            "EXPOSE" => {
                for p in i.args.split_whitespace() {
                    f.exposed
                        .insert(p.trim_end_matches("/tcp").parse().unwrap());
                }
            }
            "HEALTHCHECK" => {
                let cmd = i.args.split_once("CMD").map(|(_, c)| c.trim().to_owned());
                f.healthcheck = cmd;
            }
            "ENTRYPOINT" => {
                f.entrypoint = Some(
                    serde_json::from_str(&i.args)
                        .unwrap_or_else(|e| panic!("ENTRYPOINT is not exec form: {e}")),
                );
            }
            "CMD" => f.cmd = Some(i.args.clone()),
            "USER" => f.user_instr = Some(i.args.clone()),
            _ => {}
        }
    }
    if let Some((name, uid, group, home, shell)) = user_raw {
        f.user = Some(UserFacts {
            gid: group_gid.get(&group).cloned().unwrap_or_default(),
            password: passwords.get(&name).cloned().unwrap_or_default(),
            name,
            uid,
            group,
            home,
            shell,
        });
    }
    f
}

/// Value of `-x VALUE` in `words`.
fn flag(words: &[String], names: &[&str]) -> Option<String> {
    words
        .windows(2)
        .find(|w| names.contains(&w[0].as_str()))
        .map(|w| w[1].clone())
}

/// Reads one shell command of a RUN line into `f`. Busybox (`addgroup`,
/// `adduser`) and shadow (`groupadd`, `useradd`) spellings map to the same
/// facts.
fn run_command(
    words: &[String],
    f: &mut Facts,
    group_gid: &mut BTreeMap<String, String>,
    user: &mut Option<(String, String, String, String, String)>,
    passwords: &mut BTreeMap<String, String>,
) {
    let Some(prog) = words.first() else { return };
    let last = words.last().cloned().unwrap_or_default();
    match prog.as_str() {
        "addgroup" | "groupadd" => {
            group_gid.insert(last, flag(words, &["-g"]).unwrap_or_default());
        }
        "adduser" | "useradd" if words.iter().any(|w| w == "-S" || w == "-r") => {
            f.system_users.insert(last);
        }
        "adduser" | "useradd" => {
            let group = if prog == "adduser" {
                flag(words, &["-G"])
            } else {
                flag(words, &["-g"])
            };
            let home = if prog == "adduser" {
                flag(words, &["-h"])
            } else {
                flag(words, &["-d"])
            };
            *user = Some((
                last,
                flag(words, &["-u"]).unwrap_or_default(),
                group.unwrap_or_default(),
                home.unwrap_or_default(),
                flag(words, &["-s"]).unwrap_or_default(),
            ));
        }
        "sed" if words.last().map(String::as_str) == Some("/etc/shadow") => {
            // s/^NAME:[^:]*:/NAME:PASSWORD:/
            let expr = &words[words.len() - 2];
            let parts: Vec<&str> = expr.split('/').collect();
            if parts.len() >= 3 {
                if let Some(name) = parts[1].strip_prefix('^').and_then(|r| r.split(':').next()) {
                    let pw = parts[2].split(':').nth(1).unwrap_or_default();
                    passwords.insert(name.to_owned(), pw.to_owned());
                }
            }
        }
        "install" if words.iter().any(|w| w == "-d") => {
            let mode = flag(words, &["-m"]).unwrap_or_default();
            let owner = format!(
                "{}:{}",
                flag(words, &["-o"]).unwrap_or_default(),
                flag(words, &["-g"]).unwrap_or_default()
            );
            let mut skip = false;
            for w in &words[1..] {
                if skip {
                    skip = false;
                    continue;
                }
                match w.as_str() {
                    "-m" | "-o" | "-g" => skip = true,
                    "-d" => {}
                    dir => {
                        f.dirs.insert(dir.to_owned(), format!("{mode} {owner}"));
                    }
                }
            }
        }
        "chown" | "chmod" => {
            f.perms.insert(words.join(" "));
        }
        _ => {}
    }
}

fn read(rel: &str) -> String {
    let p = repo().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// The `[[bin]]` names of Cargo.toml, sorted.
pub fn cargo_bins() -> BTreeSet<String> {
    let toml = read("Cargo.toml");
    let mut bins = BTreeSet::new();
    let mut in_bin = false;
    for line in toml.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_bin = t == "[[bin]]";
        } else if in_bin {
            if let Some(v) = t.strip_prefix("name") {
                let v = v.trim().trim_start_matches('=').trim().trim_matches('"');
                bins.insert(v.to_owned());
            }
        }
    }
    bins
}

/// Every way the two files may differ, as operator-readable lines.
fn drift(alpine: &Facts, test: &Facts) -> Vec<String> {
    let mut test = test.clone();
    for d in DEBIAN_ONLY_DIRS {
        test.dirs.remove(*d);
    }
    let mut d = Vec::new();
    macro_rules! same {
        ($field:ident) => {
            if alpine.$field != test.$field {
                d.push(format!(
                    "{}: Dockerfile has {:?}, Dockerfile.test has {:?}",
                    stringify!($field),
                    alpine.$field,
                    test.$field
                ));
            }
        };
    }
    same!(args);
    same!(user);
    same!(system_users);
    same!(dirs);
    same!(binaries);
    same!(perms);
    same!(copies_rootfs);
    same!(exposed);
    same!(healthcheck);
    same!(entrypoint);
    same!(cmd);
    same!(user_instr);
    d
}

fn alpine_text() -> String {
    read("Dockerfile")
}

fn test_text() -> String {
    read("tests/e2e/Dockerfile.test")
}

#[test]
fn dockerfiles_do_not_drift_apart() {
    let d = drift(&facts(&alpine_text()), &facts(&test_text()));
    assert!(
        d.is_empty(),
        "Dockerfile and tests/e2e/Dockerfile.test drift apart:\n{}",
        d.join("\n")
    );
}

#[test]
fn drift_in_any_fact_is_reported() {
    let alpine = alpine_text();
    let test = test_text();
    // Each edit to the test image must be caught by `drift`.
    let edits: &[(&str, &str)] = &[
        ("ARG SSH_UID=1000", "ARG SSH_UID=1001"),
        ("ARG SSH_GID=1000", "ARG SSH_GID=0"),
        ("-u \"${SSH_UID}\"", "-u \"${SSH_GID}\""),
        ("-s /bin/sh agent", "-s /sbin/nologin agent"),
        ("-d /home/agent", "-d /root"),
        ("agent:*:", "agent:!:"),
        ("groupadd -g \"${SSH_GID}\" agent", "groupadd -g 0 agent"),
        (
            "-s /usr/sbin/nologin bastion",
            "-s /usr/sbin/nologin bastian",
        ),
        ("install -d -m 0700", "install -d -m 0755"),
        (" /run/bastion \\", " \\"),
        (" bin/bastion-agent-proxy bin/", " bin/"),
        (" bin/bastion-monitor bin/", " bin/"),
        (" bin/bastion-gate /usr/local/bin/", " /usr/local/bin/"),
        ("chmod 0755 /usr/local/bin", "chmod 0775 /usr/local/bin"),
        ("chmod go-w / /etc /usr", "chmod go-w /etc /usr"),
        ("COPY rootfs/ /", "COPY rootfs/ /srv/"),
        ("EXPOSE 22 8080", "EXPOSE 22"),
        ("SSH_PORT:-22", "SSH_PORT:-2222"),
        ("\"-g\", \"--\"", "\"--\""),
        ("ENTRYPOINT", "USER agent\nENTRYPOINT"),
    ];
    let base = facts(&alpine);
    for (from, to) in edits {
        assert!(
            test.contains(from),
            "Dockerfile.test no longer contains {from:?}"
        );
        let edited = test.replacen(from, to, 1);
        assert!(
            !drift(&base, &facts(&edited)).is_empty(),
            "changing {from:?} to {to:?} in Dockerfile.test went unnoticed"
        );
    }
}

#[test]
fn image_matches_the_spec() {
    let f = facts(&alpine_text());
    assert_eq!(f.args.get("SSH_UID").map(String::as_str), Some("1000"));
    assert_eq!(f.args.get("SSH_GID").map(String::as_str), Some("1000"));
    let u = f
        .user
        .clone()
        .expect("the Dockerfile creates the session user");
    assert_eq!(
        u,
        UserFacts {
            name: "agent".into(),
            uid: "${SSH_UID}".into(),
            group: "agent".into(),
            gid: "${SSH_GID}".into(),
            home: "/home/agent".into(),
            shell: "/bin/sh".into(),
            password: "*".into(),
        }
    );
    assert!(
        f.system_users.contains("bastion"),
        "the upstream agent's account bastion is missing"
    );
    assert_eq!(f.exposed, BTreeSet::from([22, 8080]));
    assert_eq!(
        f.entrypoint.as_deref(),
        Some(
            &[
                "/sbin/tini",
                "-g",
                "--",
                "/usr/local/bin/bastion-entrypoint"
            ]
            .map(String::from)[..]
        )
    );
    assert_eq!(
        f.binaries,
        cargo_bins(),
        "the image must carry exactly the binaries of Cargo.toml"
    );
    for p in [
        "chown root:root /usr/local/bin/bastion-*",
        "chmod 0755 /usr/local/bin/bastion-*",
        "chmod go-w / /etc /usr",
        "chmod -R go-w /usr/local /etc/bastion /etc/ssh",
    ] {
        assert!(f.perms.contains(p), "`{p}` is missing: {:?}", f.perms);
    }
    assert!(f.copies_rootfs, "COPY rootfs/ / is missing");
    assert!(f.healthcheck.is_some(), "HEALTHCHECK is missing");
    assert_eq!(f.user_instr, None, "sshd needs root: no USER instruction");
    for d in ["/etc/bastion/users.d", "/etc/ssh/keys"] {
        assert!(f.dirs.contains_key(d), "{d} is not created");
    }
}

#[test]
fn alpine_build_is_static_multi_stage_with_the_spec_packages() {
    let text = alpine_text();
    let all = instructions(&text);
    let froms: Vec<&Instr> = all.iter().filter(|i| i.keyword == "FROM").collect();
    assert!(
        froms.len() >= 2,
        "multi-stage: a build stage and a final stage"
    );
    assert_eq!(froms.last().unwrap().args, "alpine:${ALPINE_VERSION}");
    assert!(all
        .iter()
        .any(|i| i.keyword == "ARG" && i.args == "ALPINE_VERSION=3.21"));
    assert!(text.contains("+crt-static"), "binaries must be static");
    // RUSTFLAGS with +crt-static but no --target would also hit proc-macro
    // crates, which cannot be static on musl: the build would fail.
    assert!(text.contains("cargo build --release --locked --bins --target"));
    let apk = all
        .iter()
        .rev()
        .find(|i| i.keyword == "RUN" && i.args.contains("apk add"))
        .expect("the final stage installs packages");
    let words: BTreeSet<&str> = apk
        .args
        .split("&&")
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    for p in [
        "openssh-server",
        "docker-cli",
        "docker-cli-compose",
        "tini",
        "bash",
        "ca-certificates",
        "tzdata",
    ] {
        assert!(
            words.contains(p),
            "package {p} is missing from `{}`",
            apk.args
        );
    }
    assert!(words.contains("--no-cache"));
    for l in [
        "org.opencontainers.image.title",
        "org.opencontainers.image.description",
        "org.opencontainers.image.licenses",
        "org.opencontainers.image.version",
        "org.opencontainers.image.revision",
        "org.opencontainers.image.created",
    ] {
        assert!(
            all.iter()
                .any(|i| i.keyword == "LABEL" && i.args.contains(l)),
            "OCI label {l} is missing"
        );
    }
    assert!(
        !text.contains("# syntax="),
        "no BuildKit-only syntax: the classic builder must build it"
    );
    let ignore = read(".dockerignore");
    for keep in ["!Cargo.toml", "!Cargo.lock", "!bin/", "!src/", "!rootfs/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == keep),
            ".dockerignore drops {keep}"
        );
    }
}

#[test]
fn bake_file_tags_and_platforms() {
    let hcl = read("docker-bake.hcl");
    for needle in [
        "\"${IMAGE}:latest\"",
        "\"${IMAGE}:alpine${ALPINE_VERSION}\"",
        "\"linux/amd64\"",
        "\"linux/arm64\"",
        "dockerfile = \"Dockerfile\"",
    ] {
        assert!(hcl.contains(needle), "docker-bake.hcl lacks {needle}");
    }
    let default_of = |var: &str| -> Option<String> {
        let start = hcl.find(&format!("variable \"{var}\""))?;
        let rest = &hcl[start..];
        let line = rest.lines().find(|l| l.trim().starts_with("default"))?;
        Some(line.split('"').nth(1)?.to_owned())
    };
    assert_eq!(default_of("ALPINE_VERSION").as_deref(), Some("3.21"));
    assert_eq!(default_of("IMAGE").as_deref(), Some("docker-bastion"));
}

/// The example directories, each with a compose file and a README.
fn examples() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    v.sort();
    v
}

#[test]
fn examples_are_the_ones_of_the_spec() {
    let names: BTreeSet<String> = examples()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    let want: BTreeSet<String> = [
        "quickstart",
        "wordpress-shell",
        "nginx-reload-webhook",
        "mailserver-broker",
        "fake-vps",
        "session-vps",
        "broker-in-session",
        "deploy-over-ssh",
        "session-with-upstream",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, want);
    for dir in examples() {
        for f in ["docker-compose.yml", "README.md"] {
            assert!(dir.join(f).is_file(), "{} lacks {f}", dir.display());
        }
    }
}

fn compose_config(dir: &Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new("docker-compose");
    c.current_dir(dir)
        .args(["-f", "docker-compose.yml", "config"])
        .env_remove("BASTION_IMAGE");
    for (k, v) in env {
        c.env(k, v);
    }
    let out = output(&mut c);
    if !out.status.success() {
        panic!("docker-compose config failed\n{}", describe(&c, &out));
    }
    out
}

#[test]
fn every_example_compose_file_passes_docker_compose_config() {
    for dir in examples() {
        let out = compose_config(&dir, &[]);
        let yaml = String::from_utf8_lossy(&out.stdout);
        assert!(
            yaml.contains("image: docker-bastion:latest"),
            "{}: the bastion service must use docker-bastion:latest by default\n{yaml}",
            dir.display()
        );
        // Published ports stay on loopback unless the operator says otherwise.
        assert!(
            !yaml.contains("0.0.0.0"),
            "{}: ports must not be published on every address\n{yaml}",
            dir.display()
        );
    }
}

#[test]
fn a_broken_compose_file_fails_docker_compose_config() {
    // The check above must be able to fail.
    let tmp = TempDir::new("compose");
    tmp.write(
        "docker-compose.yml",
        "services:\n  bastion:\n    image: x\n    ports: 22\n",
    );
    let mut c = Command::new("docker-compose");
    c.current_dir(tmp.path())
        .args(["-f", "docker-compose.yml", "config"]);
    let out = output(&mut c);
    assert!(!out.status.success(), "{}", describe(&c, &out));
}

/// The build stage's `COPY` sources (relative to the context).
fn build_stage_inputs(text: &str) -> Vec<String> {
    let all = instructions(text);
    let last_from = all.iter().rposition(|i| i.keyword == "FROM").unwrap();
    let mut inputs = Vec::new();
    for i in &all[..last_from] {
        if i.keyword == "COPY" && !i.args.contains("--from") {
            let words: Vec<&str> = i.args.split_whitespace().collect();
            let (_, srcs) = words.split_last().unwrap();
            inputs.extend(srcs.iter().map(|s| s.trim_end_matches('/').to_owned()));
        }
    }
    inputs
}

#[test]
fn build_stage_context_is_enough_to_build_the_binaries() {
    // Exactly what the Alpine build stage copies, built the way it builds
    // (minus the musl target): a file the sources need but the Dockerfile
    // leaves out (an include_str!, a build script) fails here.
    let inputs = build_stage_inputs(&alpine_text());
    for want in ["Cargo.toml", "Cargo.lock", "bin", "src"] {
        assert!(
            inputs.iter().any(|i| i == want),
            "the build stage lacks {want}"
        );
    }
    let tmp = TempDir::new("build-context");
    for input in &inputs {
        let mut c = Command::new("cp");
        c.arg("-a").arg(repo().join(input)).arg(tmp.join(input));
        let out = output(&mut c);
        assert!(out.status.success(), "{}", describe(&c, &out));
    }
    // Cargo.toml names the integration-test target; the context has none
    // and must not need it for `--bins`.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
        .join("image-build-context");
    let mut c = Command::new(env!("CARGO"));
    c.current_dir(tmp.path())
        .args(["check", "--locked", "--offline", "--bins", "--quiet"])
        .env("CARGO_TARGET_DIR", &target);
    let out = output(&mut c);
    assert!(
        out.status.success(),
        "the Alpine build stage would fail:\n{}",
        describe(&c, &out)
    );
}

/// The e2e suite refuses an image whose binaries digest differs from the
/// release binaries'; build-image must list exactly Cargo.toml's binaries,
/// in the sorted order the suite hashes them in.
#[test]
fn build_image_lists_the_binaries_of_cargo_toml_sorted() {
    let text = read("tests/e2e/build-image");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("binaries=("))
        .expect("build-image has a binaries=(...) line");
    let listed: Vec<String> = line
        .trim_end_matches(')')
        .split_whitespace()
        .map(String::from)
        .collect();
    let want: Vec<String> = cargo_bins().into_iter().collect();
    assert_eq!(listed, want, "tests/e2e/build-image binaries=(...)");
}

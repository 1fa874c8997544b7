//! `bastion-keys`: the CLI against hostile `users.d` contents, and a real
//! sshd that uses it as its AuthorizedKeysCommand (run as `nobody`).

mod index;

use crate::harness::{self, TempDir};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A bastion setup in a temp dir: runtime file, `users.d`, merged file,
/// host key and an sshd config whose AuthorizedKeysCommand is our binary.
struct Keys {
    tmp: TempDir,
    users_d: PathBuf,
    runtime: PathBuf,
}

impl Keys {
    fn new(tag: &str) -> Keys {
        Self::with(tag, false, "")
    }

    fn with(tag: &str, pty: bool, merged: &str) -> Keys {
        let tmp = TempDir::new(tag);
        let users_d = tmp.join("users.d");
        std::fs::create_dir(&users_d).unwrap();
        harness::set_mode(&users_d, 0o755);
        let merged_file = tmp.write("authorized_keys.merged", merged);
        let runtime = tmp.write(
            "runtime.json",
            serde_json::json!({
                "user": harness::SESSION_USER,
                "mode": {"kind": "broker"},
                "allowed_commands": "",
                "allowed_commands_file": tmp.join("allowed-commands.list"),
                "command_prefix": "",
                "command_lock": "none",
                "lock_file": tmp.join("command.lock"),
                "authorized_keys_dir": users_d,
                "merged_keys_file": merged_file,
                "pty": pty,
            })
            .to_string(),
        );
        harness::set_mode(&runtime, 0o644);
        // The key index's private socket directory, as the entrypoint
        // makes it next to the runtime file.
        let sockets = tmp.join("keys-index");
        std::fs::create_dir(&sockets).unwrap();
        std::os::unix::fs::chown(&sockets, Some(65534), Some(65534)).unwrap();
        harness::set_mode(&sockets, 0o700);
        Keys {
            tmp,
            users_d,
            runtime,
        }
    }

    /// Runs `bastion-keys` as `nobody`, as sshd does.
    fn run(&self, args: &[&str]) -> Output {
        let mut c = harness::clean_cmd("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(harness::bin("bastion-keys"))
            .arg("--runtime")
            .arg(&self.runtime)
            .args(args);
        harness::run_expect(&mut c, 0)
    }

    fn pubfile(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let p = self.users_d.join(name);
        std::fs::write(&p, contents).unwrap();
        harness::set_mode(&p, 0o644);
        p
    }

    /// A fresh client key pair; returns (private key path, public line).
    fn client_key(&self, name: &str) -> (PathBuf, String) {
        let p = self.tmp.join(format!("client-{name}"));
        let line = harness::keygen(&p, &format!("{name}@client"));
        (p, line)
    }

    /// An sshd config for `sshd -i` that asks our binary for keys.
    fn sshd_config(&self) -> PathBuf {
        let cfg = self.tmp.join("sshd_config");
        if cfg.exists() {
            return cfg;
        }
        let host_key = self.tmp.join("host_ed25519");
        harness::keygen(&host_key, "host");
        let text = format!(
            "HostKey {hk}\n\
             PidFile none\n\
             UsePAM no\n\
             LogLevel VERBOSE\n\
             AllowUsers {user}\n\
             AuthenticationMethods publickey\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitUserEnvironment no\n\
             AuthorizedKeysFile none\n\
             AuthorizedKeysCommand {bin} --runtime {rt} %u %f\n\
             AuthorizedKeysCommandUser nobody\n",
            hk = host_key.display(),
            user = harness::SESSION_USER,
            bin = harness::sshd_safe_bin("bastion-keys").display(),
            rt = self.runtime.display(),
        );
        std::fs::write(&cfg, text).unwrap();
        cfg
    }

    /// `ssh` with `identity`, running `command`; returns the output and
    /// sshd's log of that connection.
    fn ssh(&self, identity: &Path, extra: &[&str], command: &str) -> (Output, String) {
        let cfg = self.sshd_config();
        let log = self.tmp.join("sshd.log");
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(log.with_extension("log.stderr"));
        let c = harness::ssh_via_inetd(&cfg, &log, identity);
        // Options must precede the destination that ssh_via_inetd appended.
        let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
        let mut fresh = Command::new(c.get_program());
        let (dest, opts) = args.split_last().unwrap();
        fresh.args(opts).args(extra).arg(dest).arg(command);
        let out = harness::output(&mut fresh);
        // sshd's log, then its stderr, which bastion-keys inherits (in the
        // image both are `docker logs`).
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let log_text = read(&log) + &read(&log.with_extension("log.stderr"));
        (out, log_text)
    }

    fn login_works(&self, identity: &Path) -> bool {
        let (out, log) = self.ssh(identity, &[], "echo LOGGED-IN");
        let ok = harness::stdout(&out) == "LOGGED-IN\n";
        assert!(
            ok || out.status.code() == Some(255),
            "unexpected ssh result: {out:?}\n{log}"
        );
        ok
    }
}

fn fingerprint(pub_line: &str, tmp: &TempDir) -> String {
    let p = tmp.write("fp.pub", pub_line);
    let out = harness::run_expect(Command::new("ssh-keygen").arg("-lf").arg(&p), 0);
    harness::stdout(&out).split(' ').nth(1).unwrap().to_owned()
}

/// `type base64` of a public key line.
fn bare(pub_line: &str) -> String {
    pub_line.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

#[test]
fn sshd_honours_added_removed_and_edited_files_on_the_next_login() {
    let k = Keys::new("keys-live");
    let (alice, alice_pub) = k.client_key("alice");
    let (bob, bob_pub) = k.client_key("bob");

    assert!(!k.login_works(&alice), "no key yet: refused");

    let file = k.pubfile("alice.pub", &alice_pub);
    assert!(k.login_works(&alice), "added: works on the next login");
    assert!(!k.login_works(&bob));

    // Edited in place (same inode): alice's key replaced by bob's.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&file)
        .and_then(|mut f| std::io::Write::write_all(&mut f, bob_pub.as_bytes()))
        .unwrap();
    assert!(!k.login_works(&alice), "edited away: refused");
    assert!(k.login_works(&bob), "edited in: works");

    std::fs::remove_file(&file).unwrap();
    assert!(!k.login_works(&bob), "removed: refused on the next login");
}

#[test]
fn sshd_log_and_stderr_name_the_identity() {
    let k = Keys::new("keys-identity");
    let (alice, alice_pub) = k.client_key("alice");
    let (_, carol_pub) = k.client_key("carol");
    k.pubfile("alice.pub", &alice_pub);
    k.pubfile("carol.pub", &carol_pub);
    let fp = fingerprint(&alice_pub, &k.tmp);
    let (out, log) = k.ssh(&alice, &[], "true");
    assert!(out.status.success(), "{out:?}\n{log}");
    // sshd logs the accepted fingerprint; bastion-keys (whose stderr is
    // sshd's: docker logs in the image) says whose it is. Nothing of it
    // reaches the client.
    assert!(log.contains("Accepted publickey for agent"), "{log}");
    assert!(log.contains(&fp), "{log}");
    assert!(
        log.contains(&format!("bastion-keys: key {fp}: identity alice (line 1)")),
        "{log}"
    );
    assert!(!log.contains("carol"), "{log}");
    assert!(!harness::stderr(&out).contains("bastion-keys"), "{out:?}");
}

#[test]
fn options_in_a_pub_file_have_no_effect() {
    let k = Keys::new("keys-options");
    let (alice, alice_pub) = k.client_key("alice");
    let key = bare(&alice_pub);
    // Only lines with options: the key is not authorized at all.
    k.pubfile(
        "alice.pub",
        format!(
            "command=\"echo PWNED\" {key} a\nenvironment=\"BASTION_PWNED=1\" {key} b\n\
             from=\"127.0.0.1\",cert-authority {key} c\n"
        ),
    );
    let (out, log) = k.ssh(&alice, &[], "echo ran");
    assert_eq!(out.status.code(), Some(255), "{out:?}\n{log}");
    assert!(!harness::stdout(&out).contains("PWNED"));
    for n in 1..=3 {
        let want = format!("alice.pub:{n}: skipped: options are not allowed in a key file");
        assert!(log.contains(&want), "{want}\n{log}");
    }

    // The same key also listed plainly: login works, and neither the
    // forced command nor the environment of the other lines applies.
    k.pubfile("alice-plain.pub", format!("{key} plain\n"));
    let (out, log) = k.ssh(&alice, &[], "echo ran; echo env=${BASTION_PWNED:-unset}");
    assert!(out.status.success(), "{out:?}\n{log}");
    assert_eq!(harness::stdout(&out), "ran\nenv=unset\n");
}

#[test]
fn restrict_refuses_a_tty_unless_pty_is_on() {
    let (k, tty) = (Keys::new("keys-nopty"), "tty || true");
    let (alice, alice_pub) = k.client_key("alice");
    k.pubfile("alice.pub", &alice_pub);
    let (out, log) = k.ssh(&alice, &["-tt"], tty);
    assert!(
        !harness::stdout(&out).contains("/dev/pts/"),
        "{out:?}\n{log}"
    );
    assert!(
        harness::stderr(&out).contains("PTY allocation request failed"),
        "{out:?}\n{log}"
    );

    let k = Keys::with("keys-pty", true, "");
    k.pubfile("alice.pub", &alice_pub);
    let (out, log) = k.ssh(&alice, &["-tt"], tty);
    assert!(
        harness::stdout(&out).contains("/dev/pts/"),
        "{out:?}\n{log}"
    );
}

#[test]
fn merged_keys_work_and_carry_the_bastion_options() {
    let probe = Keys::new("keys-merged-probe");
    let (_, host_pub) = probe.client_key("host");
    let k = Keys::with(
        "keys-merged",
        false,
        &format!(
            "# host keys\ncommand=\"echo PWNED\" {}\n{host_pub}",
            bare(&host_pub)
        ),
    );
    let out = k.run(&[harness::SESSION_USER]);
    assert_eq!(
        harness::stdout(&out),
        format!("restrict {} merged\n", bare(&host_pub))
    );
    assert!(harness::stderr(&out).contains("authorized_keys.merged:2: skipped: options"));
}

#[test]
fn other_users_get_nothing() {
    let k = Keys::new("keys-other-user");
    let (_, alice_pub) = k.client_key("alice");
    k.pubfile("alice.pub", &alice_pub);
    for user in ["root", "nobody", "agent2", "", "Agent"] {
        let out = k.run(&[user]);
        assert_eq!(harness::stdout(&out), "", "{user}");
    }
    let out = k.run(&[harness::SESSION_USER]);
    assert_eq!(
        harness::stdout(&out),
        format!("restrict {} alice\n", bare(&alice_pub))
    );
}

#[test]
fn fingerprint_selects_only_the_offered_key() {
    let k = Keys::new("keys-fingerprint");
    let (_, alice_pub) = k.client_key("alice");
    let (_, bob_pub) = k.client_key("bob");
    k.pubfile("alice.pub", &alice_pub);
    k.pubfile("bob.pub", format!("# bob's laptop\n\n{bob_pub}"));
    let fp = fingerprint(&bob_pub, &k.tmp);
    let out = k.run(&[harness::SESSION_USER, &fp]);
    assert_eq!(
        harness::stdout(&out),
        format!("restrict {} bob\n", bare(&bob_pub))
    );
    assert!(harness::stderr(&out).contains(&format!("key {fp}: identity bob (line 3)")));

    let out = k.run(&[harness::SESSION_USER, "SHA256:nothere"]);
    assert_eq!(harness::stdout(&out), "");
    assert!(harness::stderr(&out).contains("no identity has this key"));

    // Another FingerprintHash (MD5): every key, sshd picks.
    let out = k.run(&[harness::SESSION_USER, "MD5:00:11"]);
    assert_eq!(harness::stdout(&out).lines().count(), 2);
}

#[test]
fn bad_input_never_stops_good_keys() {
    use std::os::unix::ffi::OsStrExt;
    let k = Keys::new("keys-hostile");
    let (_, good_pub) = k.client_key("good");
    let (_, late_pub) = k.client_key("late");
    let good = bare(&good_pub);
    let late = bare(&late_pub);

    k.pubfile("a-good.pub", &good_pub);
    // A 64 KiB line, then a good key in the same file.
    let mut big = vec![b'A'; 64 * 1024];
    big.extend_from_slice(format!("\n{late_pub}").as_bytes());
    k.pubfile("b-bigline.pub", big);
    // Binary garbage.
    k.pubfile(
        "c-garbage.pub",
        (0..4096u32)
            .map(|i| (i * 31 % 251) as u8)
            .collect::<Vec<_>>(),
    );
    // Malformed lines around nothing good.
    k.pubfile(
        "d-malformed.pub",
        "ssh-ed25519\nssh-ed25519 !!!\nssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIA==\nssh-dss AAAA\n",
    );
    // Non-UTF-8 name, a name with a newline (log forging), a hidden one.
    let odd = k.users_d.join(std::ffi::OsStr::from_bytes(b"e-\xff.pub"));
    std::fs::write(&odd, &good_pub).unwrap();
    k.pubfile("f-x\nbastion-keys: forged.pub", &good_pub);
    k.pubfile(".pub", &good_pub);
    // Unreadable by nobody.
    let secret = k.pubfile("g-unreadable.pub", &good_pub);
    harness::set_mode(&secret, 0o600);
    // Symlink (to a good key), FIFO, directory.
    std::os::unix::fs::symlink(k.users_d.join("a-good.pub"), k.users_d.join("h-link.pub")).unwrap();
    harness::run_expect(Command::new("mkfifo").arg(k.users_d.join("i-fifo.pub")), 0);
    std::fs::create_dir(k.users_d.join("j-dir.pub")).unwrap();
    // Not key files: ignored without a word.
    k.pubfile("README", "not a key");
    k.pubfile("k-late.pub.bak", &good_pub);

    let out = k.run(&[harness::SESSION_USER]);
    assert_eq!(
        harness::stdout(&out),
        format!("restrict {good} a-good\nrestrict {late} b-bigline\n")
    );
    let err = harness::stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    let expect = [
        "b-bigline.pub:1: skipped: line of 65536 bytes",
        "c-garbage.pub:1: skipped",
        "d-malformed.pub:1: skipped: key type without a key",
        "d-malformed.pub:2: skipped: the key is not valid base64",
        "d-malformed.pub:3: skipped: malformed key",
        "d-malformed.pub:4: skipped: ssh-dss",
        "e-\\xff.pub: skipped: the file name is not printable UTF-8",
        "f-x\\nbastion-keys: forged.pub: skipped: the file name",
        "/.pub: skipped: hidden or empty",
        "g-unreadable.pub: skipped: cannot open: Permission denied",
        "h-link.pub: skipped: is a symbolic link",
        "i-fifo.pub: skipped: is a FIFO",
        "j-dir.pub: skipped: is a directory",
    ];
    for e in expect {
        assert_eq!(
            lines.iter().filter(|l| l.contains(e)).count(),
            1,
            "want one line with {e:?} in:\n{err}"
        );
    }
    assert!(
        lines.iter().all(|l| l.starts_with("bastion-keys: ")),
        "{err}"
    );
    assert!(!err.contains("k-late"), "{err}");
}

#[test]
fn a_file_of_junk_costs_a_few_log_lines_and_stops_no_key() {
    let k = Keys::new("keys-junk");
    let (_, good_pub) = k.client_key("good");
    // 8 MiB of short junk lines: only the first MiB is read, and only the
    // first problems of the file are reported.
    let junk = "junk line\n".repeat(8 * 1024 * 1024 / 10);
    k.pubfile("a-junk.pub", &junk);
    k.pubfile("b-good.pub", &good_pub);
    let fp = fingerprint(&good_pub, &k.tmp);
    for args in [
        vec![harness::SESSION_USER],
        vec![harness::SESSION_USER, fp.as_str()],
        vec!["--scan", harness::SESSION_USER],
    ] {
        let t = std::time::Instant::now();
        let out = k.run(&args);
        assert_eq!(
            harness::stdout(&out),
            format!("restrict {} b-good\n", bare(&good_pub)),
            "{args:?}"
        );
        let err = harness::stderr(&out);
        assert!(err.len() < 4096, "{args:?}: {} bytes of stderr", err.len());
        assert_eq!(
            err.lines().filter(|l| l.contains("a-junk.pub")).count(),
            6,
            "{err}"
        );
        assert!(err.contains("a-junk.pub: and "), "{err}");
        assert!(err.contains(" more problems in this file"), "{err}");
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "{args:?}");
    }
}

#[test]
fn missing_dir_is_logged_and_merged_keys_still_work() {
    let probe = Keys::new("keys-missing-probe");
    let (_, host_pub) = probe.client_key("host");
    let k = Keys::with("keys-missing", false, &host_pub);
    std::fs::remove_dir(&k.users_d).unwrap();
    let out = k.run(&[harness::SESSION_USER]);
    assert_eq!(
        harness::stdout(&out),
        format!("restrict {} merged\n", bare(&host_pub))
    );
    assert!(
        harness::stderr(&out).contains("users.d: cannot read the key directory"),
        "{}",
        harness::stderr(&out)
    );
}

#[test]
fn bad_runtime_and_usage_have_documented_exit_codes() {
    let k = Keys::new("keys-cli");
    let mut c = harness::clean_cmd(harness::bin("bastion-keys"));
    c.args(["--runtime", "/nonexistent/runtime.json", "agent"]);
    let out = harness::run_expect(&mut c, 78);
    assert!(harness::stderr(&out).contains("cannot read runtime file"));
    assert_eq!(harness::stdout(&out), "");

    let bad = k.tmp.write("bad.json", "{not json");
    let mut c = harness::clean_cmd(harness::bin("bastion-keys"));
    c.arg("--runtime").arg(&bad).arg("agent");
    harness::run_expect(&mut c, 78);

    harness::run_expect(&mut harness::clean_cmd(harness::bin("bastion-keys")), 2);
    let mut c = harness::clean_cmd(harness::bin("bastion-keys"));
    c.args(["a", "b", "c"]);
    harness::run_expect(&mut c, 2);
}

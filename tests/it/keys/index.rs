//! The key index (a per-directory process fed by inotify): it must answer
//! exactly what reading every file answers, on the very next call after
//! any change, and go away with its directory.

use super::Keys;
use crate::harness;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// `bastion-keys` answers the same from the index as from a full scan;
/// returns that answer (stdout, stderr).
fn same_answer(k: &Keys, args: &[&str]) -> (String, String) {
    let mut scan = vec!["--scan"];
    scan.extend_from_slice(args);
    let mut index = vec!["--index-only"];
    index.extend_from_slice(args);
    let s = k.run(&scan);
    let i = k.run(&index);
    assert_eq!(harness::stdout(&i), harness::stdout(&s), "stdout, {args:?}");
    assert_eq!(harness::stderr(&i), harness::stderr(&s), "stderr, {args:?}");
    (harness::stdout(&s), harness::stderr(&s))
}

/// `same_answer` for all keys and for each fingerprint of `fps` (the
/// index looks those up by fingerprint); returns the all-keys answer.
fn same_answers(k: &Keys, fps: &[String]) -> (String, String) {
    for fp in fps {
        same_answer(k, &[harness::SESSION_USER, fp]);
    }
    same_answer(k, &[harness::SESSION_USER])
}

/// Starts the index of `k` (the first ordinary call does) and waits for it.
fn start_index(k: &Keys) {
    let up = harness::wait_until(Duration::from_secs(20), || {
        // An ordinary call starts one if none answers (an index of a
        // removed directory whose inode number was reused answers no
        // one, and exits).
        k.run(&[harness::SESSION_USER]);
        let mut c = harness::clean_cmd("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(harness::bin("bastion-keys"))
            .arg("--runtime")
            .arg(&k.runtime)
            .args(["--index-only", harness::SESSION_USER]);
        harness::output(&mut c).status.success()
    });
    assert!(up, "the key index did not start");
}

/// The pid of the index serving `dir`, if one runs.
fn index_pid(dir: &Path) -> Option<u32> {
    std::fs::read_dir("/proc").unwrap().flatten().find_map(|p| {
        let c = std::fs::read(p.path().join("cmdline")).ok()?;
        let c = String::from_utf8_lossy(&c);
        let serving = c.contains("--serve-index") && c.contains(dir.to_str().unwrap());
        serving.then(|| p.file_name().to_str()?.parse().ok())?
    })
}

fn index_running(dir: &Path) -> bool {
    index_pid(dir).is_some()
}

fn write_in_place(p: &Path, contents: &str) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(p)
        .unwrap();
    f.write_all(contents.as_bytes()).unwrap();
}

#[test]
fn index_answers_like_a_full_scan_after_every_kind_of_change() {
    let k = Keys::new("keys-index-diff");
    let keys: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| k.client_key(n).1)
        .collect();
    let fps: Vec<String> = keys.iter().map(|p| super::fingerprint(p, &k.tmp)).collect();
    let fp_c = fps[2].clone();
    let user = harness::SESSION_USER;
    k.pubfile("alice.pub", &keys[0]);
    start_index(&k);
    let bare = |i: usize| super::bare(&keys[i]);

    // Added.
    k.pubfile("bob.pub", &keys[1]);
    let (out, _) = same_answers(&k, &fps);
    assert!(out.contains(&format!("{} bob", bare(1))), "{out}");

    // Edited in place, appended, truncated.
    write_in_place(&k.users_d.join("bob.pub"), &keys[2]);
    let (out, err) = same_answer(&k, &[user, &fp_c]);
    assert_eq!(out, format!("restrict {} bob\n", bare(2)));
    assert!(err.contains("identity bob (line 1)"), "{err}");
    std::fs::OpenOptions::new()
        .append(true)
        .open(k.users_d.join("bob.pub"))
        .unwrap()
        .write_all(b"garbage line\n")
        .unwrap();
    let (_, err) = same_answers(&k, &fps);
    assert!(err.contains("bob.pub:2: skipped"), "{err}");
    write_in_place(&k.users_d.join("bob.pub"), "");
    let (out, _) = same_answer(&k, &[user, &fp_c]);
    assert_eq!(out, "");

    // Renamed in (atomic replace), renamed out, renamed over another.
    let staged = k.tmp.write("staged.pub", &keys[3]);
    std::fs::rename(&staged, k.users_d.join("carol.pub")).unwrap();
    let (out, _) = same_answers(&k, &fps);
    assert!(out.contains(&format!("{} carol", bare(3))), "{out}");
    std::fs::rename(k.users_d.join("carol.pub"), k.users_d.join("carol.pub.off")).unwrap();
    let (out, _) = same_answers(&k, &fps);
    assert!(!out.contains("carol"), "{out}");
    std::fs::rename(k.users_d.join("carol.pub.off"), k.users_d.join("alice.pub")).unwrap();
    let (out, _) = same_answers(&k, &fps);
    assert!(out.contains(&format!("{} alice", bare(3))), "{out}");
    assert!(!out.contains(&bare(0)), "{out}");

    // Permissions taken away and given back.
    harness::set_mode(&k.users_d.join("alice.pub"), 0o600);
    let (out, err) = same_answers(&k, &fps);
    assert!(!out.contains("alice"), "{out}");
    assert!(err.contains("alice.pub: skipped: cannot open"), "{err}");
    harness::set_mode(&k.users_d.join("alice.pub"), 0o644);
    let (out, _) = same_answers(&k, &fps);
    assert!(out.contains("alice"), "{out}");

    // Replaced by a symlink, a FIFO, a directory; removed.
    std::fs::remove_file(k.users_d.join("alice.pub")).unwrap();
    std::os::unix::fs::symlink(k.tmp.join("client-a.pub"), k.users_d.join("alice.pub")).unwrap();
    let (out, err) = same_answers(&k, &fps);
    assert!(!out.contains("alice"), "{out}");
    assert!(err.contains("symbolic link"), "{err}");
    std::fs::remove_file(k.users_d.join("alice.pub")).unwrap();
    std::fs::create_dir(k.users_d.join("alice.pub")).unwrap();
    let (_, err) = same_answers(&k, &fps);
    assert!(err.contains("is a directory"), "{err}");
    std::fs::remove_dir(k.users_d.join("alice.pub")).unwrap();
    std::fs::remove_file(k.users_d.join("bob.pub")).unwrap();
    let (out, err) = same_answers(&k, &fps);
    assert_eq!((out.as_str(), err.as_str()), ("", ""));
}

#[test]
fn index_sees_writes_through_a_hard_link_outside_the_directory() {
    let k = Keys::new("keys-index-link");
    let (_, a) = k.client_key("a");
    let (_, b) = k.client_key("b");
    let outside = k.tmp.write("outside.pub", &a);
    harness::set_mode(&outside, 0o644);
    std::fs::hard_link(&outside, k.users_d.join("alice.pub")).unwrap();
    start_index(&k);
    let (out, _) = same_answer(&k, &[harness::SESSION_USER]);
    assert!(out.contains(&super::bare(&a)), "{out}");
    // No event reaches the directory's watch for this write: only the
    // watch on the file's inode sees it.
    write_in_place(&outside, &b);
    let (out, _) = same_answer(&k, &[harness::SESSION_USER]);
    assert_eq!(out, format!("restrict {} alice\n", super::bare(&b)));
}

#[test]
fn index_is_never_stale_under_a_burst_of_changes() {
    let k = Keys::new("keys-index-burst");
    let (_, a) = k.client_key("a");
    k.pubfile("seed.pub", &a);
    start_index(&k);
    // Far more events than the inotify queue holds (16384 by default),
    // made while the index is stopped: it must notice the overflow and
    // read everything again.
    let pid = index_pid(&k.users_d).expect("index pid").to_string();
    harness::run_expect(harness::clean_cmd("kill").args(["-STOP", &pid]), 0);
    // Resumed on drop too, so a failure never leaves it stopped.
    struct Resume(String);
    impl Drop for Resume {
        fn drop(&mut self) {
            let _ = harness::output(harness::clean_cmd("kill").args(["-CONT", &self.0]));
        }
    }
    let resume = Resume(pid);
    for i in 0..6000 {
        let p = k.users_d.join(format!("u{i:05}.pub"));
        std::fs::write(&p, &a).unwrap();
        if i % 2 == 0 {
            std::fs::remove_file(&p).unwrap();
        }
    }
    drop(resume);
    let (out, _) = same_answer(&k, &[harness::SESSION_USER]);
    assert_eq!(out.lines().count(), 1 + 3000, "seed + the odd files");
}

#[test]
fn index_goes_away_with_its_directory() {
    let k = Keys::new("keys-index-gone");
    let (_, a) = k.client_key("a");
    k.pubfile("alice.pub", &a);
    start_index(&k);
    assert!(index_running(&k.users_d));
    // Another directory at the path: the old index is not used.
    std::fs::rename(&k.users_d, k.tmp.join("users.d.old")).unwrap();
    std::fs::create_dir(&k.users_d).unwrap();
    harness::set_mode(&k.users_d, 0o755);
    let out = k.run(&[harness::SESSION_USER]);
    assert_eq!(harness::stdout(&out), "");
    std::fs::remove_dir_all(k.tmp.join("users.d.old")).unwrap();
    std::fs::remove_dir_all(&k.users_d).unwrap();
    assert!(
        harness::wait_until(Duration::from_secs(90), || !index_running(&k.users_d)),
        "the index outlived its directory"
    );
}

/// Unmounts on drop, also when the test fails.
struct BindMount(std::path::PathBuf);

impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = harness::output(harness::clean_cmd("umount").arg(&self.0));
    }
}

#[test]
fn index_sees_a_file_bind_mounted_into_the_directory() {
    // As `docker run -v key.pub:/etc/bastion/users.d/me.pub` does: no event
    // reaches the directory's watch, neither for the mount nor for writes
    // to the mounted file.
    let k = Keys::new("keys-index-mount");
    let (_, a) = k.client_key("a");
    let (_, b) = k.client_key("b");
    let (_, c) = k.client_key("c");
    let target = k.pubfile("me.pub", &a);
    start_index(&k);
    let source = k.tmp.write("host-me.pub", &b);
    harness::set_mode(&source, 0o644);
    harness::run_expect(
        harness::clean_cmd("mount")
            .arg("--bind")
            .arg(&source)
            .arg(&target),
        0,
    );
    let _mount = BindMount(target.clone());
    let (out, _) = same_answer(&k, &[harness::SESSION_USER]);
    assert_eq!(out, format!("restrict {} me\n", super::bare(&b)));
    write_in_place(&source, &c);
    let (out, _) = same_answer(&k, &[harness::SESSION_USER]);
    assert_eq!(out, format!("restrict {} me\n", super::bare(&c)));
}

#[test]
fn the_session_user_cannot_plant_or_squat_the_socket() {
    // The socket lives in a directory only nobody (and root) may enter:
    // the session user can neither create a socket there nor reach one.
    let k = Keys::new("keys-index-squat");
    let (_, alice) = k.client_key("alice");
    k.pubfile("alice.pub", &alice);
    start_index(&k);
    let sockets = k.tmp.join("keys-index");
    for attack in [
        format!("touch {}/evil", sockets.display()),
        format!("ls {}", sockets.display()),
        format!("mv {0} {0}.old", sockets.display()),
        format!(
            "perl -MSocket -e 'socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; \
             bind($s, pack_sockaddr_un(\"{}/x.sock\")) or die'",
            sockets.display()
        ),
    ] {
        let out = harness::output(
            harness::clean_cmd("setpriv")
                .args([
                    "--reuid",
                    harness::SESSION_USER,
                    "--regid",
                    harness::SESSION_USER,
                    "--clear-groups",
                    "sh",
                    "-c",
                ])
                .arg(&attack),
        );
        assert!(!out.status.success(), "session user could: {attack}");
    }
    let (out, _) = same_answer(&k, &[harness::SESSION_USER]);
    assert_eq!(out, format!("restrict {} alice\n", super::bare(&alice)));
}

#[test]
fn a_socket_directory_others_could_enter_is_not_used() {
    let k = Keys::new("keys-index-baddir");
    let (_, alice) = k.client_key("alice");
    k.pubfile("alice.pub", &alice);
    let sockets = k.tmp.join("keys-index");
    let want = format!("restrict {} alice\n", super::bare(&alice));
    let check = |why: &str| {
        let out = k.run(&[harness::SESSION_USER]);
        assert_eq!(harness::stdout(&out), want, "{why}");
        let err = harness::stderr(&out);
        assert!(err.contains("key index not used ("), "{why}: {err}");
        assert!(err.contains(why), "{why}: {err}");
        assert_eq!(err.lines().count(), 1, "{why}: {err}");
        assert!(!index_running(&k.users_d), "{why}: an index was started");
    };
    // Group or other bits.
    harness::set_mode(&sockets, 0o730);
    check("has mode 730, not 0700");
    harness::set_mode(&sockets, 0o701);
    check("has mode 701, not 0700");
    // Another owner (the session user's, or root's).
    harness::set_mode(&sockets, 0o700);
    std::os::unix::fs::chown(&sockets, Some(0), Some(0)).unwrap();
    check("is owned by uid 0, not uid 65534");
    // A symlink to a directory that would pass.
    let real = k.tmp.join("real-index");
    std::fs::rename(&sockets, &real).unwrap();
    std::os::unix::fs::chown(&real, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::symlink(&real, &sockets).unwrap();
    check("keys-index is not a directory");
    // Missing.
    std::fs::remove_file(&sockets).unwrap();
    check("No such file or directory");
}

/// Runs `script` (perl, with the socket path as $ARGV[0] and $ARGV[1..])
/// as `nobody`: the index's own user, the one user that can bind in the
/// socket directory. Returns once it printed "ready".
fn impostor(k: &Keys, script: &str, args: &[&str]) -> std::process::Child {
    use std::os::unix::fs::MetadataExt;
    use std::process::Stdio;
    let meta = std::fs::metadata(&k.users_d).unwrap();
    let path = k
        .tmp
        .join("keys-index")
        .join(format!("v1-{}-{}.sock", meta.dev(), meta.ino()));
    let mut child = harness::clean_cmd("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["perl", "-MSocket", "-e", script])
        .arg(&path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut ready,
    )
    .unwrap();
    assert_eq!(ready, "ready\n");
    child
}

const BIND: &str = r#"
    socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die "socket: $!";
    bind($s, pack_sockaddr_un($ARGV[0])) or die "bind: $!";
    listen($s, 0) or die "listen: $!";
    $| = 1; print "ready\n";
"#;

#[test]
fn a_forged_answer_is_checked_and_discarded() {
    use std::os::unix::fs::MetadataExt;
    // Even from the index's own user, an answer that a scan could not
    // give (an identity with a newline, a key line with options) is not
    // printed: the caller reads every file instead.
    let k = Keys::new("keys-index-forged");
    let (_, alice) = k.client_key("alice");
    let (_, evil) = k.client_key("evil");
    k.pubfile("alice.pub", &alice);
    let meta = std::fs::metadata(&k.users_d).unwrap();
    let evil_key = super::bare(&evil);
    let forgeries = [
        ("alice\n".to_owned() + &evil_key, evil_key.clone(), vec![]),
        (
            "alice".to_owned(),
            format!("command=\"sh\" {evil_key}"),
            vec![],
        ),
        (
            "alice".to_owned(),
            format!("{evil_key}\n{evil_key}"),
            vec![],
        ),
        (
            "alice".to_owned(),
            evil_key.clone(),
            vec!["x\nbastion-keys: forged".to_owned()],
        ),
    ];
    let script =
        format!("{BIND}while (accept(my $c, $s)) {{ my $q = <$c>; print $c $ARGV[1]; close $c; }}");
    for (identity, key, problems) in forgeries {
        let forged = serde_json::json!({
            "dir": [meta.dev(), meta.ino()],
            "degraded": null,
            "problems": problems,
            "keys": [{"identity": identity, "line": 1, "key": key}],
        })
        .to_string();
        let mut child = impostor(&k, &script, &[&forged]);
        let out = k.run(&[harness::SESSION_USER]);
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(k.tmp.join("keys-index").join(format!(
            "v1-{}-{}.sock",
            meta.dev(),
            meta.ino()
        )));
        assert_eq!(
            harness::stdout(&out),
            format!("restrict {} alice\n", super::bare(&alice)),
            "{forged}"
        );
        let err = harness::stderr(&out);
        assert!(
            err.contains("answer discarded, reading every file"),
            "{err}"
        );
        assert!(!err.contains("forged"), "{err}");
    }
}

#[test]
fn a_stuck_index_never_holds_a_login() {
    // Binds the socket and never accepts: the backlog fills, a blocking
    // connect would wait for ever. Each lookup gives up after its timeout.
    let k = Keys::new("keys-index-stuck");
    let (_, alice) = k.client_key("alice");
    k.pubfile("alice.pub", &alice);
    let script = format!("{BIND}sleep 600;");
    let mut child = impostor(&k, &script, &[]);
    let mut waiting = Vec::new();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let out = k.run(&[harness::SESSION_USER]);
        waiting.push(t.elapsed());
        assert_eq!(
            harness::stdout(&out),
            format!("restrict {} alice\n", super::bare(&alice))
        );
        assert!(
            harness::stderr(&out).contains("the key index did not answer within"),
            "{}",
            harness::stderr(&out)
        );
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        waiting.iter().all(|t| *t < Duration::from_secs(10)),
        "{waiting:?}"
    );
}

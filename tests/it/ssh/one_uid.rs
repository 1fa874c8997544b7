//! Every session runs as the one session user, so a session with a shell
//! can reach the others (README, Security model). What the wrapper still
//! keeps from it: the command inherits nothing but its stdio and a
//! read-only lock descriptor.

use super::fixture::Bastion;
use crate::harness::{run_expect, stdout};

#[test]
fn the_command_inherits_only_stdio_and_a_read_only_lock() {
    // `ls` lists the shell's descriptors; grep shows their open flags (the
    // glob may name the directory descriptor the shell used to expand it,
    // gone by the time grep runs).
    let b = Bastion::new("uid-fds")
        .force("ls -l /proc/$$/fd; grep -H '^flags' /proc/$$/fdinfo/* 2>/dev/null; true");
    let cfg = b.prepare();
    let out = run_expect(&mut b.ssh(&cfg), 0);
    let text = stdout(&out);
    let fds: Vec<(u32, &str)> = text
        .lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            Some((left.rsplit(' ').next()?.parse().ok()?, target))
        })
        .collect();
    let numbers: Vec<u32> = fds.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers.len(), 4, "{text}");
    assert_eq!(&numbers[..3], [0, 1, 2], "{text}");
    let (lock_fd, target) = fds[3];
    assert!(target.ends_with("/run/bastion/command.lock"), "{text}");
    let flags = text
        .lines()
        .find_map(|l| l.split_once(&format!("/fdinfo/{lock_fd}:flags:")))
        .map(|(_, f)| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap_or_else(|| panic!("no flags for fd {lock_fd}\n{text}"));
    assert_eq!(
        flags & 0o3,
        0,
        "the lock descriptor is not read-only: {flags:o}"
    );
}

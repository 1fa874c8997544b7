//! The ERE translator: any rule text must either be refused or translate
//! to a pattern that compiles, and the broker's decision path (literal
//! shortcuts, then the compiled set) must agree with that pattern.
#![no_main]

use bastion::broker::probe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // First line is the rule, the rest the request (no newline inside).
    let (rule, request) = text.split_once('\n').unwrap_or((text, ""));
    let request = request.replace('\n', " ");
    if let Err(bug) = probe::check_consistency(rule, &request) {
        panic!("{bug}");
    }
});

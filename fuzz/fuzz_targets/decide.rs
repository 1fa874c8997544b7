//! The whole decision over ALLOWED_COMMANDS-style text and a request:
//! never panics, never allows a request with a control character, an
//! empty request without a prefix, or one over 64 KiB, and an allowing
//! rule really matches the request on its own. The boot-compiled rules
//! (when every rule is usable, as the entrypoint requires) decide alike.
#![no_main]

use bastion::broker::probe;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // Layout: rules, a 0x1e separator, the request (which may hold anything).
    let (rules, request) = text.split_once('\u{1e}').unwrap_or((text, ""));
    let prefix = if request.len() % 2 == 0 { "" } else { "echo" };
    let parsed = probe::decide(rules, request, prefix);
    // Rules with an unusable one are refused at boot, never compiled.
    if let Ok(compiled) = probe::decide_compiled(rules, request, prefix) {
        assert_eq!(parsed, compiled, "compiled rules decide otherwise");
    }
    if let Ok(_line) = parsed {
        assert!(
            !request.chars().any(|c| c.is_control() && c != '\t'),
            "allowed a control character: {request:?}"
        );
        assert!(request.len() <= 64 * 1024);
        assert!(
            !prefix.is_empty() || !request.split([' ', '\t']).all(str::is_empty),
            "allowed an empty request without a prefix"
        );
        let allowed_by_some_rule = rules.lines().any(|r| {
            let r = r.trim_matches(|c: char| c.is_ascii_whitespace());
            !r.starts_with('#') && probe::matches(r, &[request]).is_ok_and(|m| m[0])
        });
        assert!(allowed_by_some_rule, "allowed {request:?} but no rule matches alone");
    }
});

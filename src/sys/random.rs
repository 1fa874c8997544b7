//! Random bytes from the kernel in one `getrandom` call (no descriptor to
//! open and close, as `/dev/urandom` needs).

use nix::libc;
use std::io;

/// Fills `buf` from the kernel's random source (the urandom pool; waits
/// only until the pool is first initialized at boot).
pub(crate) fn fill(buf: &mut [u8]) -> io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into
        // `rest`, which this function borrows mutably for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// 16 lowercase hex characters: a session id.
pub(crate) fn hex_id() -> io::Result<String> {
    let mut b = [0u8; 8];
    fill(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_16_hex_characters_and_differ() {
        let a = super::hex_id().unwrap();
        let b = super::hex_id().unwrap();
        assert_eq!(a.len(), 16);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }
}

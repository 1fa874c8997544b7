//! The SSH wire format reader (RFC 4251: `u32` big-endian length +
//! bytes). It only reads; it never allocates or trusts a length it has
//! not checked against what is left.

/// Reads SSH wire-format strings (`u32` big-endian length + bytes).
pub(crate) struct Wire<'a>(&'a [u8]);

impl<'a> Wire<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self(bytes)
    }

    /// The next string; `Err` names what is wrong.
    pub(crate) fn string(&mut self) -> Result<&'a [u8], &'static str> {
        let short = "truncated";
        if self.0.len() < 4 {
            return Err(short);
        }
        let n = u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as usize;
        let rest = &self.0[4..];
        if rest.len() < n {
            return Err(short);
        }
        self.0 = &rest[n..];
        Ok(&rest[..n])
    }

    /// Nothing may follow.
    pub(crate) fn end(&self) -> Result<(), &'static str> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes after the key")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_then_end() {
        let mut w = Wire::new(b"\0\0\0\x03abc\0\0\0\0");
        assert_eq!(w.string(), Ok(&b"abc"[..]));
        assert_eq!(w.string(), Ok(&b""[..]));
        assert_eq!(w.end(), Ok(()));
    }

    #[test]
    fn a_length_past_the_end_is_refused() {
        assert_eq!(Wire::new(b"\0\0\0\x05ab").string(), Err("truncated"));
        assert_eq!(Wire::new(b"\xff\xff\xff\xff").string(), Err("truncated"));
        assert_eq!(Wire::new(b"\0\0").string(), Err("truncated"));
        let mut w = Wire::new(b"\0\0\0\x01ax");
        w.string().unwrap();
        assert!(w.end().is_err());
    }
}

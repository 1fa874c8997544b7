//! SSH public keys as the bastion handles them: the accepted key types,
//! the checked key blob, its OpenSSH text form and SHA-256 fingerprint,
//! and the wire-format reader. Shared by the key lookup and anything that
//! must recognise a key (the session side, an agent proxy). It parses and
//! formats only; it never decides who may log in (sshd does).

mod sha256;
mod wire;

pub(crate) use wire::Wire;

use base64::engine::general_purpose::STANDARD_NO_PAD;
use base64::Engine as _;

/// Key types sshd accepts in authorized_keys (plain keys, FIDO keys).
pub(crate) const KEY_TYPES: [&str; 7] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

/// One accepted public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicKey {
    pub(crate) kind: &'static str,
    /// The decoded key blob (SSH wire format).
    pub(crate) blob: Vec<u8>,
}

impl PublicKey {
    /// `SHA256:<base64 without padding>`, as ssh-keygen -l and sshd's `%f`.
    pub(crate) fn fingerprint(&self) -> String {
        format!(
            "SHA256:{}",
            STANDARD_NO_PAD.encode(sha256::digest(&self.blob))
        )
    }

    /// The modulus size of an RSA key, in bits (sshd's `RequiredRSASize`
    /// compares it); `None` for other types.
    pub(crate) fn rsa_bits(&self) -> Option<u32> {
        if self.kind != "ssh-rsa" {
            return None;
        }
        let mut w = Wire::new(&self.blob);
        w.string().ok()?; // type
        w.string().ok()?; // e
        let n = w.string().ok()?;
        let skip = n.iter().take_while(|b| **b == 0).count();
        let n = &n[skip..];
        let first = *n.first()?;
        Some((n.len() as u32 - 1) * 8 + (8 - first.leading_zeros()))
    }

    /// `type base64`, re-encoded from the blob.
    pub(crate) fn to_openssh(&self) -> String {
        format!(
            "{} {}",
            self.kind,
            base64::engine::general_purpose::STANDARD.encode(&self.blob)
        )
    }
}

/// Checks that the blob is a key of `kind`: its leading string is the type
/// and its fields are the ones of that type, nothing more.
pub(crate) fn check_blob(kind: &str, blob: &[u8]) -> Result<(), &'static str> {
    let mut w = Wire::new(blob);
    if w.string()? != kind.as_bytes() {
        return Err("the key's type does not match the line's");
    }
    let curve = |w: &mut Wire<'_>, want: &[u8]| -> Result<(), &'static str> {
        if w.string()? != want {
            return Err("wrong curve for the key type");
        }
        let point = w.string()?;
        if point.first() != Some(&4) {
            return Err("not an uncompressed curve point");
        }
        Ok(())
    };
    match kind {
        "ssh-ed25519" => ed25519(&mut w)?,
        "sk-ssh-ed25519@openssh.com" => {
            ed25519(&mut w)?;
            w.string()?; // application
        }
        "ssh-rsa" => {
            let e = w.string()?;
            let n = w.string()?;
            if e.is_empty() || n.len() < 64 {
                return Err("RSA modulus too short");
            }
        }
        "ecdsa-sha2-nistp256" => curve(&mut w, b"nistp256")?,
        "ecdsa-sha2-nistp384" => curve(&mut w, b"nistp384")?,
        "ecdsa-sha2-nistp521" => curve(&mut w, b"nistp521")?,
        "sk-ecdsa-sha2-nistp256@openssh.com" => {
            curve(&mut w, b"nistp256")?;
            w.string()?; // application
        }
        _ => return Err("unsupported type"),
    }
    w.end()
}

fn ed25519(w: &mut Wire<'_>) -> Result<(), &'static str> {
    if w.string()?.len() != 32 {
        return Err("an ed25519 key is 32 bytes");
    }
    Ok(())
}

#[cfg(test)]
mod rsa_bits_tests {
    use super::*;

    fn rsa_blob(n: &[u8]) -> PublicKey {
        let mut blob = Vec::new();
        for part in [&b"ssh-rsa"[..], &[1, 0, 1], n] {
            blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
            blob.extend_from_slice(part);
        }
        PublicKey {
            kind: "ssh-rsa",
            blob,
        }
    }

    #[test]
    fn rsa_bits_count_the_modulus() {
        // mpint: a leading zero byte when the top bit is set.
        let mut n = vec![0u8, 0x80];
        n.resize(1 + 384, 0xff);
        assert_eq!(rsa_blob(&n).rsa_bits(), Some(3072));
        let mut n = vec![0x7f];
        n.resize(256, 0xff);
        assert_eq!(rsa_blob(&n).rsa_bits(), Some(2047));
        assert_eq!(rsa_blob(&[]).rsa_bits(), None);
        let ed = PublicKey {
            kind: "ssh-ed25519",
            blob: vec![],
        };
        assert_eq!(ed.rsa_bits(), None);
    }
}

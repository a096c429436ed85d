//! The sealing key of a fleet and the AEAD (AES-256-GCM) that seals private keys
//! before they are written to etcd, bound to the certificate and version.

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine as _;

use super::FleetError;

/// The length of a sealing key: AES-256.
pub const SEALING_KEY_LEN: usize = 32;

/// The fleet's sealing key (32 bytes, the same on every host). `Debug` prints
/// `<redacted>`; the bytes are used only by [`SealingKey::seal`] and
/// [`SealingKey::open`], and wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SealingKey([u8; SEALING_KEY_LEN]);

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(<redacted>)")
    }
}

impl Drop for SealingKey {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&self.0);
    }
}

/// What a sealed value is bound to: the certificate and the version (of the
/// issued material, or the attempt whose key it is). A sealed value copied to
/// another certificate's or version's key does not open.
fn associated_data(cert: &str, version: &str) -> Vec<u8> {
    format!("cas-renewd fleet seal v1\0{cert}\0{version}").into_bytes()
}

impl SealingKey {
    pub fn from_bytes(bytes: [u8; SEALING_KEY_LEN]) -> SealingKey {
        SealingKey(bytes)
    }

    /// Reads the key file with the rules of a secret file (a link is followed,
    /// only a regular file is read, never blocking on a FIFO), and refuses one that
    /// group or others can read, or that does not hold exactly 32 bytes.
    pub fn read(path: &Path) -> Result<SealingKey, String> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| format!("{}: cannot be read: {e}", path.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{}: is not a regular file", path.display()));
        }
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{}: readable by group or others (mode {:04o}); `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ));
        }
        let mut bytes = Vec::with_capacity(SEALING_KEY_LEN + 1);
        file.take(SEALING_KEY_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{}: cannot be read: {e}", path.display()))?;
        let key: Result<[u8; SEALING_KEY_LEN], _> = bytes.as_slice().try_into();
        bytes.iter_mut().for_each(|b| *b = 0);
        key.map(SealingKey).map_err(|_| {
            format!(
                "{}: must hold exactly {SEALING_KEY_LEN} bytes (make one with `head -c 32 /dev/urandom > {}`), it holds {}",
                path.display(),
                path.display(),
                if meta.len() > SEALING_KEY_LEN as u64 { format!("{} or more", SEALING_KEY_LEN + 1) } else { meta.len().to_string() }
            )
        })
    }

    fn aead(&self) -> LessSafeKey {
        let key = UnboundKey::new(&AES_256_GCM, &self.0)
            .expect("a 32-byte key is always a valid AES-256 key");
        LessSafeKey::new(key)
    }

    /// Seals `plain` for `cert` at `version`: base64 of a fresh random 96-bit
    /// nonce followed by the ciphertext and its tag.
    pub fn seal(&self, cert: &str, version: &str, plain: &[u8]) -> Result<String, FleetError> {
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let mut data = plain.to_vec();
        let aad = associated_data(cert, version);
        self.aead()
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(aad.as_slice()),
                &mut data,
            )
            .map_err(|_| FleetError::Seal {
                cert: cert.to_owned(),
            })?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&data);
        data.iter_mut().for_each(|b| *b = 0);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Opens what [`SealingKey::seal`] made for the same `cert` and `version`;
    /// another key, certificate or version, or a changed byte, fails.
    pub fn open(&self, cert: &str, version: &str, sealed: &str) -> Result<Vec<u8>, FleetError> {
        let wrong = || FleetError::Unseal {
            cert: cert.to_owned(),
            version: version.to_owned(),
        };
        let mut raw = base64::engine::general_purpose::STANDARD
            .decode(sealed.trim())
            .map_err(|_| wrong())?;
        if raw.len() < NONCE_LEN {
            return Err(wrong());
        }
        let mut data = raw.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&raw).map_err(|_| wrong())?;
        let aad = associated_data(cert, version);
        let plain = self
            .aead()
            .open_in_place(nonce, Aad::from(aad.as_slice()), &mut data)
            .map_err(|_| wrong())?
            .to_vec();
        data.iter_mut().for_each(|b| *b = 0);
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SealingKey {
        SealingKey::from_bytes([b; SEALING_KEY_LEN])
    }

    #[test]
    fn a_sealed_value_opens_with_the_same_key_cert_and_version_only() {
        let k = key(7);
        let sealed = k
            .seal("www", "3", b"-----BEGIN PRIVATE KEY-----")
            .expect("seal");
        assert!(!sealed.contains("PRIVATE"));
        assert_eq!(
            k.open("www", "3", &sealed).expect("open"),
            b"-----BEGIN PRIVATE KEY-----"
        );
        assert!(matches!(
            key(8).open("www", "3", &sealed),
            Err(FleetError::Unseal { .. })
        ));
        assert!(k.open("api", "3", &sealed).is_err(), "another certificate");
        assert!(k.open("www", "4", &sealed).is_err(), "another version");
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .expect("base64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let tampered = base64::engine::general_purpose::STANDARD.encode(bytes);
        assert!(k.open("www", "3", &tampered).is_err(), "a changed byte");
        assert!(k.open("www", "3", "bm9").is_err(), "too short");
    }

    #[test]
    fn each_seal_has_its_own_nonce() {
        let k = key(1);
        let a = k.seal("www", "1", b"same").expect("seal");
        let b = k.seal("www", "1", b"same").expect("seal");
        assert_ne!(a, b);
    }

    #[test]
    fn the_sealing_key_is_never_printed() {
        let k = key(0xab);
        let shown = format!("{k:?}");
        assert_eq!(shown, "SealingKey(<redacted>)");
        assert!(!shown.to_lowercase().contains("ab"));
    }

    #[test]
    fn key_files_must_be_private_regular_and_32_bytes() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("fleet.key");
        std::fs::write(&p, [5u8; 32]).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(SealingKey::read(&p).expect("read"), key(5));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = SealingKey::read(&p).expect_err("group readable");
        assert!(e.contains("readable by group or others"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&p, [5u8; 33]).expect("write");
        let e = SealingKey::read(&p).expect_err("too long");
        assert!(e.contains("exactly 32 bytes"), "{e}");
        std::fs::write(&p, [5u8; 31]).expect("write");
        let e = SealingKey::read(&p).expect_err("too short");
        assert!(e.contains("it holds 31"), "{e}");
        assert!(SealingKey::read(&d.path().join("missing")).is_err());
        assert!(SealingKey::read(d.path()).is_err(), "a directory");
    }
}

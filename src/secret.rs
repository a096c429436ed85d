//! A string that must never be shown: AccessKey secrets, STS tokens, PEM private keys;
//! and the one reader of the files that hold them.

use std::fmt;
use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use serde::{Deserialize, Deserializer};

/// Holds a secret value. `Debug` and `Display` print `<redacted>`; the only way to
/// the value is [`Secret::expose`], which makes every use easy to audit.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value. Call it only where the value is used (signing, writing a
    /// key file), never to log or format.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: overwrite the bytes before the allocation is freed, so the
        // secret does not linger in freed memory. `black_box` keeps the writes.
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.iter_mut().for_each(|b| *b = 0);
        std::hint::black_box(&bytes);
    }
}

/// More than any secret or credentials file holds.
const MAX_SECRET_FILE: u64 = 64 * 1024;

/// The text of a file that holds a secret (or a credentials profile). A link is
/// followed (systemd credentials and Kubernetes secrets are links), but only a
/// regular file is read: a FIFO or device planted at the path is refused without
/// blocking (opened non-blocking, then checked), and reads stop at 64 KiB.
pub fn read_secret_text(path: &Path) -> std::io::Result<String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    let mut text = String::new();
    file.take(MAX_SECRET_FILE).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_are_read_through_links_but_never_from_a_fifo() {
        let d = tempfile::tempdir().expect("tempdir");
        let real = d.path().join("secret");
        std::fs::write(&real, "hunter2\n").expect("write");
        assert_eq!(read_secret_text(&real).expect("file"), "hunter2\n");
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("link");
        assert_eq!(read_secret_text(&link).expect("link"), "hunter2\n");
        let fifo = d.path().join("fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("fifo");
        let err = read_secret_text(&fifo).expect_err("a FIFO is refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(read_secret_text(Path::new("/dev/zero")).is_err());
    }

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(s.clone())), "Some(<redacted>)");
        assert_eq!(s.expose(), "hunter2-very-secret");
    }
}

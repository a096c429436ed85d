//! Doctor's host checks, all by looking only: the modes of the files that hold
//! secrets, each output directory (owner, modes, free space), each reload hook's
//! program, and the state directory with its lock.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::Check;
use crate::accounts::{self, Kind};
use crate::settings::{Config, CredentialsConfig, SecretSource};

/// Free space below this on an output or state file system is worth a warning.
const LOW_SPACE: u64 = 16 * 1024 * 1024;

fn mode(m: &std::fs::Metadata) -> u32 {
    m.permissions().mode() & 0o7777
}

/// The configuration file and the AccessKey secret file: owner-only.
pub(super) fn secret_files(cfg: &Config, config_path: &Path) -> Vec<Check> {
    let mut files: Vec<(PathBuf, bool)> = vec![(config_path.to_owned(), false)];
    let mut inline = false;
    if let Some(CredentialsConfig::AccessKey {
        secret,
        security_token,
        ..
    }) = &cfg.credentials
    {
        inline = matches!(secret, SecretSource::Inline(_)) || security_token.is_some();
        if let SecretSource::File(f) = secret {
            files.push((f.clone(), true));
        }
    }
    let mut out = Vec::new();
    for (path, is_secret) in files {
        let holds_secret = is_secret || inline;
        let name = format!("file mode ({})", path.display());
        out.push(match std::fs::symlink_metadata(&path) {
            Err(e) => Check::fail(name, format!("cannot read its mode: {e}")),
            Ok(m) if holds_secret && mode(&m) & 0o077 != 0 => Check::fail(
                name,
                format!(
                    "holds a secret and is readable by group or others (mode {:04o}): chmod 600 {}",
                    mode(&m),
                    path.display()
                ),
            ),
            Ok(m) if m.uid() != rustix_uid() && m.uid() != 0 => Check::warn(
                name,
                format!(
                    "owned by uid {}, not by the user cas-renewd runs as; chown it",
                    m.uid()
                ),
            ),
            Ok(m) => Check::ok(
                name,
                format!(
                    "mode {:04o}{}",
                    mode(&m),
                    if holds_secret { ", owner only" } else { "" }
                ),
            ),
        });
    }
    out
}

fn rustix_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// Free bytes for an unprivileged writer on the file system of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let s = rustix::fs::statvfs(dir).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

/// The nearest existing directory at or above `dir`.
fn existing_ancestor(dir: &Path) -> Option<&Path> {
    dir.ancestors().find(|a| a.is_dir())
}

/// Each certificate's output directory: present (or creatable), owned as
/// configured, not writable by others, with room for a set of files.
pub(super) fn outputs(cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    for c in &cfg.certificates {
        let o = &c.output;
        let name = format!("output ({})", c.name);
        let Ok(m) = std::fs::symlink_metadata(&o.dir) else {
            let parent = existing_ancestor(&o.dir);
            out.push(Check::warn(
                name,
                format!(
                    "{} does not exist yet; the first install creates it{}",
                    o.dir.display(),
                    parent.map_or_else(String::new, |p| format!(" under {}", p.display()))
                ),
            ));
            continue;
        };
        if !m.is_dir() {
            out.push(Check::fail(
                name,
                format!(
                    "{} is not a directory (a link or a file): make it a plain directory",
                    o.dir.display()
                ),
            ));
            continue;
        }
        let mut problems = Vec::new();
        if mode(&m) & 0o022 != 0 && !o.allow_insecure_dir {
            problems.push(format!(
                "writable by group or others (mode {:04o}): chmod go-w {}",
                mode(&m),
                o.dir.display()
            ));
        }
        for (who, kind, id) in [
            (o.owner.as_deref(), Kind::User, m.uid()),
            (o.group.as_deref(), Kind::Group, m.gid()),
        ] {
            let Some(who) = who else { continue };
            match accounts::lookup(who, kind) {
                Ok(want) if want != id => problems.push(format!(
                    "{} is id {id}, the configuration says {who} ({want}); the next install sets it",
                    kind.as_str()
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!("{e}; fix output.{}", kind.as_str())),
            }
        }
        let free = free_bytes(&o.dir);
        if free.is_some_and(|f| f < LOW_SPACE) {
            problems.push(format!(
                "only {} KiB free; free some space",
                free.unwrap_or(0) / 1024
            ));
        }
        let summary = format!(
            "{}: mode {:04o}, uid {}, gid {}, {} MiB free",
            o.dir.display(),
            mode(&m),
            m.uid(),
            m.gid(),
            free.map_or_else(|| "?".to_owned(), |f| (f / (1024 * 1024)).to_string())
        );
        out.push(if problems.is_empty() {
            Check::ok(name, summary)
        } else {
            Check::warn(name, format!("{summary}; {}", problems.join("; ")))
        });
    }
    out
}

/// Where `program` would be run from: itself when it has a slash, else the first
/// executable of that name on PATH.
fn resolve(program: &str) -> Option<PathBuf> {
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return executable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| executable(p))
}

/// Each reload hook's program exists and is executable.
pub(super) fn hooks(cfg: &Config) -> Vec<Check> {
    cfg.hooks
        .iter()
        .map(|(name, h)| {
            let check = format!("hook ({name})");
            let Some(program) = h.command.first() else {
                return Check::fail(check, "the command is empty");
            };
            match resolve(program) {
                Some(p) => Check::ok(check, format!("{program} is {}", p.display())),
                None => Check::fail(
                    check,
                    format!(
                        "{program} is not an executable file{}: install it or fix hooks.{name}.command",
                        if program.contains('/') { "" } else { " on PATH" }
                    ),
                ),
            }
        })
        .collect()
}

/// The state directory (owner-only) and whether a daemon holds its lock; the
/// lock is only tried on a lock file that exists, and released at once.
pub(super) fn state_dir(cfg: &Config) -> Vec<Check> {
    let dir = &cfg.state_dir;
    let m = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(_) => {
            let parent_free = existing_ancestor(dir).and_then(free_bytes);
            return vec![Check::warn(
                "state dir",
                format!(
                    "{} does not exist yet; the first pass creates it ({} MiB free there)",
                    dir.display(),
                    parent_free.map_or_else(|| "?".to_owned(), |f| (f / (1024 * 1024)).to_string())
                ),
            )];
        }
    };
    let mut out = Vec::new();
    out.push(if !m.is_dir() {
        Check::fail(
            "state dir",
            format!("{} is not a directory: move it away", dir.display()),
        )
    } else if mode(&m) & 0o077 != 0 {
        Check::fail(
            "state dir",
            format!(
                "{} holds keys and is open to group or others (mode {:04o}): chmod 700 it",
                dir.display(),
                mode(&m)
            ),
        )
    } else {
        Check::ok(
            "state dir",
            format!("{}: mode {:04o}, uid {}", dir.display(), mode(&m), m.uid()),
        )
    });
    let lock = dir.join("lock");
    let msg = match open_lock(&lock) {
        None => Check::ok("state lock", "no lock file yet: no pass has run here"),
        Some(Err(e)) => Check::fail(
            "state lock",
            format!(
                "{}: {e}; remove it (the next pass makes a new one)",
                lock.display()
            ),
        ),
        Some(Ok(f)) => match f.try_lock_shared() {
            Ok(()) => Check::ok("state lock", "free: no pass is running"),
            Err(std::fs::TryLockError::WouldBlock) => Check::ok(
                "state lock",
                "held: a daemon or a pass is running (`renew` and `once` wait for it)",
            ),
            Err(std::fs::TryLockError::Error(e)) => {
                Check::warn("state lock", format!("cannot try the lock: {e}"))
            }
        },
    };
    out.push(msg);
    out
}

/// The lock file, opened without following a link or blocking on a special file;
/// `None` when there is none.
fn open_lock(path: &Path) -> Option<std::io::Result<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let m = std::fs::symlink_metadata(path).ok()?;
    if !m.is_file() {
        return Some(Err(std::io::Error::other("not a regular file")));
    }
    Some(
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
            .open(path),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_resolve_by_path_or_on_path() {
        assert!(resolve("sh").is_some(), "sh is on PATH");
        assert!(resolve("/bin/sh").is_some());
        assert!(resolve("/nonexistent/prog").is_none());
        assert!(resolve("no-such-program-cas-renewd").is_none());
        assert!(resolve("/etc/passwd").is_none(), "not executable");
    }

    #[test]
    fn a_lock_that_is_not_a_regular_file_is_not_opened() {
        let d = tempfile::tempdir().expect("tempdir");
        let lock = d.path().join("lock");
        assert!(open_lock(&lock).is_none());
        std::os::unix::fs::symlink("/dev/zero", &lock).expect("symlink");
        assert!(matches!(open_lock(&lock), Some(Err(_))));
        std::fs::remove_file(&lock).expect("rm");
        std::fs::write(&lock, "").expect("write");
        assert!(matches!(open_lock(&lock), Some(Ok(_))));
    }
}

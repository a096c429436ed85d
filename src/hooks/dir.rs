//! The programs of a hooks directory (`hooks_dir`), run after an install once per
//! certificate in name order, like certbot's `renewal-hooks/deploy`.
//!
//! A program is run only when nobody but root or the daemon's own user could have
//! put it there: a plain file (not a symlink), owned by one of them and not
//! writable by group or others. The caller checks the directory itself the same
//! way. Files that are not meant to run (not executable, hidden, editor or
//! package-manager leftovers, subdirectories) are skipped with a log line.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{HookContext, HookError, HookSpec};

/// What a directory holds: the programs to run, in order, and the entries left
/// out with the reason.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub programs: Vec<PathBuf>,
    pub skipped: Vec<(PathBuf, &'static str)>,
}

/// The hook name a program of the directory goes by in logs and errors.
pub fn hook_name(program: &Path) -> String {
    format!(
        "hooks_dir/{}",
        program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    )
}

/// Lists `dir` in byte order of the names. An entry that could run but is not
/// safe to (a symlink, someone else's file, a writable one) is an error: running
/// the others would hide that the directory was tampered with.
pub fn list(dir: &Path) -> Result<Listing, HookError> {
    let entries = std::fs::read_dir(dir).map_err(|source| HookError::Dir {
        hook: super::DIR_HOOK.to_owned(),
        path: dir.to_owned(),
        source,
    })?;
    let mut paths = Vec::new();
    for e in entries {
        let e = e.map_err(|source| HookError::Dir {
            hook: super::DIR_HOOK.to_owned(),
            path: dir.to_owned(),
            source,
        })?;
        paths.push(e.path());
    }
    paths.sort();
    let me = std::fs::metadata("/proc/self").ok().map(|m| m.uid());
    let mut listing = Listing::default();
    for path in paths {
        match classify(&path, me)? {
            None => listing.programs.push(path),
            Some(why) => listing.skipped.push((path, why)),
        }
    }
    Ok(listing)
}

/// `None` when `path` is a program to run, the reason when it is skipped.
fn classify(path: &Path, me: Option<u32>) -> Result<Option<&'static str>, HookError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name.starts_with('.')
        || name.ends_with('~')
        || [".dpkg-", ".rpmnew", ".rpmsave", ".swp", ".bak"]
            .iter()
            .any(|s| name.contains(s))
    {
        return Ok(Some("a hidden, backup or package-manager file"));
    }
    let insecure = |why: String, fix: String| HookError::Insecure {
        hook: hook_name(path),
        path: path.to_owned(),
        why,
        fix,
    };
    let meta = std::fs::symlink_metadata(path).map_err(|source| HookError::Dir {
        hook: hook_name(path),
        path: path.to_owned(),
        source,
    })?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        return Err(insecure(
            "is a symbolic link".into(),
            "put the program itself there, or name it under `hooks`".into(),
        ));
    }
    if ft.is_dir() {
        return Ok(Some("a directory"));
    }
    if !ft.is_file() {
        return Ok(Some("not a regular file"));
    }
    if meta.mode() & 0o111 == 0 {
        return Ok(Some("not executable"));
    }
    if meta.uid() != 0 && Some(meta.uid()) != me {
        return Err(insecure(
            format!(
                "is owned by uid {}, not root or the daemon's user",
                meta.uid()
            ),
            format!("chown root {}", path.display()),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(insecure(
            format!(
                "is writable by group or others (mode {:04o})",
                meta.mode() & 0o7777
            ),
            format!("chmod go-w {}", path.display()),
        ));
    }
    Ok(None)
}

/// Runs every program of `dir` for one certificate, in name order, each within
/// `timeout`; stops at the first failure (a later program may rely on an earlier
/// one, as with `run-parts --exit-on-error`). Returns the programs that ran.
pub async fn run(
    dir: &Path,
    timeout: Duration,
    ctx: &HookContext,
) -> Result<Vec<PathBuf>, HookError> {
    let listing = list(dir)?;
    for (path, why) in &listing.skipped {
        tracing::info!(path = %path.display(), reason = why, "hooks_dir entry skipped");
    }
    for program in &listing.programs {
        let spec = HookSpec {
            command: vec![program.display().to_string()],
            timeout,
            per_certificate: true,
        };
        super::run(&hook_name(program), &spec, ctx).await?;
    }
    Ok(listing.programs)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn file(dir: &Path, name: &str, body: &str, mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, body).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    #[test]
    fn programs_are_listed_in_name_order_and_the_rest_skipped() {
        let d = tempfile::tempdir().expect("tempdir");
        let b = file(d.path(), "20-b", "#!/bin/sh\n", 0o755);
        let a = file(d.path(), "10-a", "#!/bin/sh\n", 0o700);
        let readme = file(d.path(), "README", "notes", 0o644);
        let old = file(d.path(), "30-c.dpkg-old", "#!/bin/sh\n", 0o755);
        let hidden = file(d.path(), ".40-d", "#!/bin/sh\n", 0o755);
        std::fs::create_dir(d.path().join("sub")).expect("mkdir");
        let got = list(d.path()).expect("lists");
        assert_eq!(got.programs, vec![a, b]);
        let skipped: Vec<&Path> = got.skipped.iter().map(|(p, _)| p.as_path()).collect();
        assert_eq!(skipped.len(), 4, "{:?}", got.skipped);
        for p in [&readme, &old, &hidden] {
            assert!(skipped.contains(&p.as_path()), "{p:?} not skipped");
        }
        assert!(
            got.skipped
                .iter()
                .any(|(p, why)| p == &readme && *why == "not executable")
        );
    }

    #[test]
    fn symlinks_and_writable_programs_are_refused() {
        let d = tempfile::tempdir().expect("tempdir");
        let target = file(d.path(), "real", "#!/bin/sh\n", 0o644);
        std::os::unix::fs::symlink(&target, d.path().join("10-link")).expect("symlink");
        let err = list(d.path()).expect_err("symlink refused");
        assert!(
            err.to_string().contains("10-link is a symbolic link"),
            "{err}"
        );

        let d = tempfile::tempdir().expect("tempdir");
        file(d.path(), "10-open", "#!/bin/sh\n", 0o777);
        let err = list(d.path()).expect_err("writable refused");
        let shown = err.to_string();
        assert!(
            shown.contains("writable by group or others (mode 0777)")
                && shown.contains("chmod go-w"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn each_program_runs_with_the_certificate_and_the_first_failure_stops() {
        let d = tempfile::tempdir().expect("tempdir");
        let out = tempfile::tempdir().expect("tempdir");
        let log = out.path().join("log");
        let append = format!(
            "#!/bin/sh\necho \"$0 $CAS_RENEWD_CERT_NAME\" >> {}\n",
            log.display()
        );
        file(d.path(), "10-first", &append, 0o755);
        file(d.path(), "20-fails", &format!("{append}exit 4\n"), 0o755);
        file(d.path(), "30-never", &append, 0o755);
        let ctx = HookContext {
            cert_name: "www".into(),
            ..Default::default()
        };
        let err = run(d.path(), Duration::from_secs(10), &ctx)
            .await
            .expect_err("the second program fails");
        assert!(
            err.to_string().contains("hooks_dir/20-fails")
                && err.to_string().contains("exit status: 4"),
            "{err}"
        );
        let ran = std::fs::read_to_string(&log).expect("log");
        let names: Vec<&str> = ran
            .lines()
            .map(|l| l.rsplit('/').next().unwrap_or_default())
            .collect();
        assert_eq!(names, ["10-first www", "20-fails www"]);
    }
}

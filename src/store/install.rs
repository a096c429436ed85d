//! The output layout: four PEM files in `output.dir`, the set they replace kept
//! under `.history/<time>/`, and the checks that the directory is safe to write.

use std::fs;
use std::path::{Path, PathBuf};

use chrono::Utc;

use super::safe_fs::{check_dir_secure, create_dir_tree, describe, make_dir, read_regular};
use super::{FileSpec, FileWrite, StoreError, atomic_write_crashing, io, output_ids, sync_dir};
use crate::secret::Secret;

/// Where and how a certificate's files are installed (`certificates[].output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub dir: PathBuf,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub key_mode: u32,
    pub cert_mode: u32,
    /// How many replaced sets `.history` keeps.
    pub keep: u32,
    /// Install even when users other than root or `owner` can change the
    /// directory or one of its parents (sshd's StrictModes, off).
    pub allow_insecure_dir: bool,
}

impl OutputSpec {
    pub const DEFAULT_KEY_MODE: u32 = 0o600;
    pub const DEFAULT_CERT_MODE: u32 = 0o644;
    pub const DEFAULT_KEEP: u32 = 5;

    /// The leaf of the installed `cert.pem`; `None` when there is none or it cannot
    /// be read (what an operator put there is not judged).
    pub fn installed_leaf(&self) -> Option<crate::pki::CertInfo> {
        let pem = super::read_output_text(&self.dir.join(CERT_FILE)).ok()??;
        crate::pki::read_leaf(&pem).ok()
    }
}

impl Default for OutputSpec {
    /// The key readable by root only, the certificates by everyone, five old sets
    /// kept. `dir` is empty: every certificate has its own, so callers set it
    /// (`OutputSpec { dir, ..Default::default() }`).
    fn default() -> Self {
        OutputSpec {
            dir: PathBuf::new(),
            owner: None,
            group: None,
            key_mode: Self::DEFAULT_KEY_MODE,
            cert_mode: Self::DEFAULT_CERT_MODE,
            keep: Self::DEFAULT_KEEP,
            allow_insecure_dir: false,
        }
    }
}

/// The four PEM files of an installed certificate.
#[derive(Debug, Clone)]
pub struct CertificateFiles {
    pub cert_pem: String,
    pub chain_pem: String,
    pub fullchain_pem: String,
    pub key_pem: Secret,
}

pub const CERT_FILE: &str = "cert.pem";
pub const CHAIN_FILE: &str = "chain.pem";
pub const FULLCHAIN_FILE: &str = "fullchain.pem";
pub const KEY_FILE: &str = "privkey.pem";
pub const HISTORY_DIR: &str = ".history";

/// Each file of the set with its mode and owner, in the order they are renamed.
pub(super) fn file_specs(out: &OutputSpec) -> Result<[(&'static str, FileSpec); 4], StoreError> {
    let (uid, gid) = output_ids(out)?;
    let cert = FileSpec {
        mode: out.cert_mode,
        uid,
        gid,
    };
    let key = FileSpec {
        mode: out.key_mode,
        uid,
        gid,
    };
    Ok([
        (CERT_FILE, cert),
        (CHAIN_FILE, cert),
        (FULLCHAIN_FILE, cert),
        (KEY_FILE, key),
    ])
}

/// Refuses an output directory other users could change (unless
/// `output.allow_insecure_dir`), and one that is itself a symlink when that check
/// is off: with it on, only root or the owner could have made the link.
pub fn check_output_dir(out: &OutputSpec) -> Result<(), StoreError> {
    let meta = fs::symlink_metadata(&out.dir).map_err(io(&out.dir, "stat"))?;
    if out.allow_insecure_dir {
        if !meta.file_type().is_dir() {
            return Err(StoreError::NotADirectory {
                path: out.dir.clone(),
                kind: describe(meta.file_type()),
            });
        }
        return Ok(());
    }
    let (uid, _) = output_ids(out)?;
    check_dir_secure(&out.dir, uid)
}

/// Installs `files` in `out.dir`: the current set is first copied to
/// `.history/<time>/` (keeping `out.keep` versions), then the four files are
/// replaced in one atomic write. Returns the paths written.
pub fn install(out: &OutputSpec, files: &CertificateFiles) -> Result<Vec<PathBuf>, StoreError> {
    let names = file_specs(out)?;
    create_dir_tree(&out.dir, 0o755)?;
    check_output_dir(out)?;
    if out.keep > 0 {
        save_history(out, &names)?;
    }
    let contents: [&[u8]; 4] = [
        files.cert_pem.as_bytes(),
        files.chain_pem.as_bytes(),
        files.fullchain_pem.as_bytes(),
        files.key_pem.expose().as_bytes(),
    ];
    write_set(&out.dir, &names, contents)
}

/// Replaces the four files of `dir` in one atomic write.
pub(super) fn write_set(
    dir: &Path,
    names: &[(&'static str, FileSpec); 4],
    contents: [&[u8]; 4],
) -> Result<Vec<PathBuf>, StoreError> {
    let writes: Vec<FileWrite<'_>> = names
        .iter()
        .zip(contents)
        .map(|((name, spec), data)| FileWrite {
            path: dir.join(name),
            data,
            spec: *spec,
        })
        .collect();
    atomic_write_crashing(
        &writes,
        Some(super::faults::CrashPoint::BetweenInstallRenames),
    )?;
    Ok(writes.into_iter().map(|w| w.path).collect())
}

/// Copies the current set into a new `.history/<time>/` and prunes old versions.
/// Nothing here follows a symlink: a `.history` that is not a real directory is
/// left alone (with a warning) rather than followed, and a current file that is
/// not a regular file is not copied.
fn save_history(out: &OutputSpec, names: &[(&'static str, FileSpec); 4]) -> Result<(), StoreError> {
    let mut old = Vec::new();
    for (name, spec) in names {
        let path = out.dir.join(name);
        match read_regular(&path, super::safe_fs::MAX_OUTPUT_FILE_BYTES) {
            Ok(Some(data)) => old.push((*name, data, *spec)),
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "not kept in {HISTORY_DIR}"),
        }
    }
    if !old.iter().any(|(n, _, _)| *n == CERT_FILE) {
        return Ok(());
    }
    let hist = out.dir.join(HISTORY_DIR);
    if let Err(e) = make_dir(&hist, 0o700) {
        tracing::warn!(error = %e, "previous certificate not kept; remove {} to keep history again", hist.display());
        return Ok(());
    }
    let version = hist.join(Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string());
    make_dir(&version, 0o700)?;
    let writes: Vec<FileWrite<'_>> = old
        .iter()
        .map(|(n, d, s)| FileWrite {
            path: version.join(n),
            data: d,
            spec: *s,
        })
        .collect();
    super::atomic_write(&writes)?;
    prune_history(&hist, out.keep as usize)
}

/// Whether `name` is one of the version directories [`save_history`] makes.
pub(super) fn is_version_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 20
        && b[8] == b'T'
        && b[15] == b'.'
        && b[19] == b'Z'
        && b.iter()
            .enumerate()
            .all(|(i, c)| matches!(i, 8 | 15 | 19) || c.is_ascii_digit())
}

/// The version directories of `hist`, oldest first: real directories only, by
/// the type of the entry itself (a symlink is never a version).
pub(super) fn history_versions(hist: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut versions: Vec<PathBuf> = fs::read_dir(hist)
        .map_err(io(hist, "list"))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| is_version_name(&e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    versions.sort();
    Ok(versions)
}

fn prune_history(hist: &Path, keep: usize) -> Result<(), StoreError> {
    let mut versions = history_versions(hist)?;
    while versions.len() > keep {
        let v = versions.remove(0);
        // `remove_dir_all` does not follow symlinks below `v`.
        fs::remove_dir_all(&v).map_err(io(&v, "remove old version"))?;
    }
    sync_dir(hist)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _, symlink};

    pub(crate) fn out(dir: &Path, keep: u32) -> OutputSpec {
        OutputSpec {
            dir: dir.to_owned(),
            key_mode: 0o640,
            keep,
            ..Default::default()
        }
    }

    fn files(tag: &str) -> CertificateFiles {
        CertificateFiles {
            cert_pem: format!("cert {tag}"),
            chain_pem: format!("chain {tag}"),
            fullchain_pem: format!("fullchain {tag}"),
            key_pem: Secret::new(format!("key {tag}")),
        }
    }

    #[test]
    fn the_installed_leaf_is_read_from_cert_pem_or_is_none() {
        use cas_sim::ca::{Ca, Twist};
        let d = tempfile::tempdir().expect("tempdir");
        let o = out(&d.path().join("www"), 2);
        assert!(o.installed_leaf().is_none(), "no directory yet");
        install(&o, &files("not a certificate")).expect("install");
        assert!(o.installed_leaf().is_none(), "unreadable cert.pem");
        let key = crate::pki::Key::generate(crate::pki::KeyAlgorithm::EcdsaP256).expect("key");
        let now = ::time::OffsetDateTime::now_utc();
        let not_after = now + ::time::Duration::days(90);
        let issued = Ca::new()
            .expect("ca")
            .issue(
                Some(&key.csr_pem("www.example.com", &[]).expect("csr")),
                &[],
                "ECC",
                now - ::time::Duration::hours(1),
                not_after,
                Twist::None,
            )
            .expect("issue");
        let mut set = files("real");
        set.cert_pem = issued.leaf_pem;
        install(&o, &set).expect("install");
        let leaf = o.installed_leaf().expect("a leaf");
        assert_eq!(leaf.not_after, not_after.unix_timestamp());
    }

    #[test]
    fn install_writes_four_files_and_keeps_history() {
        let d = tempfile::tempdir().expect("tempdir");
        let o = out(&d.path().join("www"), 2);
        for i in 0..4 {
            install(&o, &files(&i.to_string())).expect("install");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(
            fs::read_to_string(o.dir.join(CERT_FILE)).expect("cert"),
            "cert 3"
        );
        assert_eq!(
            fs::read_to_string(o.dir.join(KEY_FILE)).expect("key"),
            "key 3"
        );
        assert_eq!(
            fs::metadata(o.dir.join(KEY_FILE)).expect("m").mode() & 0o777,
            0o640
        );
        assert_eq!(
            fs::metadata(o.dir.join(FULLCHAIN_FILE)).expect("m").mode() & 0o777,
            0o644
        );
        let hist: Vec<_> = fs::read_dir(o.dir.join(HISTORY_DIR))
            .expect("ls")
            .flatten()
            .collect();
        assert_eq!(hist.len(), 2, "keep 2 versions");
        let mut versions: Vec<String> = hist
            .iter()
            .map(|e| fs::read_to_string(e.path().join(CERT_FILE)).expect("old cert"))
            .collect();
        versions.sort();
        assert_eq!(versions, ["cert 1", "cert 2"]);
    }

    /// Issue 15 item 1: `.history -> /some/dir` made prune delete that directory's
    /// subdirectories.
    #[test]
    fn a_planted_history_symlink_is_not_followed() {
        let d = tempfile::tempdir().expect("tempdir");
        let victim = d.path().join("victim");
        for sub in ["a", "b", "c", "20200101T000000.000Z"] {
            fs::create_dir_all(victim.join(sub)).expect("mkdir");
        }
        let o = out(&d.path().join("www"), 1);
        install(&o, &files("0")).expect("first install");
        symlink(&victim, o.dir.join(HISTORY_DIR)).expect("plant .history");
        install(&o, &files("1")).expect("install still works");
        install(&o, &files("2")).expect("install still works");
        let left: Vec<_> = fs::read_dir(&victim).expect("ls").flatten().collect();
        assert_eq!(left.len(), 4, "nothing under the link's target was removed");
        assert_eq!(
            fs::read_to_string(o.dir.join(CERT_FILE)).expect("cert"),
            "cert 2"
        );
    }

    #[test]
    fn prune_keeps_entries_that_are_not_versions() {
        let d = tempfile::tempdir().expect("tempdir");
        let o = out(&d.path().join("www"), 1);
        install(&o, &files("0")).expect("install");
        let hist = o.dir.join(HISTORY_DIR);
        fs::create_dir_all(hist.join("operator-notes")).expect("mkdir");
        let target = d.path().join("t");
        fs::create_dir_all(target.join("x")).expect("mkdir");
        symlink(&target, hist.join("20000101T000000.000Z")).expect("symlink");
        for i in 1..4 {
            install(&o, &files(&i.to_string())).expect("install");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(hist.join("operator-notes").is_dir());
        assert!(target.join("x").is_dir(), "link target untouched");
        assert_eq!(history_versions(&hist).expect("ls").len(), 1);
    }

    /// A FIFO or a symlink where a current file should be is neither read (which
    /// would block or leak the link target into history) nor an obstacle.
    #[test]
    fn special_files_in_the_output_dir_are_not_read_into_history() {
        let d = tempfile::tempdir().expect("tempdir");
        let o = out(&d.path().join("www"), 3);
        install(&o, &files("0")).expect("install");
        let secret = d.path().join("shadow");
        fs::write(&secret, "root:secret").expect("write");
        fs::remove_file(o.dir.join(CHAIN_FILE)).expect("rm");
        symlink(&secret, o.dir.join(CHAIN_FILE)).expect("symlink");
        fs::remove_file(o.dir.join(FULLCHAIN_FILE)).expect("rm");
        let st = std::process::Command::new("mkfifo")
            .arg(o.dir.join(FULLCHAIN_FILE))
            .status()
            .expect("mkfifo");
        assert!(st.success());
        install(&o, &files("1")).expect("install");
        let v = history_versions(&o.dir.join(HISTORY_DIR)).expect("ls");
        assert_eq!(v.len(), 1);
        assert!(v[0].join(CERT_FILE).is_file());
        assert!(!v[0].join(CHAIN_FILE).exists(), "link target not copied");
        assert!(!v[0].join(FULLCHAIN_FILE).exists());
        assert_eq!(fs::read_to_string(&secret).expect("read"), "root:secret");
        assert_eq!(
            fs::read_to_string(o.dir.join(FULLCHAIN_FILE)).expect("read"),
            "fullchain 1"
        );
    }

    #[test]
    fn an_insecure_output_dir_is_refused_unless_allowed() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut o = out(&d.path().join("www"), 1);
        install(&o, &files("0")).expect("install");
        fs::set_permissions(&o.dir, fs::Permissions::from_mode(0o777)).expect("chmod");
        let msg = install(&o, &files("1")).expect_err("refused").to_string();
        assert!(msg.contains("chmod go-w"), "{msg}");
        assert_eq!(
            fs::read_to_string(o.dir.join(CERT_FILE)).expect("cert"),
            "cert 0",
            "nothing written"
        );
        o.allow_insecure_dir = true;
        install(&o, &files("1")).expect("allowed");

        fs::set_permissions(&o.dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        o.allow_insecure_dir = false;
        std::os::unix::fs::chown(&o.dir, Some(65534), None).expect("chown");
        let msg = install(&o, &files("2")).expect_err("refused").to_string();
        assert!(
            msg.contains("uid 65534") && msg.contains("chown root"),
            "{msg}"
        );
    }

    /// Issue 15 item 9: an output directory that is a symlink out of place.
    #[test]
    fn a_symlinked_output_dir_is_judged_by_its_target() {
        let d = tempfile::tempdir().expect("tempdir");
        let elsewhere = d.path().join("elsewhere");
        fs::create_dir_all(&elsewhere).expect("mkdir");
        fs::set_permissions(&elsewhere, fs::Permissions::from_mode(0o777)).expect("chmod");
        let link = d.path().join("www");
        symlink(&elsewhere, &link).expect("symlink");
        let o = out(&link, 1);
        let msg = install(&o, &files("0")).expect_err("refused").to_string();
        assert!(msg.contains(&*elsewhere.to_string_lossy()), "{msg}");
        assert_eq!(fs::read_dir(&elsewhere).expect("ls").count(), 0);
        // With the check off, the link itself is not followed.
        let mut o = o;
        o.allow_insecure_dir = true;
        assert!(install(&o, &files("0")).is_err());
        assert_eq!(fs::read_dir(&elsewhere).expect("ls").count(), 0);
    }

    #[test]
    fn created_directories_ignore_the_umask() {
        let d = tempfile::tempdir().expect("tempdir");
        let o = out(&d.path().join("a/b/www"), 2);
        install(&o, &files("0")).expect("install");
        install(&o, &files("1")).expect("install");
        for (p, mode) in [("a", 0o755), ("a/b", 0o755), ("a/b/www", 0o755)] {
            let m = fs::metadata(d.path().join(p)).expect("stat").mode() & 0o7777;
            assert_eq!(m, mode, "{p}");
        }
        let h = fs::metadata(o.dir.join(HISTORY_DIR)).expect("stat").mode() & 0o7777;
        assert_eq!(h, 0o700);
    }
}

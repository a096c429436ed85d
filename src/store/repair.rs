//! Start-up repair, before any pass: a set torn by a crash between the renames of
//! one install (new `cert.pem`, old `privkey.pem`) is made whole again, and the
//! temporary files of interrupted atomic writes (one may hold a new key) go.

use std::fs;
use std::path::{Path, PathBuf};

use super::OutputSpec;
use super::install::{file_specs, history_versions, write_set};
use super::safe_fs::read_output_text;
use super::{
    CERT_FILE, FULLCHAIN_FILE, HISTORY_DIR, KEY_FILE, Phase, StateDir, StoreError,
    check_output_dir, is_temp_name, remove_file,
};
use crate::pki::{self, Chain, Key};

/// What the repair needs to know of a configured certificate; the configuration's
/// certificate implements it, so this module does not depend on the configuration.
pub trait RepairTarget {
    /// The certificate's name: its journal's name.
    fn name(&self) -> &str;
    fn output(&self) -> &OutputSpec;
    /// The hooks to run once a repaired set is whole again.
    fn reload(&self) -> &[String];
}

/// What the start-up repair did for one certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repaired {
    /// The set was completed from the journal's issued certificate and key.
    FromJournal,
    /// The set was completed from the interrupted install's temporary files.
    FromTemporaries,
    /// The last matching set was restored from this `.history` version.
    FromHistory(PathBuf),
}

impl std::fmt::Display for Repaired {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Repaired::FromJournal => f.write_str("from the journal"),
            Repaired::FromTemporaries => {
                f.write_str("from the interrupted install's temporary files")
            }
            Repaired::FromHistory(p) => write!(f, "from {}", p.display()),
        }
    }
}

/// The leaf of a set whose files disagree (cert/fullchain/key), if they do.
/// Files this program cannot parse are not judged: they may be an operator's.
fn torn_leaf(dir: &Path) -> Result<Option<pki::CertInfo>, StoreError> {
    let Some(cert) = read_output_text(&dir.join(CERT_FILE))? else {
        return Ok(None);
    };
    let Ok(leaf) = pki::read_leaf(&cert) else {
        return Ok(None);
    };
    let key_ok = match read_output_text(&dir.join(KEY_FILE))? {
        None => false,
        Some(pem) => Key::from_pem(&pem).map_or(true, |k| k.spki_sha256() == leaf.spki_sha256),
    };
    let full_ok = match read_output_text(&dir.join(FULLCHAIN_FILE))? {
        None => false,
        Some(pem) => pki::read_leaf(&pem).map_or(true, |f| f.sha256 == leaf.sha256),
    };
    Ok((!(key_ok && full_ok)).then_some(leaf))
}

/// A whole set: the chain (leaf first) and a key that fits its leaf.
fn write_chain(cert: &impl RepairTarget, chain: &Chain, key_pem: &str) -> Result<(), StoreError> {
    let names = file_specs(cert.output())?;
    write_set(
        &cert.output().dir,
        &names,
        [
            chain.leaf_pem().as_bytes(),
            chain.chain_pem().as_bytes(),
            chain.fullchain_pem().as_bytes(),
            key_pem.as_bytes(),
        ],
    )?;
    Ok(())
}

/// The journal's issued chain and key, when the journal is at `issued` and they fit.
fn from_journal(state: &StateDir, cert: &impl RepairTarget) -> Option<(Chain, String)> {
    let Phase::Issued(issued) = state.load_journal(cert.name()).ok()?.phase else {
        return None;
    };
    let chain = Chain::parse(&read_output_text(&issued.issued_path).ok()??).ok()?;
    let key_pem = read_output_text(&issued.key.key_path).ok()??;
    let key = Key::from_pem(&key_pem).ok()?;
    (key.spki_sha256() == chain.leaf.spki_sha256).then_some((chain, key_pem))
}

/// The interrupted install's own files: `cert.pem` is renamed first, so it is
/// the new leaf; its key and full chain are in place or still in temporaries.
fn from_temporaries(dir: &Path, leaf: &pki::CertInfo) -> Option<(Chain, String)> {
    let candidates = |name: &str| -> Vec<PathBuf> {
        let prefix = format!(".{name}.tmp-");
        let mut v: Vec<PathBuf> = fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .filter(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(&prefix) && is_temp_name(&n)
            })
            .map(|e| e.path())
            .collect();
        v.push(dir.join(name));
        v
    };
    let key_pem = candidates(KEY_FILE).into_iter().find_map(|p| {
        let pem = read_output_text(&p).ok()??;
        let k = Key::from_pem(&pem).ok()?;
        (k.spki_sha256() == leaf.spki_sha256).then_some(pem)
    })?;
    let chain = candidates(FULLCHAIN_FILE).into_iter().find_map(|p| {
        let c = Chain::parse(&read_output_text(&p).ok()??).ok()?;
        (c.leaf.sha256 == leaf.sha256).then_some(c)
    })?;
    Some((chain, key_pem))
}

/// The newest `.history` version whose files agree.
fn from_history(dir: &Path) -> Option<(PathBuf, Chain, String)> {
    let hist = dir.join(HISTORY_DIR);
    if !fs::symlink_metadata(&hist).is_ok_and(|m| m.file_type().is_dir()) {
        return None;
    }
    history_versions(&hist)
        .ok()?
        .into_iter()
        .rev()
        .find_map(|v| {
            let leaf = pki::read_leaf(&read_output_text(&v.join(CERT_FILE)).ok()??).ok()?;
            let chain = Chain::parse(&read_output_text(&v.join(FULLCHAIN_FILE)).ok()??).ok()?;
            let key_pem = read_output_text(&v.join(KEY_FILE)).ok()??;
            let key = Key::from_pem(&key_pem).ok()?;
            (chain.leaf.sha256 == leaf.sha256 && key.spki_sha256() == leaf.spki_sha256)
                .then_some((v, chain, key_pem))
        })
}

/// Adds the certificate's reload hooks to its journal; the next pass runs them.
fn queue_reload(state: &StateDir, cert: &impl RepairTarget) -> Result<(), StoreError> {
    let mut j = state.load_journal(cert.name())?;
    let before = j.reload_pending.len();
    for h in cert.reload() {
        if !j.reload_pending.contains(h) {
            j.reload_pending.push(h.clone());
        }
    }
    if j.reload_pending.len() == before {
        return Ok(());
    }
    state.save_journal(&mut j)
}

/// Makes the set of `cert` whole again if a crash tore it; `None` when it was
/// whole (or nothing is installed).
pub fn repair_set(
    state: &StateDir,
    cert: &impl RepairTarget,
) -> Result<Option<Repaired>, StoreError> {
    let dir = &cert.output().dir;
    if !fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir()) {
        return Ok(None);
    }
    let Some(leaf) = torn_leaf(dir)? else {
        return Ok(None);
    };
    check_output_dir(cert.output())?;
    if let Some((chain, key)) = from_journal(state, cert) {
        write_chain(cert, &chain, &key)?;
        return Ok(Some(Repaired::FromJournal));
    }
    // The resumed journal reloads after its install; the other two repairs change
    // what is served without a journal step, so they queue the reload themselves.
    if let Some((chain, key)) = from_temporaries(dir, &leaf) {
        write_chain(cert, &chain, &key)?;
        queue_reload(state, cert)?;
        return Ok(Some(Repaired::FromTemporaries));
    }
    if let Some((v, chain, key)) = from_history(dir) {
        write_chain(cert, &chain, &key)?;
        queue_reload(state, cert)?;
        return Ok(Some(Repaired::FromHistory(v)));
    }
    Err(StoreError::Unrepairable { path: dir.clone() })
}

/// Removes the temporaries of [`super::atomic_write`] directly in `dir`: only
/// entries named exactly like one, and only files or symlinks (the entry itself
/// is removed; nothing is followed).
pub fn remove_temporaries(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut removed = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(super::io(dir, "list")(e)),
    };
    for e in entries.filter_map(Result::ok) {
        let is_file_or_link = e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink());
        if is_file_or_link && is_temp_name(&e.file_name().to_string_lossy()) {
            remove_file(&e.path())?;
            removed.push(e.path());
        }
    }
    Ok(removed)
}

/// Start-up repair of every certificate in `certs` and the state directory;
/// logs what it did. A certificate that cannot be repaired is logged and left
/// for its pass (which reports it); the others are still repaired.
pub fn at_start(state: &StateDir, certs: &[impl RepairTarget]) {
    for cert in certs {
        match repair_set(state, cert) {
            Ok(None) => {}
            Ok(Some(how)) => {
                tracing::warn!(cert = %cert.name(), dir = %cert.output().dir.display(), repaired = %how, "the certificate and key on disk did not match (an install was interrupted); repaired")
            }
            Err(e) => {
                tracing::error!(cert = %cert.name(), error = %e, "the certificate and key on disk do not match and could not be repaired; its temporary files are kept (one may hold the only copy of the new key)");
                continue;
            }
        }
        let dir = &cert.output().dir;
        let mut dirs = vec![dir.clone()];
        let hist = dir.join(HISTORY_DIR);
        if fs::symlink_metadata(&hist).is_ok_and(|m| m.file_type().is_dir()) {
            dirs.extend(history_versions(&hist).unwrap_or_default());
        }
        if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir()) {
            for d in dirs {
                log_removed(remove_temporaries(&d));
            }
        }
    }
    let root = state.root();
    for d in [
        root.to_owned(),
        root.join("journal"),
        root.join("keys"),
        root.join("issued"),
    ] {
        log_removed(remove_temporaries(&d));
    }
}

fn log_removed(r: Result<Vec<PathBuf>, StoreError>) {
    match r {
        Ok(paths) => {
            for p in paths {
                tracing::info!(path = %p.display(), "removed a temporary file left by an interrupted write");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot remove leftover temporary files"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::KeyAlgorithm;
    use crate::store::CertificateFiles;
    use cas_sim::ca::{Ca, Twist};

    /// The part of a configured certificate the repair reads.
    struct Target {
        name: String,
        output: OutputSpec,
        reload: Vec<String>,
    }

    impl RepairTarget for Target {
        fn name(&self) -> &str {
            &self.name
        }
        fn output(&self) -> &OutputSpec {
            &self.output
        }
        fn reload(&self) -> &[String] {
            &self.reload
        }
    }

    fn cert_config(dir: &Path) -> Target {
        Target {
            name: "www".into(),
            output: OutputSpec {
                dir: dir.to_owned(),
                ..Default::default()
            },
            reload: vec![],
        }
    }

    fn issued(ca: &Ca) -> (CertificateFiles, Key) {
        let key = Key::generate(KeyAlgorithm::EcdsaP256).expect("key");
        let now = ::time::OffsetDateTime::now_utc();
        let i = ca
            .issue(
                Some(&key.csr_pem("www.example.com", &[]).expect("csr")),
                &[],
                "ECC",
                now - ::time::Duration::hours(1),
                now + ::time::Duration::days(90),
                Twist::None,
            )
            .expect("issue");
        let chain = Chain::parse(&format!("{}{}", i.leaf_pem, i.chain_pem)).expect("chain");
        (
            CertificateFiles {
                cert_pem: chain.leaf_pem(),
                chain_pem: chain.chain_pem(),
                fullchain_pem: chain.fullchain_pem(),
                key_pem: key.pem().clone(),
            },
            key,
        )
    }

    /// The state a SIGKILL after the first rename leaves: the new `cert.pem`, the
    /// rest old, the new key in a temporary.
    fn tear(dir: &Path, new: &CertificateFiles) {
        fs::write(dir.join(CERT_FILE), &new.cert_pem).expect("write");
        fs::write(
            dir.join(".privkey.pem.tmp-00000000deadbeef"),
            new.key_pem.expose(),
        )
        .expect("write");
        fs::write(
            dir.join(".fullchain.pem.tmp-00000000deadbeef"),
            &new.fullchain_pem,
        )
        .expect("write");
    }

    fn pair_matches(dir: &Path) -> bool {
        torn_leaf(dir).expect("read").is_none()
            && Key::from_pem(&fs::read_to_string(dir.join(KEY_FILE)).expect("key"))
                .expect("key")
                .spki_sha256()
                == pki::read_leaf(&fs::read_to_string(dir.join(CERT_FILE)).expect("c"))
                    .expect("leaf")
                    .spki_sha256
    }

    #[test]
    fn a_failed_repair_keeps_the_temporary_that_holds_the_new_key() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(&d.path().join("state")).expect("state");
        let c = cert_config(&d.path().join("www"));
        let ca = Ca::new().expect("ca");
        let (old, _) = issued(&ca);
        let (new, _) = issued(&ca);
        crate::store::install(&c.output, &old).expect("install");
        tear(&c.output.dir, &new);
        // The repair must refuse to write here: the directory became world-writable.
        fs::set_permissions(&c.output.dir, fs::Permissions::from_mode(0o777)).expect("chmod");

        at_start(&state, std::slice::from_ref(&c));
        assert!(
            torn_leaf(&c.output.dir).expect("read").is_some(),
            "not repaired"
        );
        assert!(
            c.output
                .dir
                .join(".privkey.pem.tmp-00000000deadbeef")
                .exists(),
            "the only copy of the new key is kept"
        );
    }

    #[test]
    fn a_torn_set_is_completed_from_the_interrupted_install() {
        let d = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(&d.path().join("state")).expect("state");
        let mut c = cert_config(&d.path().join("www"));
        c.reload = vec!["nginx".into()];
        let ca = Ca::new().expect("ca");
        let (old, _) = issued(&ca);
        let (new, new_key) = issued(&ca);
        crate::store::install(&c.output, &old).expect("install");
        tear(&c.output.dir, &new);
        assert!(torn_leaf(&c.output.dir).expect("read").is_some());

        at_start(&state, std::slice::from_ref(&c));
        assert!(pair_matches(&c.output.dir));
        let key = fs::read_to_string(c.output.dir.join(KEY_FILE)).expect("key");
        assert_eq!(
            Key::from_pem(&key).expect("key").spki_sha256(),
            new_key.spki_sha256()
        );
        let left: Vec<String> = fs::read_dir(&c.output.dir)
            .expect("ls")
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            state.load_journal("www").expect("journal").reload_pending,
            ["nginx"],
            "the server is told to reload the repaired files"
        );
    }

    #[test]
    fn without_the_new_key_the_last_matching_set_comes_back_from_history() {
        let d = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(&d.path().join("state")).expect("state");
        let c = cert_config(&d.path().join("www"));
        let ca = Ca::new().expect("ca");
        let (one, one_key) = issued(&ca);
        let (two, _) = issued(&ca);
        let (three, _) = issued(&ca);
        crate::store::install(&c.output, &one).expect("install");
        std::thread::sleep(std::time::Duration::from_millis(5));
        crate::store::install(&c.output, &two).expect("install");
        // Only cert.pem of a third set arrived, and its key is nowhere: the newest
        // whole set is `one`, which the install of `two` saved.
        fs::write(c.output.dir.join(CERT_FILE), &three.cert_pem).expect("write");
        let how = repair_set(&state, &c).expect("repairs");
        assert!(matches!(how, Some(Repaired::FromHistory(_))), "{how:?}");
        assert!(pair_matches(&c.output.dir));
        assert_eq!(
            fs::read_to_string(c.output.dir.join(CERT_FILE)).expect("cert"),
            one.cert_pem
        );
        let key = fs::read_to_string(c.output.dir.join(KEY_FILE)).expect("key");
        assert_eq!(
            Key::from_pem(&key).expect("k").spki_sha256(),
            one_key.spki_sha256()
        );
    }

    #[test]
    fn the_journal_material_wins_and_whole_sets_are_left_alone() {
        let d = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(&d.path().join("state")).expect("state");
        let c = cert_config(&d.path().join("www"));
        let ca = Ca::new().expect("ca");
        let (old, _) = issued(&ca);
        let (new, new_key) = issued(&ca);
        crate::store::install(&c.output, &old).expect("install");
        assert_eq!(repair_set(&state, &c).expect("whole"), None);

        let key_path = state.key_path("www", "a1");
        let issued_path = state.issued_path("www", "a1");
        fs::write(&key_path, new_key.pem().expose()).expect("write");
        fs::write(&issued_path, &new.fullchain_pem).expect("write");
        let mut j = state.load_journal("www").expect("journal");
        j.phase = Phase::Issued(crate::store::Issued {
            attempt: "a1".into(),
            new_order_id: crate::ids::OrderId::new(7),
            key: crate::store::KeyFile {
                key_path,
                key_spki_sha256: new_key.spki_sha256(),
            },
            issued_path,
            renewed: true,
            instance: None,
        });
        state.save_journal(&mut j).expect("save");
        fs::write(c.output.dir.join(CERT_FILE), &new.cert_pem).expect("tear");
        assert_eq!(
            repair_set(&state, &c).expect("repairs"),
            Some(Repaired::FromJournal)
        );
        assert!(pair_matches(&c.output.dir));
        assert_eq!(
            fs::read_to_string(c.output.dir.join(KEY_FILE)).expect("key"),
            new_key.pem().expose()
        );
    }

    #[test]
    fn only_exact_temporary_names_are_removed_and_links_are_not_followed() {
        let d = tempfile::tempdir().expect("tempdir");
        let target = d.path().join("precious");
        fs::create_dir_all(&target).expect("mkdir");
        fs::write(target.join("f"), "x").expect("write");
        let dir = d.path().join("www");
        fs::create_dir_all(&dir).expect("mkdir");
        fs::write(dir.join(".cert.pem.tmp-0123456789abcdef"), "t").expect("write");
        fs::write(dir.join(".cert.pem.tmp-notatemp"), "keep").expect("write");
        fs::write(dir.join("cert.pem"), "keep").expect("write");
        std::os::unix::fs::symlink(&target, dir.join(".x.tmp-0123456789abcdef")).expect("ln");
        fs::create_dir_all(dir.join(".d.tmp-0123456789abcdef")).expect("mkdir");
        let removed = remove_temporaries(&dir).expect("clean");
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(dir.join(".cert.pem.tmp-notatemp").exists());
        assert!(dir.join("cert.pem").exists());
        assert!(dir.join(".d.tmp-0123456789abcdef").is_dir());
        assert!(target.join("f").exists(), "link target untouched");
    }
}

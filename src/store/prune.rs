//! Pruning of the state directory: the keys and issued chains of a certificate's
//! finished attempts, which would otherwise pile up under `state_dir/keys` and
//! `state_dir/issued`. The one pruning there is: run at the end of every pass and
//! import, after the reload hooks.
//!
//! The rule: a file `<name>-<attempt>.key` or `<name>-<attempt>.pem` is removed only
//! when the journal of `<name>` is idle (no renewal in progress, no hook pending, no
//! refused certificate waiting for the operator). An idle journal names no attempt
//! and no file: the installed key and chain live in the output directory (and the
//! previous ones in its `.history`), so nothing under `keys/` or `issued/` is needed
//! any more. Files of a certificate without a journal, and names that are not
//! `<name>-<12 hex digits>.<ext>`, are left alone.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;

use super::{Phase, StateDir, StoreError, io, remove_file};

/// The length of an attempt id (6 random bytes, hex).
const ATTEMPT_LEN: usize = 12;

/// What [`prune_state`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub files: Vec<PathBuf>,
}

/// `<name>-<attempt>.<ext>` split into name and attempt.
fn attempt_file(file_name: &str, ext: &str) -> Option<(String, String)> {
    let stem = file_name.strip_suffix(ext)?.strip_suffix('.')?;
    let (name, attempt) = stem.rsplit_once('-')?;
    let hex = attempt.len() == ATTEMPT_LEN
        && attempt
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    (hex && !name.is_empty()).then(|| (name.to_owned(), attempt.to_owned()))
}

/// Removes the files of finished attempts (see the module's rule) from `state`.
pub fn prune_state(state: &StateDir) -> Result<Pruned, StoreError> {
    let mut by_cert: BTreeMap<String, Vec<(String, PathBuf)>> = BTreeMap::new();
    for (sub, ext) in [("keys", "key"), ("issued", "pem")] {
        let dir = state.root().join(sub);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&dir, "list")(e)),
        };
        for e in entries.flatten() {
            let is_file = e.file_type().is_ok_and(|t| t.is_file());
            let name = e.file_name();
            if let (true, Some((cert, attempt))) =
                (is_file, name.to_str().and_then(|n| attempt_file(n, ext)))
            {
                by_cert.entry(cert).or_default().push((attempt, e.path()));
            }
        }
    }
    let mut pruned = Pruned::default();
    for (cert, files) in by_cert {
        if !state.journal_path(&cert).is_file() {
            continue;
        }
        let j = state.load_journal(&cert)?;
        if j.phase != Phase::Idle || !j.reload_pending.is_empty() {
            continue;
        }
        for (_attempt, path) in files {
            remove_file(&path)?;
            pruned.files.push(path);
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::OrderId;
    use crate::store::{FileSpec, Journal, PhaseName, write_file};

    fn put(state: &StateDir, cert: &str, attempt: &str) -> (PathBuf, PathBuf) {
        let key = state.key_path(cert, attempt);
        let chain = state.issued_path(cert, attempt);
        write_file(&key, b"key", FileSpec::private()).expect("key");
        write_file(&chain, b"chain", FileSpec::private()).expect("chain");
        (key, chain)
    }

    fn journal(state: &StateDir, cert: &str, f: impl FnOnce(&mut Journal)) {
        let mut j = state.load_journal(cert).expect("fresh");
        f(&mut j);
        state.save_journal(&mut j).expect("save");
    }

    #[test]
    fn only_finished_attempts_of_idle_certificates_are_removed() {
        let d = tempfile::tempdir().expect("tempdir");
        let state = StateDir::open(&d.path().join("state")).expect("state");
        // Idle: every finished attempt goes (the installed pair is in the output dir).
        let old1 = put(&state, "www", "0123456789ab");
        let old2 = put(&state, "www", "ba9876543210");
        journal(&state, "www", |_| {});
        // "www-api" starts like "www-": its files are its own, never www's.
        let api_busy = put(&state, "www-api", "cccccccccccc");
        journal(&state, "www-api", |j| {
            j.phase = Phase::example(PhaseName::KeyReady, OrderId::new(9));
        });
        // A renewal in progress: every attempt is kept.
        let busy_old = put(&state, "busy", "dddddddddddd");
        put(&state, "busy", "eeeeeeeeeeee");
        journal(&state, "busy", |j| {
            j.phase = Phase::example(PhaseName::OrderCreated, OrderId::new(7));
        });
        // Idle, but a hook is still to run.
        let hook_old = put(&state, "hooked", "ffffffffffff");
        journal(&state, "hooked", |j| {
            j.reload_pending = vec!["nginx".into()]
        });
        // A refused certificate waits for the operator.
        let rejected = put(&state, "refused", "111111111111");
        journal(&state, "refused", |j| {
            j.phase = Phase::example(PhaseName::Rejected, OrderId::new(8));
        });
        // No journal: not ours to judge.
        let orphan = put(&state, "gone", "333333333333");
        let odd = state.root().join("keys").join("www-notanattempt.key");
        write_file(&odd, b"x", FileSpec::private()).expect("odd");

        let pruned = prune_state(&state).expect("prune");

        let mut want = vec![old1.0, old1.1, old2.0, old2.1];
        want.sort();
        let mut got = pruned.files;
        got.sort();
        assert_eq!(got, want);
        for p in want {
            assert!(!p.exists(), "{}", p.display());
        }
        for p in [
            api_busy.0, busy_old.0, hook_old.1, rejected.0, orphan.0, odd,
        ] {
            assert!(p.exists(), "{} kept", p.display());
        }
        assert_eq!(prune_state(&state).expect("again"), Pruned::default());
    }

    #[test]
    fn attempt_file_names_are_parsed_exactly() {
        assert_eq!(
            attempt_file("www-api-0123456789ab.key", "key"),
            Some(("www-api".into(), "0123456789ab".into()))
        );
        for other in [
            "www-0123456789ab.pem",
            "www-0123456789AB.key",
            "www-0123456789a.key",
            "-0123456789ab.key",
            "www0123456789ab.key",
            "www-0123456789ab.key.tmp",
        ] {
            assert_eq!(attempt_file(other, "key"), None, "{other}");
        }
    }
}

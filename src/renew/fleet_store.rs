//! The journal store of a fleet: the local journal files for this host's facts
//! (installed leaf, pending reloads, served checks) and etcd for what the hosts
//! share (the attempt's phase, its sealed key, the issued material), every shared
//! write fenced by the certificate's lock and the journal's revision.
//!
//! The trait is synchronous; etcd is reached with `block_in_place` on the
//! multi-thread runtime the binary runs (the journal is written a handful of
//! times per renewal).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tracing::{info, warn};

use super::ports::{FleetFuture, FleetPort, JournalStore, LocalJournals, SharedIssued};
use super::report::PassObserver;
use crate::fleet::etcd::{EtcdFleet, LockHeld};
use crate::fleet::layout::{HostRecord, IssuedRecord, attempt_binding};
use crate::fleet::{FleetError, FleetEvent, FleetSpec};
use crate::ids::OrderId;
use crate::pki::Chain;
use crate::secret::Secret;
use crate::store::{self, FileSpec, Journal, Phase, StoreError};

/// What this host last read or wrote of a certificate's shared journal.
#[derive(Debug, Default)]
struct Shared {
    /// The journal key's mod_revision (0: absent); the fence of the next write.
    journal_rev: i64,
    /// The shared phase as this host sees it (local paths), serialized.
    phase: Option<String>,
    /// The lock while this host holds it: its create_revision and its lease.
    lock: Option<LockHeld>,
}

pub struct FleetJournals {
    local: LocalJournals,
    etcd: EtcdFleet,
    handle: tokio::runtime::Handle,
    certs: Mutex<HashMap<String, Shared>>,
    sealing_checked: AtomicBool,
    observer: Arc<dyn PassObserver>,
}

impl FleetJournals {
    /// The store for `spec` beside the local one at `root`. Call it on the
    /// multi-thread runtime; etcd is not contacted yet.
    pub fn connect(
        root: &std::path::Path,
        spec: &FleetSpec,
        observer: Arc<dyn PassObserver>,
    ) -> Result<FleetJournals, FleetError> {
        let handle = tokio::runtime::Handle::try_current().map_err(|e| FleetError::Etcd {
            endpoints: spec.endpoints.join(","),
            detail: format!("no async runtime: {e}"),
        })?;
        let etcd = tokio::task::block_in_place(|| handle.block_on(EtcdFleet::connect(spec)))?;
        Ok(FleetJournals {
            local: LocalJournals::at(root),
            etcd,
            handle,
            certs: Mutex::default(),
            sealing_checked: AtomicBool::new(false),
            observer,
        })
    }

    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        tokio::task::block_in_place(|| self.handle.block_on(f))
    }

    /// Passes `r` on, telling the metrics whether etcd answered.
    fn seen<T>(&self, r: Result<T, FleetError>) -> Result<T, FleetError> {
        let up = !matches!(r, Err(FleetError::Etcd { .. }));
        self.observer.fleet(&FleetEvent::EtcdUp(up));
        r
    }

    fn with_cert<R>(&self, cert: &str, f: impl FnOnce(&mut Shared) -> R) -> R {
        let mut certs = self
            .certs
            .lock()
            .expect("the fleet cache is never poisoned");
        f(certs.entry(cert.to_owned()).or_default())
    }

    /// The phase with this host's paths for the attempt's key and chain (another
    /// host's state directory may be elsewhere).
    fn localize(&self, cert: &str, phase: &mut Phase) {
        let key = |attempt: &str| self.local.key_path(cert, attempt);
        match phase {
            Phase::KeyReady(a) => a.key.key_path = key(&a.attempt),
            Phase::RenewRequested(r) => r.attempt.key.key_path = key(&r.attempt.attempt),
            Phase::OrderCreated(o)
            | Phase::ApplicationRequested(o)
            | Phase::ApplicationSubmitted(o) => {
                if let Some(k) = &mut o.key {
                    k.key_path = key(&o.attempt);
                }
            }
            Phase::Issued(i) => {
                i.key.key_path = key(&i.attempt);
                i.issued_path = self.local.issued_path(cert, &i.attempt);
            }
            Phase::Idle | Phase::Installed | Phase::Rejected(_) => {}
        }
    }

    fn shared_err(e: FleetError) -> StoreError {
        StoreError::Shared(e.to_string())
    }

    /// What the other hosts need with a new shared phase: the sealed key of a new
    /// attempt (before its paid call), the issued chain and sealed key.
    fn companions(&self, cert: &str, phase: &Phase) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let layout = self.etcd.layout();
        let seal = self.etcd.sealing_key();
        match phase {
            Phase::KeyReady(a) => {
                let pem = read_private(&a.key.key_path)?;
                let sealed = seal
                    .seal(cert, &attempt_binding(&a.attempt), pem.expose().as_bytes())
                    .map_err(Self::shared_err)?;
                Ok(vec![(
                    layout.attempt_key(cert, &a.attempt),
                    sealed.into_bytes(),
                )])
            }
            Phase::Issued(i) => {
                let chain_pem = read_private(&i.issued_path)?;
                let key_pem = read_private(&i.key.key_path)?;
                let chain = Chain::parse(chain_pem.expose())
                    .map_err(|e| StoreError::Shared(format!("the issued chain of {cert}: {e}")))?;
                let previous = self
                    .seen(self.block(self.etcd.issued(cert)))
                    .map_err(Self::shared_err)?;
                let version = previous.map_or(1, |p| p.version + 1);
                let record = IssuedRecord {
                    version,
                    order_id: i.new_order_id.get(),
                    attempt: i.attempt.clone(),
                    leaf_sha256: chain.leaf.sha256.clone(),
                    fullchain_pem: chain_pem.expose().to_owned(),
                    sealed_key: seal
                        .seal(
                            cert,
                            &issued_binding(version, chain_pem.expose()),
                            key_pem.expose().as_bytes(),
                        )
                        .map_err(Self::shared_err)?,
                    host: self.etcd.host().to_owned(),
                };
                info!(cert, version, "fleet: publishing the issued certificate");
                let value = serde_json::to_vec(&record).expect("an issued record serializes");
                Ok(vec![(layout.issued(cert), value)])
            }
            _ => Ok(vec![]),
        }
    }
}

/// What an issued record's sealed key is bound to beside the certificate: its
/// version and its chain, so a chain changed in etcd does not open.
fn issued_binding(version: u64, fullchain_pem: &str) -> String {
    format!(
        "{version}:{}",
        crate::cas::sign::sha256_hex(fullchain_pem.as_bytes())
    )
}

/// A key or chain of this host's state directory, as a secret.
fn read_private(path: &std::path::Path) -> Result<Secret, StoreError> {
    store::read_output_text(path)?
        .map(Secret::new)
        .ok_or_else(|| StoreError::Io {
            path: path.to_path_buf(),
            op: "read for the fleet",
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })
}

/// The form of a journal the hosts share: the attempt's phase and the order,
/// none of this host's facts. `Installed` (a reload pending here) is idle for
/// the others.
fn shared_form(j: &Journal) -> Journal {
    let mut s = Journal::new(&j.cert);
    s.phase = match &j.phase {
        Phase::Installed => Phase::Idle,
        p => p.clone(),
    };
    s.last_order_id = j.last_order_id;
    s
}

/// Lays the fleet's journal of a certificate over this host's: another host's
/// attempt, or its end, is the truth; a reload still pending here (`Installed`)
/// stays while the fleet is idle.
fn overlay(j: &mut Journal, shared: Journal) {
    if shared.phase.in_flight() || !matches!(j.phase, Phase::Installed) {
        j.phase = shared.phase;
    }
    j.last_order_id = shared.last_order_id.or(j.last_order_id);
}

/// [`overlay`] for every certificate; one only the fleet knows is taken as is.
fn overlay_all(
    local: Vec<(String, Journal)>,
    shared: impl Iterator<Item = (String, Journal)>,
) -> Vec<(String, Journal)> {
    let mut all: std::collections::BTreeMap<String, Journal> = local.into_iter().collect();
    for (cert, s) in shared {
        match all.get_mut(&cert) {
            Some(j) => overlay(j, s),
            None => {
                all.insert(cert, s);
            }
        }
    }
    all.into_iter().collect()
}

fn phase_text(p: &Phase) -> String {
    serde_json::to_string(p).expect("a phase serializes")
}

impl JournalStore for FleetJournals {
    fn prepare(&self) -> Result<(), StoreError> {
        self.local.prepare()
    }

    fn load_journal(&self, cert: &str) -> Result<Journal, StoreError> {
        let mut j = self.local.load_journal(cert)?;
        let key = self.etcd.layout().journal(cert);
        let v = self
            .seen(self.block(self.etcd.get(&key)))
            .map_err(Self::shared_err)?;
        let Some(data) = v.value else {
            // Nothing shared yet (a new fleet): this host's journal stands, and
            // its first shared write expects the key to be absent.
            self.with_cert(cert, |s| {
                s.journal_rev = 0;
                s.phase = Some(phase_text(&shared_form(&j).phase));
            });
            return Ok(j);
        };
        let mut shared =
            Journal::from_json(&data).map_err(|e| StoreError::Shared(format!("{key}: {e}")))?;
        self.localize(cert, &mut shared.phase);
        overlay(&mut j, shared);
        let text = phase_text(&shared_form(&j).phase);
        self.with_cert(cert, |s| {
            s.journal_rev = v.mod_revision;
            s.phase = Some(text);
        });
        Ok(j)
    }

    fn save_journal(&self, j: &mut Journal) -> Result<(), StoreError> {
        let shared = shared_form(j);
        let text = phase_text(&shared.phase);
        let (unchanged, lock_rev, journal_rev) = self.with_cert(&j.cert, |s| {
            (
                s.phase.as_deref() == Some(text.as_str()),
                s.lock.map(|l| l.rev),
                s.journal_rev,
            )
        });
        // Without the lock this host never writes the fleet's journal: a step
        // that would start or carry on an attempt is an error; an install of the
        // fleet's material (idle) is this host's own fact, kept locally.
        let lock_rev = match lock_rev {
            Some(rev) => Some(rev),
            None if !unchanged && shared.phase.in_flight() => {
                return Err(Self::shared_err(FleetError::NotLocked {
                    cert: j.cert.clone(),
                }));
            }
            None => None,
        };
        if let Some(lock_rev) = lock_rev.filter(|_| !unchanged) {
            let mut puts = vec![(
                self.etcd.layout().journal(&j.cert),
                serde_json::to_vec(&shared).expect("a journal serializes"),
            )];
            puts.extend(self.companions(&j.cert, &j.phase)?);
            let rev = self
                .seen(self.block(self.etcd.fenced_put(&j.cert, lock_rev, journal_rev, puts)))
                .map_err(Self::shared_err)?;
            self.with_cert(&j.cert, |s| {
                s.journal_rev = rev;
                s.phase = Some(text);
            });
        }
        self.local.save_journal(j)
    }

    /// This host's journals with the fleet's laid over them, and the
    /// journals of certificates only other hosts have written here: the orders
    /// other hosts' attempts follow are claimed too. Without etcd, this host's.
    fn journals(&self) -> Vec<(String, Journal)> {
        let layout = self.etcd.layout();
        let listed = match self.seen(self.block(self.etcd.list(&layout.certs()))) {
            Ok(l) => l,
            Err(e) => {
                warn!(error = %e, "fleet: the shared journals are not read; this host's stand");
                return self.local.journals();
            }
        };
        let shared = listed.into_iter().filter_map(|(key, data)| {
            let cert = layout.cert_of_journal(&key)?;
            let mut j = Journal::from_json(&data).ok()?;
            self.localize(cert, &mut j.phase);
            Some((cert.to_owned(), j))
        });
        overlay_all(self.local.journals(), shared)
    }

    fn key_path(&self, cert: &str, attempt: &str) -> std::path::PathBuf {
        self.local.key_path(cert, attempt)
    }

    fn issued_path(&self, cert: &str, attempt: &str) -> std::path::PathBuf {
        self.local.issued_path(cert, attempt)
    }

    /// This host's files, and in etcd the sealed keys of the finished attempts
    /// of the certificates this host knows (an outage leaves them for later).
    fn prune_finished(&self) -> Result<usize, StoreError> {
        let mut n = self.local.prune_finished()?;
        for (cert, _) in self.local.journals() {
            match self.prune_shared_keys(&cert) {
                Ok(k) => n += k,
                Err(e) => warn!(cert, error = %e, "fleet: old sealed keys are not pruned"),
            }
        }
        Ok(n)
    }

    fn fleet(&self) -> Option<&dyn FleetPort> {
        Some(self)
    }
}

impl FleetPort for FleetJournals {
    fn ready(&self) -> FleetFuture<'_, ()> {
        Box::pin(async move {
            if self.sealing_checked.load(Ordering::Relaxed) {
                return Ok(());
            }
            self.seen(self.etcd.check_sealing_key().await)?;
            self.sealing_checked.store(true, Ordering::Relaxed);
            Ok(())
        })
    }

    fn shared_issued<'a>(&'a self, cert: &'a str) -> FleetFuture<'a, Option<SharedIssued>> {
        Box::pin(async move {
            let Some(r) = self.seen(self.etcd.issued(cert).await)? else {
                return Ok(None);
            };
            let key = self.etcd.sealing_key().open(
                cert,
                &issued_binding(r.version, &r.fullchain_pem),
                &r.sealed_key,
            )?;
            let key = String::from_utf8(key).map_err(|_| FleetError::Unseal {
                cert: cert.to_owned(),
                version: r.version.to_string(),
            })?;
            Ok(Some(SharedIssued {
                version: r.version,
                order_id: OrderId::new(r.order_id),
                fullchain_pem: r.fullchain_pem,
                key: Secret::new(key),
                host: r.host,
            }))
        })
    }

    fn report_installed<'a>(
        &'a self,
        cert: &'a str,
        version: u64,
        leaf_sha256: &'a str,
        at: chrono::DateTime<chrono::Utc>,
    ) -> FleetFuture<'a, ()> {
        Box::pin(async move {
            let record = HostRecord {
                version,
                leaf_sha256: leaf_sha256.to_owned(),
                at: at.to_rfc3339(),
            };
            self.seen(self.etcd.report_installed(cert, &record).await)
        })
    }

    fn lock<'a>(&'a self, cert: &'a str, until: tokio::time::Instant) -> FleetFuture<'a, ()> {
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let mut told = false;
            loop {
                match self.seen(self.etcd.try_lock(cert).await)? {
                    Ok(held) => {
                        self.with_cert(cert, |s| s.lock = Some(held));
                        self.observer
                            .fleet(&FleetEvent::LockHeld { cert, held: true });
                        return Ok(());
                    }
                    Err(holder) if tokio::time::Instant::now() >= until => {
                        return Err(FleetError::Busy {
                            cert: cert.to_owned(),
                            holder: holder.host,
                            waited: humantime::format_duration(std::time::Duration::from_secs(
                                started.elapsed().as_secs(),
                            ))
                            .to_string(),
                        });
                    }
                    Err(holder) => {
                        if !told {
                            info!(cert, holder = %holder.host, "fleet: waiting for the lock");
                            told = true;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    }
                }
            }
        })
    }

    fn unlock<'a>(&'a self, cert: &'a str) -> FleetFuture<'a, ()> {
        Box::pin(async move {
            let Some(held) = self.with_cert(cert, |s| s.lock.take()) else {
                return Ok(());
            };
            self.observer
                .fleet(&FleetEvent::LockHeld { cert, held: false });
            self.seen(self.etcd.unlock(cert, held.rev).await)
        })
    }

    fn fetch_attempt<'a>(&'a self, cert: &'a str, j: &'a Journal) -> FleetFuture<'a, ()> {
        Box::pin(async move { self.fetch(cert, j).await })
    }

    fn may_spend(&self, cert: &str) -> Result<(), FleetError> {
        let Some(held) = self.with_cert(cert, |s| s.lock) else {
            return Err(FleetError::NotLocked {
                cert: cert.to_owned(),
            });
        };
        self.etcd.lease_alive(cert, held.lease)
    }
}

impl FleetJournals {
    /// Deletes `cert`'s sealed keys in etcd but the one of the attempt the
    /// fleet's journal has in flight.
    fn prune_shared_keys(&self, cert: &str) -> Result<usize, FleetError> {
        let key = self.etcd.layout().journal(cert);
        let v = self.seen(self.block(self.etcd.get(&key)))?;
        let Some(data) = v.value else {
            return Ok(0);
        };
        let j = Journal::from_json(&data).map_err(|e| FleetError::BadRecord {
            key,
            detail: e.to_string(),
        })?;
        let keep = j.phase.attempt().filter(|_| j.phase.in_flight());
        self.seen(self.block(self.etcd.prune_attempt_keys(cert, v.mod_revision, keep)))
    }

    /// Writes the attempt's key (and, once issued, its chain) from etcd when this
    /// host's state directory does not have them (another host made them).
    async fn fetch(&self, cert: &str, j: &Journal) -> Result<(), FleetError> {
        let (attempt, key_path, chain_path) = match &j.phase {
            Phase::KeyReady(a) => (&a.attempt, Some(&a.key.key_path), None),
            Phase::RenewRequested(r) => (&r.attempt.attempt, Some(&r.attempt.key.key_path), None),
            Phase::OrderCreated(o)
            | Phase::ApplicationRequested(o)
            | Phase::ApplicationSubmitted(o) => {
                (&o.attempt, o.key.as_ref().map(|k| &k.key_path), None)
            }
            Phase::Issued(i) => (&i.attempt, Some(&i.key.key_path), Some(&i.issued_path)),
            Phase::Idle | Phase::Installed | Phase::Rejected(_) => return Ok(()),
        };
        let write = |path: &std::path::Path, data: &[u8]| {
            store::write_file(path, data, FileSpec::private()).map_err(|e| FleetError::BadRecord {
                key: path.display().to_string(),
                detail: e.to_string(),
            })
        };
        if let Some(path) = key_path.filter(|p| !p.exists()) {
            let sealed = self
                .seen(
                    self.etcd
                        .get(&self.etcd.layout().attempt_key(cert, attempt))
                        .await,
                )?
                .value;
            let pem = match sealed {
                Some(s) => self.etcd.sealing_key().open(
                    cert,
                    &attempt_binding(attempt),
                    &String::from_utf8_lossy(&s),
                )?,
                None => self
                    .issued_of(cert, attempt)
                    .await?
                    .map(|r| r.key.expose().as_bytes().to_vec())
                    .ok_or_else(|| FleetError::BadRecord {
                        key: self.etcd.layout().attempt_key(cert, attempt),
                        detail: "the attempt's key is not in etcd; the attempt cannot be carried on here".into(),
                    })?,
            };
            write(path, &pem)?;
            info!(cert, attempt = %attempt, "fleet: took over the attempt's key from etcd");
        }
        if let Some(path) = chain_path.filter(|p| !p.exists()) {
            let issued =
                self.issued_of(cert, attempt)
                    .await?
                    .ok_or_else(|| FleetError::BadRecord {
                        key: self.etcd.layout().issued(cert),
                        detail: format!("holds no chain of attempt {attempt}"),
                    })?;
            write(path, issued.fullchain_pem.as_bytes())?;
        }
        Ok(())
    }

    /// The fleet's issued material when it is `attempt`'s.
    async fn issued_of(
        &self,
        cert: &str,
        attempt: &str,
    ) -> Result<Option<SharedIssued>, FleetError> {
        let Some(r) = self.seen(self.etcd.issued(cert).await)? else {
            return Ok(None);
        };
        if r.attempt != attempt {
            return Ok(None);
        }
        self.shared_issued(cert).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(cert: &str, phase: Phase, last: Option<i64>) -> (String, Journal) {
        let mut j = Journal::new(cert);
        j.phase = phase;
        j.last_order_id = last.map(OrderId::new);
        (cert.to_owned(), j)
    }

    /// Reconciliation sees the orders other hosts' attempts follow: the fleet's
    /// journals are laid over this host's, and a certificate only the fleet has
    /// written is listed too.
    #[test]
    fn the_fleet_journals_are_laid_over_this_hosts() {
        let local = vec![
            journal("www", Phase::Idle, Some(1)),
            journal("api", Phase::Installed, Some(2)),
        ];
        let shared = vec![
            journal("www", Phase::Idle, Some(5)),
            journal("api", Phase::Idle, None),
            journal("mail", Phase::Idle, Some(9)),
        ];
        let all = overlay_all(local, shared.into_iter());
        let names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["api", "mail", "www"]);
        let by = |n: &str| &all.iter().find(|(c, _)| c == n).expect(n).1;
        assert_eq!(by("www").last_order_id, Some(OrderId::new(5)));
        assert_eq!(
            by("api").phase,
            Phase::Installed,
            "a reload pending here stays"
        );
        assert_eq!(by("api").last_order_id, Some(OrderId::new(2)));
        assert_eq!(by("mail").last_order_id, Some(OrderId::new(9)));
    }
}

//! One certificate's work within a pass: the transitions of its journal, from a
//! fresh key to an installed certificate (the paid call and the application are
//! in `apply`).

use tracing::{info, warn};

use super::engine::Engine;
use super::plan::{Action, Plan};
use super::ports::JournalStore;
use super::report::{CertReport, Outcome};
use super::{EngineError, installed_leaf};
use crate::cas::api::CertificateState;
use crate::cas::inventory::Inventory;
use crate::ids::{OrderId, Subject};
use crate::pki::{self, Chain, Expectations, Key, PkiError};
use crate::secret::Secret;
use crate::settings::CertificateConfig;
use crate::store::faults::{CrashPoint, crash_point};
use crate::store::{
    self, Attempt, CertificateFiles, FileSpec, Following, InstanceRef, Issued, Journal, KeyFile,
    PaidCall, Phase, Stage, StoreError, new_attempt_id,
};

pub(super) enum Step {
    /// This certificate is finished for the pass.
    Done,
    /// The disk changed but no order did: plan again from the same listing.
    Replan,
    /// CAS still processes the order (or instance: `order` says which, in words);
    /// the pass's follow budget ran out.
    Pending { order: Subject, state: &'static str },
}

/// What a transition of the journal led to.
pub(super) enum Next {
    /// The journal moved on: the step committed its next phase through
    /// [`CertRun::commit`] itself, because what follows the commit (a paid call,
    /// a crash point, an install) must not happen before the phase is on disk.
    Moved,
    /// CAS still processes the order; following it again is a later pass's job.
    /// A success, not an error: nothing went wrong.
    Pending { order: Subject, state: &'static str },
}

/// One certificate's work within a pass.
pub(super) struct CertRun<'a> {
    pub(super) e: &'a Engine,
    pub(super) state: &'a dyn JournalStore,
    pub(super) cert: &'a CertificateConfig,
    pub(super) journal: Journal,
    pub(super) report: &'a mut CertReport,
    /// When this pass stops following unissued orders (the daemon's budget).
    pub(super) deadline: Option<tokio::time::Instant>,
    /// `renew --force`: the operator allows paying again after an unclear call.
    pub(super) force: bool,
    /// The account's orders as this pass listed them.
    /// The pass's listing (orders and instances).
    pub(super) inv: &'a Inventory,
}

impl CertRun<'_> {
    /// Writes the journal as it stands (its phase unchanged, a fact updated).
    pub(super) fn save(&mut self) -> Result<(), EngineError> {
        self.state.save_journal(&mut self.journal)?;
        Ok(())
    }

    /// The one place a transition reaches the disk: the journal moves to `next`,
    /// durably, before anything that depends on it happens.
    pub(super) fn commit(&mut self, next: Phase) -> Result<(), EngineError> {
        self.journal.set_phase(next);
        self.save()
    }

    pub(super) async fn act(&mut self, p: &Plan, force: bool) -> Result<Step, EngineError> {
        match &p.action {
            Action::Nothing => Ok(Step::Done),
            Action::Blocked => {
                self.report.outcome = Outcome::Blocked;
                self.report.message = p.reason.clone();
                warn!(cert = %self.cert.name, reason = %p.reason, "blocked");
                Ok(Step::Done)
            }
            Action::RerunReload => Ok(Step::Done),
            // After a renewal step, the pass's listing no longer shows the account:
            // planning again from it could renew twice. The next pass lists afresh.
            Action::Resume { .. } => self.resume().await,
            Action::Install { order_id } => {
                self.install_from_order(*order_id).await?;
                Ok(Step::Replan)
            }
            Action::Adopt { order_id } => {
                self.remove_journal_publication().await;
                let order = Following::adopted(new_attempt_id(), *order_id, self.e.clock.now());
                self.journal.last_error = None;
                self.commit(Phase::OrderCreated(order))?;
                info!(cert = %self.cert.name, order_id = order_id.get(), "adopted a renewal made elsewhere");
                self.resume().await
            }
            Action::Renew { source_order_id } => {
                if matches!(self.journal.phase, Phase::Rejected(_)) && !force {
                    return Ok(Step::Done);
                }
                self.start_renewal(*source_order_id, PaidCall::Renew, None, None)
                    .await?;
                self.resume().await
            }
            Action::Reissue { .. }
            | Action::InstallInstance { .. }
            | Action::AdoptInstance { .. } => self.act_on_instance(&p.action, force).await,
            Action::Reapply {
                source_order_id,
                product_code,
            } => {
                if matches!(self.journal.phase, Phase::Rejected(_)) && !force {
                    return Ok(Step::Done);
                }
                self.check_package(product_code, false).await?;
                self.start_renewal(
                    *source_order_id,
                    PaidCall::Create,
                    Some(product_code.clone()),
                    None,
                )
                .await?;
                self.resume().await
            }
        }
    }

    /// Makes the key (0600, fsynced, under the state directory) and journals it
    /// before anything is spent.
    pub(super) async fn start_renewal(
        &mut self,
        source_order_id: OrderId,
        paid_call: PaidCall,
        product_code: Option<String>,
        instance: Option<InstanceRef>,
    ) -> Result<(), EngineError> {
        // The journal is about to start afresh (`renew --force` after a refusal):
        // anything an earlier order left published goes first.
        self.remove_journal_publication().await;
        let attempt = new_attempt_id();
        let key = if self.cert.key.reuse {
            match store::read_output_text(&self.cert.output.dir.join(store::KEY_FILE)) {
                Ok(Some(pem)) => Key::from_pem(&pem)?,
                _ => self.generate_key().await?,
            }
        } else {
            self.generate_key().await?
        };
        let key_path = self.state.key_path(&self.cert.name, &attempt);
        store::write_file(
            &key_path,
            key.pem().expose().as_bytes(),
            FileSpec::private(),
        )?;
        let names = self.names_for_csr();
        let csr = key.csr_pem(&self.cert.domain, &names)?;
        let ready = Attempt {
            attempt,
            source_order_id,
            paid_call,
            product_code,
            key: KeyFile {
                key_path,
                key_spki_sha256: key.spki_sha256(),
            },
            csr_sha256: crate::cas::sign::sha256_hex(csr.as_bytes()),
            instance,
        };
        self.journal.last_error = None;
        self.commit(Phase::KeyReady(ready))?;
        info!(cert = %self.cert.name, source_order_id = source_order_id.get(), key = %key.spki_sha256(), algorithm = self.cert.key.algorithm.as_str(), "key ready");
        crash_point(CrashPoint::AfterKeyReady);
        Ok(())
    }

    async fn generate_key(&self) -> Result<Key, EngineError> {
        let alg = self.cert.key.algorithm;
        // RSA generation takes up to seconds of CPU: keep it off the runtime's workers.
        tokio::task::spawn_blocking(move || Key::generate(alg))
            .await
            .map_err(EngineError::KeyTask)?
            .map_err(EngineError::from)
    }

    /// CN is the domain; SANs are the names of the installed certificate (they came
    /// from the order), the domain first.
    pub(super) fn names_for_csr(&self) -> Vec<String> {
        let mut names = vec![self.cert.domain.clone()];
        if let Some(leaf) = installed_leaf(&self.cert.output) {
            for n in leaf.dns_names {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        names
    }

    pub(super) fn load_key(&self, k: &KeyFile) -> Result<Key, EngineError> {
        let pem = read_state_text(&k.key_path, "read key")?;
        Ok(Key::from_pem(&pem)?)
    }

    /// Carries the journal forward from wherever it stands to `Installed`. Each
    /// step takes its phase's data (a copy: on an error the journal keeps the
    /// phase last committed) and says what comes next.
    pub(super) async fn resume(&mut self) -> Result<Step, EngineError> {
        loop {
            let next = match self.journal.phase.clone() {
                Phase::KeyReady(a) => self.call_renew(a).await?,
                Phase::RenewRequested(r) => self.reconcile(r).await?,
                Phase::OrderCreated(o) => self.follow(Stage::OrderCreated, o).await?,
                Phase::ApplicationRequested(o) => {
                    self.follow(Stage::ApplicationRequested, o).await?
                }
                Phase::ApplicationSubmitted(o) => {
                    self.follow(Stage::ApplicationSubmitted, o).await?
                }
                Phase::Issued(i) => self.install_issued(i)?,
                Phase::Installed | Phase::Idle | Phase::Rejected(_) => return Ok(Step::Done),
            };
            match next {
                Next::Moved => {}
                Next::Pending { order, state } => return Ok(Step::Pending { order, state }),
            }
        }
    }

    /// The checks before install: `key`'s certificate for our domain, valid now,
    /// and expiring later than what is installed.
    pub(super) fn check_against_disk(&self, chain: &Chain, key: &Key) -> Result<(), PkiError> {
        check_pair(self.cert, self.e.clock.now().timestamp(), chain, key)
    }

    /// Installs the saved chain and key; the journal says `Installed` only after
    /// every file and the directory are synced.
    fn install_issued(&mut self, issued: Issued) -> Result<Next, EngineError> {
        let path = &issued.issued_path;
        let pem = read_state_text(path, "read issued certificate")?;
        let key = self.load_key(&issued.key)?;
        let chain = Chain::parse(&pem)?;
        if chain.leaf.spki_sha256 != key.spki_sha256() {
            return Err(EngineError::SavedPairMismatch);
        }
        // Only a renewal of ours made a CSR; an adopted order did not.
        self.install_chain(&chain, &key, issued.renewed)?;
        Ok(Next::Moved)
    }

    pub(super) fn install_chain(
        &mut self,
        chain: &Chain,
        key: &Key,
        renewed: bool,
    ) -> Result<(), EngineError> {
        let written = self.put_files(chain, key)?;
        let next = if self.journal.reload_pending.is_empty() {
            self.journal.last_success = Some(self.e.clock.now());
            Phase::Idle
        } else {
            Phase::Installed
        };
        self.commit(next)?;
        crash_point(CrashPoint::AfterInstalled);
        self.installed(chain, renewed, written);
        Ok(())
    }

    /// Installs a chain while the journal's attempt goes on (a fleet's issued
    /// material arriving while another host's attempt is in flight): the files
    /// and their fingerprint are recorded, the phase stays, since moving it would
    /// erase an attempt that may have made its paid call.
    pub(super) fn install_chain_keeping_phase(
        &mut self,
        chain: &Chain,
        key: &Key,
    ) -> Result<(), EngineError> {
        let written = self.put_files(chain, key)?;
        self.save()?;
        self.installed(chain, false, written);
        Ok(())
    }

    /// Writes the output files and records them in the journal (not saved yet).
    fn put_files(
        &mut self,
        chain: &Chain,
        key: &Key,
    ) -> Result<Vec<std::path::PathBuf>, EngineError> {
        let files = CertificateFiles {
            cert_pem: chain.leaf_pem(),
            chain_pem: chain.chain_pem(),
            fullchain_pem: chain.fullchain_pem(),
            key_pem: key.pem().clone(),
        };
        if self.report.previous_not_after.is_none() {
            self.report.previous_not_after =
                installed_leaf(&self.cert.output).map(|l| l.not_after_rfc3339());
        }
        crash_point(CrashPoint::BeforeInstall);
        let written = store::install(&self.cert.output, &files)?;
        crash_point(CrashPoint::AfterInstallFiles);
        self.journal.installed_sha256 = Some(chain.leaf.sha256.clone());
        self.journal.reload_pending = self.cert.reload.clone();
        self.journal.last_error = None;
        Ok(written)
    }

    fn installed(&mut self, chain: &Chain, renewed: bool, written: Vec<std::path::PathBuf>) {
        info!(cert = %self.cert.name, serial = %chain.leaf.serial_hex, not_after = %chain.leaf.not_after_rfc3339(), dir = %self.cert.output.dir.display(), "installed");
        self.report.outcome = if renewed {
            Outcome::Renewed
        } else {
            Outcome::Installed
        };
        self.report.message = format!(
            "{} valid until {}",
            if renewed {
                "new certificate"
            } else {
                "the order's certificate"
            },
            chain.leaf.not_after_rfc3339()
        );
        self.report.files = written;
    }

    /// Installs the certificate an existing issued order holds (first install, or a
    /// renewal made elsewhere whose key CAS generated).
    async fn install_from_order(&mut self, order: OrderId) -> Result<(), EngineError> {
        let Some((chain, key)) = order_pair(self.e, self.cert, order).await? else {
            self.journal.unusable_orders.push(order);
            let msg = format!(
                "order {order} holds a certificate for a key this host does not have; not installed"
            );
            self.journal.last_error = Some(msg.clone());
            self.save()?;
            warn!(cert = %self.cert.name, order_id = order.get(), "{msg}");
            return Ok(());
        };
        self.check_against_disk(&chain, &key)?;
        self.journal.last_order_id = Some(order);
        self.report.order_id = Some(order);
        self.install_chain(&chain, &key, false)
    }
}

/// A key or chain the journal names under the state directory, read like the
/// output files (a regular file only, no link followed, no FIFO blocked on,
/// bounded); a missing one is an error here.
fn read_state_text(path: &std::path::Path, op: &'static str) -> Result<String, StoreError> {
    store::read_output_text(path)?.ok_or_else(|| StoreError::Io {
        path: path.to_path_buf(),
        op,
        source: std::io::Error::from(std::io::ErrorKind::NotFound),
    })
}

/// The chain an issued order holds, and the key when CAS made it (reads only).
pub(super) async fn issued_chain(
    e: &Engine,
    order: OrderId,
) -> Result<(Chain, Option<Secret>), EngineError> {
    let s = e.cas.describe_certificate_state(order.get()).await?.body;
    if s.state != CertificateState::Certificate {
        return Err(EngineError::NotIssued {
            order,
            state: s.state.as_str(),
        });
    }
    let pem = s.certificate.as_deref().ok_or(EngineError::NoCertificate {
        order: order.into(),
    })?;
    Ok((Chain::parse(pem)?, s.private_key))
}

/// The certificate issued order `order` holds and its key: CAS's, when it made
/// it; otherwise ours if the installed key fits. `None` when this host has no key
/// for it. Reads only (the install and the dry run's look ahead share it).
pub(super) async fn order_pair(
    e: &Engine,
    cert: &CertificateConfig,
    order: OrderId,
) -> Result<Option<(Chain, Key)>, EngineError> {
    let (chain, cas_key) = issued_chain(e, order).await?;
    let key = match cas_key.as_ref() {
        Some(k) => Some(Key::from_pem(k.expose())?),
        None => store::read_output_text(&cert.output.dir.join(store::KEY_FILE))
            .ok()
            .flatten()
            .and_then(|pem| Key::from_pem(&pem).ok())
            .filter(|k| k.spki_sha256() == chain.leaf.spki_sha256),
    };
    Ok(key.map(|k| (chain, k)))
}

/// The checks before install: `key`'s certificate for `cert`'s domain, valid at
/// `now` (Unix seconds), and expiring later than what is installed.
pub(super) fn check_pair(
    cert: &CertificateConfig,
    now: i64,
    chain: &Chain,
    key: &Key,
) -> Result<(), PkiError> {
    let disk = installed_leaf(&cert.output);
    pki::check(
        chain,
        &Expectations {
            spki_sha256: &key.spki_sha256(),
            domain: &cert.domain,
            now,
            installed_not_after: disk.as_ref().map(|d| d.not_after),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key path the journal names is read as a regular file only: a link planted
    /// there is refused, a FIFO is refused without blocking.
    #[test]
    fn state_files_are_read_without_following_links_or_blocking() {
        let d = tempfile::tempdir().expect("tempdir");
        let real = d.path().join("real.key");
        std::fs::write(&real, "-----BEGIN PRIVATE KEY-----\n").expect("write");
        assert!(read_state_text(&real, "read key").is_ok());
        let link = d.path().join("link.key");
        std::os::unix::fs::symlink(&real, &link).expect("link");
        assert!(read_state_text(&link, "read key").is_err());
        let fifo = d.path().join("fifo.key");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("fifo");
        assert!(read_state_text(&fifo, "read key").is_err());
        let missing = read_state_text(&d.path().join("gone.key"), "read key");
        assert!(missing.is_err());
    }
}

//! One certificate's work within a pass: the transitions of its journal, from a
//! fresh key to an installed certificate (the paid call and the application are
//! in `apply`).

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::engine::Engine;
use super::plan::{Action, Plan};
use super::report::{CertReport, Outcome};
use super::validation::{self, Published};
use super::{EngineError, installed_leaf, new_attempt_id};
use crate::cas::api::{CertificateOrder, CertificateState, CertificateStateResponse};
use crate::config::CertificateConfig;
use crate::pki::{self, Chain, Expectations, Key, PkiError};
use crate::store::faults::{CrashPoint, crash_point};
use crate::store::{
    self, CertificateFiles, FileSpec, Journal, JournalPhase, PaidCall, StateDir, StoreError,
};

pub(super) enum Step {
    /// This certificate is finished for the pass.
    Done,
    /// The disk changed but no order did: plan again from the same listing.
    Replan,
    /// CAS still processes the order; the pass's follow budget ran out.
    Pending { order: i64, state: &'static str },
}

/// How following an order ended within this pass.
pub(super) enum Followed {
    /// The journal moved on (issued and checked, or given up).
    Advanced,
    /// CAS still processes the order; following it again is a later pass's job.
    Pending { order: i64, state: &'static str },
}

/// One certificate's work within a pass.
pub(super) struct CertRun<'a> {
    pub(super) e: &'a Engine,
    pub(super) state: &'a StateDir,
    pub(super) cert: &'a CertificateConfig,
    pub(super) journal: Journal,
    pub(super) report: &'a mut CertReport,
    /// When this pass stops following unissued orders (the daemon's budget).
    pub(super) deadline: Option<tokio::time::Instant>,
    /// `renew --force`: the operator allows paying again after an unclear call.
    pub(super) force: bool,
    /// The account's orders as this pass listed them.
    pub(super) orders: &'a [CertificateOrder],
}

impl CertRun<'_> {
    pub(super) fn save(&mut self) -> Result<(), EngineError> {
        self.state.save_journal(&mut self.journal)?;
        Ok(())
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
                self.remove_published().await;
                self.journal = Journal {
                    cert: self.cert.name.clone(),
                    phase: JournalPhase::OrderCreated,
                    attempt: Some(new_attempt_id()),
                    new_order_id: Some(*order_id),
                    requested_at: Some(Utc::now()),
                    unusable_orders: std::mem::take(&mut self.journal.unusable_orders),
                    reload_pending: std::mem::take(&mut self.journal.reload_pending),
                    adopted: true,
                    ..Journal::default()
                };
                self.save()?;
                info!(cert = %self.cert.name, order_id, "adopted a renewal made elsewhere");
                self.resume().await
            }
            Action::Renew { source_order_id } => {
                if self.journal.phase == JournalPhase::Rejected && !force {
                    return Ok(Step::Done);
                }
                self.start_renewal(*source_order_id, PaidCall::Renew, None)
                    .await?;
                self.resume().await
            }
            Action::Reapply {
                source_order_id,
                product_code,
            } => {
                if self.journal.phase == JournalPhase::Rejected && !force {
                    return Ok(Step::Done);
                }
                self.check_package(product_code).await?;
                self.start_renewal(
                    *source_order_id,
                    PaidCall::Create,
                    Some(product_code.clone()),
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
        source_order_id: i64,
        paid_call: PaidCall,
        product_code: Option<String>,
    ) -> Result<(), EngineError> {
        // The journal is about to start afresh (`renew --force` after a refusal):
        // anything an earlier order left published goes first.
        self.remove_published().await;
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
        self.journal = Journal {
            cert: self.cert.name.clone(),
            phase: JournalPhase::KeyReady,
            attempt: Some(attempt),
            source_order_id: Some(source_order_id),
            key_path: Some(key_path),
            key_spki_sha256: Some(key.spki_sha256()),
            csr_sha256: Some(crate::cas::sign::sha256_hex(csr.as_bytes())),
            paid_call,
            product_code,
            unusable_orders: std::mem::take(&mut self.journal.unusable_orders),
            reload_pending: std::mem::take(&mut self.journal.reload_pending),
            ..Journal::default()
        };
        self.save()?;
        info!(cert = %self.cert.name, source_order_id, key = %key.spki_sha256(), algorithm = self.cert.key.algorithm.as_str(), "key ready");
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

    pub(super) fn load_key(&self) -> Result<Option<Key>, EngineError> {
        match &self.journal.key_path {
            Some(p) => {
                let pem = std::fs::read_to_string(p).map_err(|source| StoreError::Io {
                    path: p.clone(),
                    op: "read key",
                    source,
                })?;
                Ok(Some(Key::from_pem(&pem)?))
            }
            None => Ok(None),
        }
    }

    /// Carries the journal forward from wherever it stands to `Installed`.
    async fn resume(&mut self) -> Result<Step, EngineError> {
        loop {
            match self.journal.phase {
                JournalPhase::KeyReady => self.call_renew().await?,
                JournalPhase::RenewRequested => self.reconcile_or_renew().await?,
                JournalPhase::OrderCreated
                | JournalPhase::ApplicationRequested
                | JournalPhase::ApplicationSubmitted => {
                    if let Followed::Pending { order, state } = self.follow().await? {
                        return Ok(Step::Pending { order, state });
                    }
                }
                JournalPhase::Issued => self.install_issued()?,
                JournalPhase::Installed | JournalPhase::Idle | JournalPhase::Rejected => {
                    return Ok(Step::Done);
                }
            }
        }
    }

    /// When the renew call was journaled (or an adopted order taken up); now if unknown.
    pub(super) fn requested_at(&self) -> DateTime<Utc> {
        self.journal.requested_at.unwrap_or_else(Utc::now)
    }

    /// Polls DescribeCertificateState with backoff until the order is issued.
    pub(super) async fn follow(&mut self) -> Result<Followed, EngineError> {
        let order = self
            .journal
            .new_order_id
            .ok_or(EngineError::JournalIncomplete {
                phase: "order-created",
                missing: "order",
            })?;
        self.report.order_id = Some(order);
        let started = self.requested_at();
        let r = &self.e.cfg.renewal;
        let mut interval = r.poll_interval;
        let mut published = self.published_from_journal();
        let mut payed_polls = 0u32;
        let state = loop {
            let resp = self.e.cas.describe_certificate_state(order).await?;
            let s = resp.body;
            info!(cert = %self.cert.name, order_id = order, request_id = %resp.request_id, state = s.state.as_str(), "order state");
            self.e
                .observer
                .order_state(&self.cert.name, s.state.as_str());
            match s.state {
                CertificateState::Certificate => break s,
                CertificateState::VerifyFail => {
                    self.remove_published().await;
                    self.journal.validation_told = None;
                    self.journal.phase = JournalPhase::Rejected;
                    let err = EngineError::CaRejected { order };
                    self.journal.last_error = Some(err.to_string());
                    self.save()?;
                    return Err(err);
                }
                CertificateState::DomainVerify if published == Published::Nothing => {
                    published = self.publish_validation(order, &s).await?;
                }
                CertificateState::Payed => {
                    payed_polls += 1;
                    self.on_payed(order, payed_polls).await?;
                }
                _ => {}
            }
            let elapsed = (Utc::now() - started).to_std().unwrap_or_default();
            if elapsed >= r.issuance_timeout && self.journal.adopted {
                self.give_up_adopted(order, s.state).await?;
                return Ok(Followed::Advanced);
            }
            if elapsed >= r.issuance_timeout {
                let err = EngineError::IssuanceTimeout {
                    order,
                    after: r.issuance_timeout,
                    state: s.state.as_str(),
                };
                self.remove_published().await;
                self.save()?;
                return Err(err);
            }
            if self
                .deadline
                .is_some_and(|d| tokio::time::Instant::now() + interval > d)
            {
                return Ok(Followed::Pending {
                    order,
                    state: s.state.as_str(),
                });
            }
            // Waiting only: another certificate may work meanwhile.
            super::permit::sleep_without_permit(interval).await;
            interval = (interval * 2).min(r.poll_max_interval);
        };
        self.remove_published().await;
        self.journal.validation_told = None;
        self.accept_issued(
            order,
            state.certificate.as_deref(),
            state.private_key.as_ref().map(|k| k.expose()),
        )?;
        Ok(Followed::Advanced)
    }

    /// Publishes what the CA's domain check needs (DNS record, file, or the
    /// operator told once) and journals it, so it is removed also after a crash.
    async fn publish_validation(
        &mut self,
        order: i64,
        s: &CertificateStateResponse,
    ) -> Result<Published, EngineError> {
        let published = validation::publish(
            &self.e.dns,
            &self.cert.validation,
            &self.cert.domain,
            order,
            s,
            self.journal.validation_told.as_deref(),
        )
        .await?;
        match &published {
            Published::Dns { zone, record_id } => {
                self.journal.dns_record = Some((zone.clone(), record_id.clone()));
                self.save()?;
            }
            Published::File(p) => {
                self.journal.validation_file = Some(p.clone());
                self.save()?;
            }
            Published::Manual(told) if self.journal.validation_told.as_ref() != Some(told) => {
                self.journal.validation_told = Some(told.clone());
                self.save()?;
            }
            _ => {}
        }
        Ok(published)
    }

    /// Removes what validation published for the journal's order (recorded in the
    /// journal, so also after a crash) and forgets it. Called wherever an order
    /// ends: issued, verify_fail, issuance timeout, or a journal started afresh.
    /// After a timeout the order is followed again, so the operator, once told what
    /// to publish, is not told again.
    pub(super) async fn remove_published(&mut self) {
        validation::unpublish(&self.e.dns, &self.published_from_journal()).await;
        self.journal.dns_record = None;
        self.journal.validation_file = None;
    }

    pub(super) fn published_from_journal(&self) -> Published {
        if let Some((zone, id)) = &self.journal.dns_record {
            Published::Dns {
                zone: zone.clone(),
                record_id: id.clone(),
            }
        } else if let Some(p) = &self.journal.validation_file {
            Published::File(p.clone())
        } else {
            Published::Nothing
        }
    }

    /// The checks before install: `key`'s certificate for our domain, valid now,
    /// and expiring later than what is installed.
    fn check_against_disk(&self, chain: &Chain, key: &Key) -> Result<(), PkiError> {
        let disk = installed_leaf(&self.cert.output);
        pki::check(
            chain,
            &Expectations {
                spki_sha256: &key.spki_sha256(),
                domain: &self.cert.domain,
                now: Utc::now().timestamp(),
                installed_not_after: disk.as_ref().map(|d| d.not_after),
            },
        )
    }

    /// Checks an issued chain and, when it passes, saves it (and a CAS-made key)
    /// under the state directory and journals `Issued`.
    fn accept_issued(
        &mut self,
        order: i64,
        cert_pem: Option<&str>,
        cas_key: Option<&str>,
    ) -> Result<(), EngineError> {
        let our_key = self.load_key()?;
        let key = match (our_key, cas_key) {
            (Some(k), Some(_)) => {
                warn!(cert = %self.cert.name, order_id = order, "the answer carries a PrivateKey although we sent a CSR; ignored");
                k
            }
            (Some(k), None) => k,
            (None, Some(pem)) => {
                let k = Key::from_pem(pem)?;
                let attempt = self.journal.attempt.clone().unwrap_or_else(new_attempt_id);
                let path = self.state.key_path(&self.cert.name, &attempt);
                store::write_file(&path, k.pem().expose().as_bytes(), FileSpec::private())?;
                self.journal.key_path = Some(path);
                self.journal.key_spki_sha256 = Some(k.spki_sha256());
                k
            }
            (None, None) => {
                self.journal.unusable_orders.push(order);
                self.journal.phase = JournalPhase::Idle;
                let err = EngineError::ForeignKey { order };
                self.journal.last_error = Some(err.to_string());
                self.save()?;
                return Err(err);
            }
        };
        let pem = cert_pem.ok_or(EngineError::NoCertificate { order })?;
        let checked = Chain::parse(pem)
            .and_then(|chain| self.check_against_disk(&chain, &key).map(|()| chain));
        let chain = match checked {
            Ok(c) => c,
            Err(e) => {
                error!(cert = %self.cert.name, order_id = order, reason = %e, "issued certificate refused; old files kept; no new order is placed automatically");
                let err = EngineError::CertificateRefused { order, source: e };
                self.journal.phase = JournalPhase::Rejected;
                self.journal.last_error = Some(err.to_string());
                self.save()?;
                self.report.outcome = Outcome::Blocked;
                return Err(err);
            }
        };
        let attempt = self.journal.attempt.clone().unwrap_or_else(new_attempt_id);
        let issued_path = self.state.issued_path(&self.cert.name, &attempt);
        store::write_file(
            &issued_path,
            chain.fullchain_pem().as_bytes(),
            FileSpec::private(),
        )?;
        self.journal.attempt = Some(attempt);
        self.journal.issued_path = Some(issued_path);
        self.journal.new_order_id = Some(order);
        self.journal.pending_application = None;
        self.journal.phase = JournalPhase::Issued;
        self.save()?;
        info!(cert = %self.cert.name, order_id = order, serial = %chain.leaf.serial_hex, not_after = %chain.leaf.not_after_rfc3339(), "issued certificate passed its checks");
        crash_point(CrashPoint::AfterIssued);
        Ok(())
    }

    /// Installs the saved chain and key; the journal says `Installed` only after
    /// every file and the directory are synced.
    fn install_issued(&mut self) -> Result<(), EngineError> {
        let path = self
            .journal
            .issued_path
            .clone()
            .ok_or(EngineError::JournalIncomplete {
                phase: "issued",
                missing: "certificate path",
            })?;
        let pem = std::fs::read_to_string(&path).map_err(|source| StoreError::Io {
            path: path.clone(),
            op: "read issued certificate",
            source,
        })?;
        let key = self.load_key()?.ok_or(EngineError::JournalIncomplete {
            phase: "issued",
            missing: "key",
        })?;
        let chain = Chain::parse(&pem)?;
        if chain.leaf.spki_sha256 != key.spki_sha256() {
            return Err(EngineError::SavedPairMismatch);
        }
        // Only a renewal of ours made a CSR; an adopted order did not.
        let renewed = self.journal.csr_sha256.is_some();
        self.install_chain(&chain, &key, renewed)
    }

    fn install_chain(
        &mut self,
        chain: &Chain,
        key: &Key,
        renewed: bool,
    ) -> Result<(), EngineError> {
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
        self.journal.phase = JournalPhase::Installed;
        self.journal.installed_sha256 = Some(chain.leaf.sha256.clone());
        self.journal.reload_pending = self.cert.reload.clone();
        if self.journal.reload_pending.is_empty() {
            self.journal.phase = JournalPhase::Idle;
            self.journal.last_success = Some(Utc::now());
        }
        self.journal.last_error = None;
        self.save()?;
        crash_point(CrashPoint::AfterInstalled);
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
        Ok(())
    }

    /// Installs the certificate an existing issued order holds (first install, or a
    /// renewal made elsewhere whose key CAS generated).
    async fn install_from_order(&mut self, order: i64) -> Result<(), EngineError> {
        let resp = self.e.cas.describe_certificate_state(order).await?;
        let s = resp.body;
        if s.state != CertificateState::Certificate {
            return Err(EngineError::NotIssued {
                order,
                state: s.state.as_str(),
            });
        }
        let pem = s
            .certificate
            .as_deref()
            .ok_or(EngineError::NoCertificate { order })?;
        let chain = Chain::parse(pem)?;
        // The key: CAS's, when it made it; otherwise ours if the installed key fits.
        let key = match s.private_key.as_ref() {
            Some(k) => Some(Key::from_pem(k.expose())?),
            None => store::read_output_text(&self.cert.output.dir.join(store::KEY_FILE))
                .ok()
                .flatten()
                .and_then(|pem| Key::from_pem(&pem).ok())
                .filter(|k| k.spki_sha256() == chain.leaf.spki_sha256),
        };
        let Some(key) = key else {
            self.journal.unusable_orders.push(order);
            let msg = format!(
                "order {order} holds a certificate for a key this host does not have; not installed"
            );
            self.journal.last_error = Some(msg.clone());
            self.save()?;
            warn!(cert = %self.cert.name, order_id = order, "{msg}");
            return Ok(());
        };
        self.check_against_disk(&chain, &key)?;
        self.journal.source_order_id = Some(order);
        self.report.order_id = Some(order);
        self.install_chain(&chain, &key, false)
    }
}

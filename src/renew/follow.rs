//! Following an order until CAS issues it: the polls with backoff, what the CA's
//! domain check needs published (and its removal), and the checks of the issued
//! certificate before it is saved as `Issued`.

use tracing::{error, info, warn};

use super::EngineError;
use super::report::Outcome;
use super::steps::{CertRun, Next};
use super::validation::{self, Published};
use crate::cas::api::{CertificateState, CertificateStateResponse};
use crate::pki::{Chain, Key};
use crate::store::faults::{CrashPoint, crash_point};
use crate::store::{
    self, FileSpec, Following, Issued, KeyFile, Phase, Publication, Rejected, Stage,
};

/// What the journal records of a publication, as validation reads it.
fn published(p: &Publication) -> Published {
    if let Some((zone, id)) = &p.dns_record {
        Published::Dns {
            zone: zone.clone(),
            record_id: id.clone(),
        }
    } else if let Some(f) = &p.validation_file {
        Published::File(f.clone())
    } else {
        Published::Nothing
    }
}

impl CertRun<'_> {
    /// Polls DescribeCertificateState with backoff until the order is issued.
    pub(super) async fn follow(
        &mut self,
        mut stage: Stage,
        mut o: Following,
    ) -> Result<Next, EngineError> {
        let order = o.new_order_id;
        if o.instance.is_none() {
            self.report.order_id = Some(order);
        }
        let started = o.requested_at;
        let r = &self.e.cfg.renewal;
        let mut interval = r.poll_interval;
        let mut shown = published(&o.published);
        let mut payed_polls = 0u32;
        let state = loop {
            let (s, request_id) = match o.instance.clone() {
                Some(inst) => self.instance_state(&inst).await?,
                None => {
                    let resp = self.e.cas.describe_certificate_state(order.get()).await?;
                    (resp.body, resp.request_id)
                }
            };
            info!(cert = %self.cert.name, followed = %o.subject(), request_id = %request_id, state = s.state.as_str(), "order state");
            self.e
                .observer
                .order_state(&self.cert.name, s.state.as_str());
            self.on_instance_review(&mut stage, &o, s.state)?;
            match s.state {
                CertificateState::Certificate => break s,
                CertificateState::VerifyFail => {
                    self.unpublish(&mut o.published).await;
                    o.published.validation_told = None;
                    let err = EngineError::CaRejected { order: o.subject() };
                    self.journal.last_error = Some(err.to_string());
                    self.commit(Phase::Rejected(Rejected {
                        published: o.published,
                    }))?;
                    return Err(err);
                }
                CertificateState::DomainVerify if shown == Published::Nothing => {
                    shown = self.publish_validation(stage, &mut o, &s).await?;
                }
                CertificateState::Payed => {
                    payed_polls += 1;
                    self.on_payed(&mut stage, &mut o, payed_polls).await?;
                }
                _ => {}
            }
            let elapsed = (self.e.clock.now() - started).to_std().unwrap_or_default();
            if elapsed >= r.issuance_timeout && o.adopted {
                self.give_up_adopted(o, s.state).await?;
                return Ok(Next::Moved);
            }
            if elapsed >= r.issuance_timeout {
                let err = EngineError::IssuanceTimeout {
                    order: o.subject(),
                    after: r.issuance_timeout,
                    state: s.state.as_str(),
                };
                self.unpublish(&mut o.published).await;
                self.commit(Phase::following(stage, o))?;
                return Err(err);
            }
            if self
                .deadline
                .is_some_and(|d| tokio::time::Instant::now() + interval > d)
            {
                return Ok(Next::Pending {
                    order: o.subject(),
                    state: s.state.as_str(),
                });
            }
            // Waiting only: another certificate may work meanwhile.
            super::permit::sleep_without_permit(interval).await;
            interval = (interval * 2).min(r.poll_max_interval);
        };
        self.unpublish(&mut o.published).await;
        o.published.validation_told = None;
        self.accept_issued(
            o,
            state.certificate.as_deref(),
            state.private_key.as_ref().map(|k| k.expose()),
        )
    }

    /// Publishes what the CA's domain check needs (DNS record, file, or the
    /// operator told once) and journals it, so it is removed also after a crash.
    async fn publish_validation(
        &mut self,
        stage: Stage,
        o: &mut Following,
        s: &CertificateStateResponse,
    ) -> Result<Published, EngineError> {
        let shown = validation::publish(
            self.e.dns.as_ref(),
            &self.cert.validation,
            &self.cert.domain,
            o.new_order_id.get(),
            s,
            o.published.validation_told.as_deref(),
        )
        .await?;
        let p = &mut o.published;
        let changed = match &shown {
            Published::Dns { zone, record_id } => {
                p.dns_record = Some((zone.clone(), record_id.clone()));
                true
            }
            Published::File(f) => {
                p.validation_file = Some(f.clone());
                true
            }
            Published::Manual(told) if p.validation_told.as_ref() != Some(told) => {
                p.validation_told = Some(told.clone());
                true
            }
            _ => false,
        };
        if changed {
            self.commit(Phase::following(stage, o.clone()))?;
        }
        Ok(shown)
    }

    /// Removes what validation published for an order and forgets it. Called
    /// wherever an order ends: issued, verify_fail, issuance timeout, given up.
    /// After a timeout the order is followed again, so the operator, once told
    /// what to publish, is not told again.
    pub(super) async fn unpublish(&self, p: &mut Publication) {
        validation::unpublish(self.e.dns.as_ref(), &published(p)).await;
        p.dns_record = None;
        p.validation_file = None;
    }

    /// Before the journal starts afresh (a new attempt, an adopted order, `renew
    /// --force` after a refusal): what its last order left published goes first.
    pub(super) async fn remove_journal_publication(&self) {
        if let Some(mut p) = self.journal.phase.publication().cloned() {
            self.unpublish(&mut p).await;
        }
    }

    /// Checks an issued chain and, when it passes, saves it (and a CAS-made key)
    /// under the state directory and journals `Issued`.
    fn accept_issued(
        &mut self,
        o: Following,
        cert_pem: Option<&str>,
        cas_key: Option<&str>,
    ) -> Result<Next, EngineError> {
        let order = o.new_order_id;
        let (key, key_file) = match (o.key.clone(), cas_key) {
            (Some(f), cas) => {
                if cas.is_some() {
                    warn!(cert = %self.cert.name, order_id = order.get(), "the answer carries a PrivateKey although we sent a CSR; ignored");
                }
                (self.load_key(&f)?, f)
            }
            (None, Some(pem)) => {
                let k = Key::from_pem(pem)?;
                let path = self.state.key_path(&self.cert.name, &o.attempt);
                store::write_file(&path, k.pem().expose().as_bytes(), FileSpec::private())?;
                let f = KeyFile {
                    key_path: path,
                    key_spki_sha256: k.spki_sha256(),
                };
                (k, f)
            }
            (None, None) => {
                // An instance's certificate is judged afresh by the next plan (its
                // install finds no key for it and says so); an order is never again.
                if o.instance.is_none() {
                    self.journal.unusable_orders.push(order);
                }
                let err = EngineError::ForeignKey { order: o.subject() };
                self.journal.last_error = Some(err.to_string());
                self.commit(Phase::Idle)?;
                return Err(err);
            }
        };
        let pem = cert_pem.ok_or(EngineError::NoCertificate { order: o.subject() })?;
        let checked = Chain::parse(pem)
            .and_then(|chain| self.check_against_disk(&chain, &key).map(|()| chain));
        let chain = match checked {
            Ok(c) => c,
            Err(e) => {
                error!(cert = %self.cert.name, order_id = order.get(), reason = %e, "issued certificate refused; old files kept; no new order is placed automatically");
                let err = EngineError::CertificateRefused {
                    order: o.subject(),
                    source: e,
                };
                self.journal.last_error = Some(err.to_string());
                self.commit(Phase::Rejected(Rejected {
                    published: o.published,
                }))?;
                self.report.outcome = Outcome::Blocked;
                return Err(err);
            }
        };
        let issued_path = self.state.issued_path(&self.cert.name, &o.attempt);
        store::write_file(
            &issued_path,
            chain.fullchain_pem().as_bytes(),
            FileSpec::private(),
        )?;
        self.commit(Phase::Issued(Issued {
            instance: o.instance.clone(),
            renewed: o.csr_sha256.is_some(),
            attempt: o.attempt,
            new_order_id: order,
            key: key_file,
            issued_path,
        }))?;
        info!(cert = %self.cert.name, order_id = order.get(), serial = %chain.leaf.serial_hex, not_after = %chain.leaf.not_after_rfc3339(), "issued certificate passed its checks");
        crash_point(CrashPoint::AfterIssued);
        Ok(Next::Moved)
    }
}

//! The SSL Certificate Management V2.0 instance steps of a certificate's journal:
//! the re-issue's application (through the journaled application of `apply`),
//! the instance's state as the follow step reads it (GetInstanceDetail in the
//! shape of DescribeCertificateState), and the install of the certificate an
//! instance holds (GetUserCertificateDetail).

use tracing::{error, info, warn};

use super::plan::Action;
use super::steps::{CertRun, Next, Step};
use super::{EngineError, RECONCILE_GRACE};
use crate::cas::api::InstanceStatus;
use crate::cas::api::{CertificateState, CertificateStateResponse, DomainValidation};
use crate::cas::api_apply::UpdateInstanceParams;
use crate::cas::client::ApiError;
use crate::ids::{InstanceId, OrderId, Subject};
use crate::pki::{Chain, Key, KeyAlgorithm};
use crate::settings::ValidationMethod;
use crate::store::{
    self, Attempt, Following, InstanceRef, PaidCall, Phase, Rejected, Stage, new_attempt_id,
};

/// UpdateInstance's KeyAlgorithm for our key (none where CAS names no such key).
fn key_algorithm(alg: KeyAlgorithm) -> Option<&'static str> {
    match alg {
        KeyAlgorithm::Rsa2048 => Some("RSA_2048"),
        KeyAlgorithm::Rsa3072 => Some("RSA_3072"),
        KeyAlgorithm::Rsa4096 => Some("RSA_4096"),
        KeyAlgorithm::EcdsaP256 => Some("ECC_256"),
        KeyAlgorithm::EcdsaP384 => None,
    }
}

/// A DomainValidationList entry as the validation step reads a V1 order's
/// validation request: TXT/CNAME records are DNS, `HTTP` a file.
fn as_validation_request(v: &DomainValidation) -> CertificateStateResponse {
    let kind = v.validation_type.as_deref().unwrap_or("TXT");
    let file = kind.eq_ignore_ascii_case("HTTP") || kind.eq_ignore_ascii_case("FILE");
    let mut s = state(CertificateState::DomainVerify);
    if file {
        s.validate_type = Some("FILE".into());
        s.uri = v.validation_key.clone();
        s.content = v.validation_value.clone();
    } else {
        s.validate_type = Some("DNS".into());
        s.record_domain = v.validation_key.clone();
        s.record_type = Some(kind.to_owned());
        s.record_value = v.validation_value.clone();
    }
    s.domain = v.domain.clone();
    s
}

fn state(state: CertificateState) -> CertificateStateResponse {
    CertificateStateResponse {
        request_id: String::new(),
        state,
        validate_type: None,
        record_domain: None,
        record_type: None,
        record_value: None,
        domain: None,
        uri: None,
        content: None,
        certificate: None,
        private_key: None,
        cert_id: None,
    }
}

impl CertRun<'_> {
    /// Acts on a plan about an instance: re-issue, install its certificate, or
    /// follow an application made elsewhere.
    pub(super) async fn act_on_instance(
        &mut self,
        action: &Action,
        force: bool,
    ) -> Result<Step, EngineError> {
        match action {
            Action::Reissue {
                instance_id,
                certificate_id,
            } => {
                if matches!(self.journal.phase, Phase::Rejected(_)) && !force {
                    return Ok(Step::Done);
                }
                let inst = InstanceRef::new(instance_id, *certificate_id);
                self.start_renewal(OrderId::NONE, PaidCall::Reissue, None, Some(inst))
                    .await?;
                self.resume().await
            }
            Action::InstallInstance {
                instance_id,
                certificate_id,
            } => {
                self.install_from_instance(instance_id, *certificate_id)
                    .await?;
                Ok(Step::Replan)
            }
            Action::AdoptInstance {
                instance_id,
                certificate_id,
            } => {
                self.remove_journal_publication().await;
                let inst = InstanceRef::new(instance_id, *certificate_id);
                let o = Following::adopted_instance(new_attempt_id(), inst, self.e.clock.now());
                self.journal.last_error = None;
                self.commit(Phase::ApplicationSubmitted(o))?;
                info!(cert = %self.cert.name, instance_id = %instance_id, "adopted an application under review made elsewhere");
                self.resume().await
            }
            _ => Ok(Step::Done),
        }
    }

    /// The application of `instance` for our `key`: its CSR (GenerateCsrMethod
    /// `upload`), the domain, the validation method and the key's algorithm.
    pub(super) fn application(
        &self,
        instance: &str,
        key: &Key,
    ) -> Result<UpdateInstanceParams, EngineError> {
        Ok(UpdateInstanceParams {
            instance_id: instance.to_owned(),
            csr: Some(key.csr_pem(&self.cert.domain, &self.names_for_csr())?),
            domain: Some(self.cert.domain.clone()),
            validation_method: match self.cert.validation.method {
                ValidationMethod::Dns => Some("DNS".into()),
                ValidationMethod::File => Some("HTTP".into()),
                ValidationMethod::None => None,
            },
            key_algorithm: key_algorithm(self.cert.key.algorithm).map(str::to_owned),
        })
    }

    /// The re-issue's key is ready: UpdateInstance (repeatable: a failure leaves
    /// the journal at key-ready, tried again next pass), then the journaled
    /// ApplyCertificate of `apply`.
    pub(super) async fn apply_reissue(&mut self, a: Attempt) -> Result<Next, EngineError> {
        let Some(inst) = a.instance.clone() else {
            return Err(EngineError::Blocked(
                "the journal's re-issue names no instance; run `cas-renewd renew --force`".into(),
            ));
        };
        let mut inst = inst;
        if inst.previous_certificate_id.is_none() {
            // Without it the instance's current certificate would pass for the new
            // one (then refused for its key, and re-issued again at --force).
            let d = self
                .e
                .cas
                .get_instance_detail(inst.instance_id.as_str())
                .await?;
            inst.previous_certificate_id = d.body.instance.certificate_id;
        }
        let key = self.load_key(&a.key)?;
        let update = self.application(inst.instance_id.as_str(), &key)?;
        self.e.cas.update_instance(&update).await?;
        let mut o = Following {
            attempt: a.attempt,
            new_order_id: OrderId::NONE,
            source_order_id: None,
            requested_at: self.e.clock.now(),
            paid_call: PaidCall::Reissue,
            product_code: None,
            adopted: false,
            key: Some(a.key),
            csr_sha256: Some(a.csr_sha256),
            published: store::Publication::default(),
            pending_application: None,
            instance: Some(inst.clone()),
            reapplied_at: None,
        };
        let mut stage = Stage::ApplicationRequested;
        let r = self
            .apply_journaled(&mut stage, &mut o, inst.instance_id.as_str())
            .await?;
        self.after_apply(o, &inst.instance_id, r)
    }

    /// What an ApplyCertificate of ours led to: accepted (journaled by
    /// `apply_journaled`), refused (nothing under review: the operator looks), or
    /// unclear (the journal stays at application-requested, whose follow step
    /// reconciles by GetInstanceDetail before anything is applied again).
    fn after_apply(
        &mut self,
        o: Following,
        id: &InstanceId,
        r: Result<(), ApiError>,
    ) -> Result<Next, EngineError> {
        match r {
            Ok(()) => Ok(Next::Moved),
            Err(ApiError::Service(e)) => {
                let msg = format!(
                    "CAS refused ApplyCertificate for instance {id}: {}: {}; it is not repeated: fix the cause, then run `cas-renewd renew --cert {} --force`",
                    e.code, e.message, self.cert.name
                );
                error!(cert = %self.cert.name, code = %e.code, request_id = %e.request_id, "{msg}");
                self.journal.last_error = Some(msg.clone());
                self.commit(Phase::Rejected(Rejected {
                    published: o.published,
                }))?;
                Err(EngineError::Blocked(msg))
            }
            Err(e) => {
                warn!(cert = %self.cert.name, instance_id = %id, error = %e, "ApplyCertificate outcome unknown; GetInstanceDetail shows whether it was taken before anything is applied again");
                Ok(Next::Moved)
            }
        }
    }

    /// Where the followed instance stands, in the shape of DescribeCertificateState:
    /// a CertificateId other than the one before the re-issue is the new
    /// certificate (with its chain and CAS's key, if CAS made it); `pending` with a
    /// DomainValidationList waits for validation; an unknown (or missing) status
    /// may be under review (`unknow`); any other status with no new certificate
    /// has no application under review (`payed`: applied for by nobody).
    pub(super) async fn instance_state(
        &self,
        inst: &InstanceRef,
    ) -> Result<(CertificateStateResponse, String), EngineError> {
        let resp = self
            .e
            .cas
            .get_instance_detail(inst.instance_id.as_str())
            .await?;
        let d = resp.body;
        let status = d.instance.status.unwrap_or(InstanceStatus::Unknown);
        let new_cert = d
            .instance
            .certificate_id
            .filter(|c| Some(*c) != inst.previous_certificate_id);
        let s = match (status, new_cert) {
            (InstanceStatus::Pending, _) => match d.domain_validation_list.first() {
                Some(v) => as_validation_request(v),
                None => state(CertificateState::Process),
            },
            (_, Some(cert_id)) => {
                let c = self.e.cas.get_user_certificate_detail(cert_id).await?.body;
                let mut s = state(CertificateState::Certificate);
                s.certificate = c.cert;
                s.private_key = c.key;
                s.cert_id = Some(cert_id.to_string());
                s
            }
            // A status this version does not know (or none) may be a review CAS
            // runs asynchronously: waited on, never taken for "not applied".
            (InstanceStatus::Unknown, None) => state(CertificateState::Unknow),
            _ => state(CertificateState::Payed),
        };
        Ok((s, d.request_id))
    }

    /// The followed instance shows an application under review (or a status that
    /// may be one) while the journal is at application-requested after an
    /// unclear call: that call was taken, so it is journaled as submitted and
    /// never made again.
    pub(super) fn on_instance_review(
        &mut self,
        stage: &mut Stage,
        o: &Following,
        state: CertificateState,
    ) -> Result<(), EngineError> {
        let idle = matches!(
            state,
            CertificateState::Payed | CertificateState::Certificate | CertificateState::VerifyFail
        );
        if o.instance.is_none() || *stage != Stage::ApplicationRequested || idle {
            return Ok(());
        }
        info!(cert = %self.cert.name, followed = %o.subject(), state = state.as_str(), "the unclear ApplyCertificate was taken: the instance shows a review");
        *stage = Stage::ApplicationSubmitted;
        self.commit(Phase::following(*stage, o.clone()))
    }

    /// An instance followed after ApplyCertificate shows no application under
    /// review and no new certificate. After an unclear (or never sent) call the
    /// application may still be taken up late (CAS may review asynchronously), so
    /// it is made again only after `renewal.unclear_retry_after` from the first
    /// call, and once at most: the second call is journaled (`reapplied_at`)
    /// before it goes out. After an accepted one it ended without a certificate:
    /// the operator looks.
    pub(super) async fn on_instance_idle(
        &mut self,
        stage: &mut Stage,
        o: &mut Following,
        inst: InstanceRef,
    ) -> Result<(), EngineError> {
        let id = inst.instance_id.clone();
        match (*stage, o.key.clone()) {
            (Stage::ApplicationRequested, Some(_)) if o.reapplied_at.is_some() => {
                // A second call that did not clearly succeed (refused, say, because
                // the first one was taken after all, or lost in a crash) is left to
                // the operator, with the instance still followed.
                if o.pending_application.is_some()
                    && o.pending_application != self.reapply_waiting(o)
                {
                    return Ok(());
                }
                let what = self.reapplied_message(&id, o, "its outcome is unknown");
                self.pending(*stage, o, what)
            }
            (Stage::ApplicationRequested, Some(key_file)) => {
                let now = self.e.clock.now();
                if now < self.reapply_at(o) {
                    let what = self.reapply_waiting(o).unwrap_or_default();
                    return self.pending(*stage, o, what);
                }
                info!(cert = %self.cert.name, instance_id = %id, "the journaled ApplyCertificate was not taken (no application under review, no new certificate, renewal.unclear_retry_after passed); applying once more");
                let key = self.load_key(&key_file)?;
                self.e
                    .cas
                    .update_instance(&self.application(id.as_str(), &key)?)
                    .await?;
                // Journaled by apply_journaled's commit before the call goes out.
                o.reapplied_at = Some(now);
                match self.apply_journaled(stage, o, id.as_str()).await? {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        let what = self.reapplied_message(&id, o, &e.to_string());
                        self.pending(*stage, o, what)
                    }
                }
            }
            _ => {
                let what = format!(
                    "instance {id} shows no application under review and no new certificate after its application ({}); it is not applied again: check the instance in the CAS console, then run `cas-renewd renew --cert {} --force`",
                    Phase::following(*stage, o.clone()).name(),
                    self.cert.name
                );
                self.pending(*stage, o, what)
            }
        }
    }

    /// When an unclear first ApplyCertificate that shows no review may be made
    /// again: V1's ceiling for an unclear paid call, from the first call.
    fn reapply_at(&self, o: &Following) -> chrono::DateTime<chrono::Utc> {
        let r = &self.e.cfg.renewal;
        let ceiling = r
            .unclear_retry_after
            .max(RECONCILE_GRACE.max(r.poll_interval * 2));
        o.requested_at + chrono::Duration::from_std(ceiling).unwrap_or(chrono::Duration::MAX)
    }

    /// What the operator reads while the second ApplyCertificate waits.
    fn reapply_waiting(&self, o: &Following) -> Option<String> {
        let id = o.instance.as_ref()?.instance_id.clone();
        Some(format!(
            "ApplyCertificate of instance {id} at {} had an unclear outcome and the instance shows no application under review yet; CAS may still take it up, so cas-renewd waits and applies again by itself at {} (renewal.unclear_retry_after), or now with `cas-renewd renew --cert {} --force` once the console shows no application",
            o.requested_at.to_rfc3339(),
            self.reapply_at(o).to_rfc3339(),
            self.cert.name
        ))
    }

    /// What the operator reads once the second ApplyCertificate did not clearly succeed.
    fn reapplied_message(&self, id: &InstanceId, o: &Following, why: &str) -> String {
        format!(
            "instance {id}: ApplyCertificate was not taken the first time and the second call ({}) did not clearly succeed ({why}); it is not made again: check the instance in the CAS console (cas-renewd keeps following it), or run `cas-renewd renew --cert {} --force`",
            o.reapplied_at.map(|t| t.to_rfc3339()).unwrap_or_default(),
            self.cert.name
        )
    }

    /// Installs certificate `cert_id` of `instance` (CAS's managed re-issue, the
    /// console, or the first install): with CAS's key when CAS made it, else with
    /// the installed key when it fits.
    pub(super) async fn install_from_instance(
        &mut self,
        instance: &InstanceId,
        cert_id: i64,
    ) -> Result<(), EngineError> {
        let c = self.e.cas.get_user_certificate_detail(cert_id).await?.body;
        let pem = c.cert.ok_or(EngineError::NoCertificate {
            order: Subject::Instance(instance.clone()),
        })?;
        let chain = Chain::parse(&pem)?;
        let key = match c.key.as_ref() {
            Some(k) => Some(Key::from_pem(k.expose())?),
            None => store::read_output_text(&self.cert.output.dir.join(store::KEY_FILE))
                .ok()
                .flatten()
                .and_then(|pem| Key::from_pem(&pem).ok())
                .filter(|k| k.spki_sha256() == chain.leaf.spki_sha256),
        };
        let Some(key) = key else {
            let msg = format!(
                "certificate {cert_id} of instance {instance} is for a key this host does not have (CAS holds none); not installed: install it by hand or re-issue with `cas-renewd renew --cert {} --force`",
                self.cert.name
            );
            warn!(cert = %self.cert.name, instance_id = %instance, "{msg}");
            self.journal.last_error = Some(msg.clone());
            self.save()?;
            return Err(EngineError::Blocked(msg));
        };
        self.check_against_disk(&chain, &key)?;
        self.journal.last_instance_id = Some(instance.clone());
        self.install_chain(&chain, &key, false)
    }
}

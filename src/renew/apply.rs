//! The paid call (renew, or a new application for kinds CAS does not renew) and
//! the application an order left in `payed` (pending application) needs; the
//! reconciliation of an unclear paid call is in `reconcile`.
//!
//! Money rules: the key exists and the intent is journaled before a paid call; a
//! call whose outcome is unclear is never repeated blindly. Its order is looked for
//! with documented fields only; when none shows, an alert fires and cas-renewd
//! pays again only after `renewal.unclear_retry_after`, or at `renew --force`.

use tracing::{error, info, warn};

use super::reconcile::domain_is_ours_or_empty;
use super::steps::{CertRun, Next};
use super::{EngineError, TAG_KEY};
use crate::cas::api::CertificateState;
use crate::cas::api::{OrderFilter, Tag};
use crate::cas::api_apply::{CreateCertificateParams, is_free_product};
use crate::cas::client::{ApiError, ServiceError};
use crate::ids::OrderId;
use crate::settings::ValidationMethod;
use crate::store::faults::{CrashPoint, crash_point};
use crate::store::{Attempt, Following, PaidCall, Phase, Rejected, RenewRequested, Stage};

/// Consecutive `payed` answers before cas-renewd submits the application itself.
/// One `payed` answer is normal right after a renew (the order is being set up);
/// if CAS takes the application up by itself (a Csr was sent) it leaves `payed`
/// within a poll or two, so two answers a poll interval apart mean nobody will.
pub(super) const APPLY_AFTER_PAYED_POLLS: u32 = 2;

impl CertRun<'_> {
    /// Whether the resource plan has a unit left (`renew::quota`; `take` it for
    /// the paid call about to be made). A plan with none left blocks without a
    /// call; a plan that cannot be read only warns.
    pub(super) async fn check_package(
        &mut self,
        product_code: &str,
        take: bool,
    ) -> Result<(), EngineError> {
        let verdict = self
            .e
            .quota
            .unit(self.e.cas.as_ref(), product_code, take)
            .await;
        if let Some(s) = self.e.quota.state(product_code).await {
            self.e.observer.package_seen(
                &self.cert.name,
                product_code,
                s.total_count,
                s.used_count,
            );
        }
        verdict
    }

    /// Orders that an unclear paid call may have made are those not in this list:
    /// the pass's orders, and those it keeps as V2.0 instances only (the
    /// reconciliation lists every order, so these must count as known too).
    fn known_order_ids(&self) -> Vec<OrderId> {
        let mut ids: Vec<OrderId> = self
            .inv
            .orders
            .iter()
            .filter(|o| domain_is_ours_or_empty(o, &self.cert.domain).is_some())
            .filter_map(|o| o.order_id.map(OrderId::new))
            .collect();
        ids.extend(
            self.inv
                .listed_as_instances
                .iter()
                .map(|&id| OrderId::new(id)),
        );
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn paid_call_params(&self, a: &Attempt, csr: &str) -> CreateCertificateParams {
        let product_code = a.product_code.clone().unwrap_or_default();
        let names = self.names_for_csr();
        // A free product covers one name; other products take up to five.
        let domain = if is_free_product(&product_code) || names.len() > 5 {
            self.cert.domain.clone()
        } else {
            names.join(",")
        };
        CreateCertificateParams {
            product_code,
            domain: Some(domain),
            csr: Some(csr.to_owned()),
            validate_type: match self.cert.validation.method {
                ValidationMethod::Dns => Some("DNS".into()),
                ValidationMethod::File => Some("FILE".into()),
                ValidationMethod::None => None,
            },
            tags: vec![tag(a)],
            ..Default::default()
        }
    }

    /// The ProductCode of order `source` in this pass's listing, if it has one.
    fn product_code_of(&self, source: OrderId) -> Option<String> {
        self.inv
            .orders
            .iter()
            .find(|o| o.order_id == Some(source.get()))
            .and_then(|o| o.product_code.clone())
            .filter(|p| !p.is_empty())
    }

    /// Sends the paid call itself, nothing else: the new order's id and the
    /// request id. The caller journals before and after.
    async fn send_paid_call(&self, a: &Attempt, csr: &str) -> Result<(OrderId, String), ApiError> {
        let source = a.source_order_id.get();
        match a.paid_call {
            PaidCall::Renew => self
                .e
                .cas
                .renew_certificate_order(source, Some(csr), &[tag(a)])
                .await
                .map(|r| (OrderId::new(r.body.order_id), r.request_id)),
            PaidCall::Create => self
                .e
                .cas
                .create_certificate_for_package(&self.paid_call_params(a, csr))
                .await
                .map(|r| (OrderId::new(r.body.order_id), r.request_id)),
            PaidCall::Reissue => unreachable!("call_renew hands a re-issue to apply_reissue"),
        }
    }

    /// What the operator reads when CAS refused the paid call for order `source`.
    fn refusal_message(&self, call: PaidCall, source: OrderId, e: &ServiceError) -> String {
        format!(
            "CAS refused {} for order {source}: {}: {}; nothing was spent and the call is not repeated: fix the cause, then run `cas-renewd renew --cert {} --force`",
            call.action(),
            e.code,
            e.message,
            self.cert.name
        )
    }

    /// The paid call (renew or create), journaled before it is made: the
    /// `RenewRequested` transition is committed here, before the call, not by the
    /// caller after it.
    pub(super) async fn call_renew(&mut self, mut a: Attempt) -> Result<Next, EngineError> {
        if a.paid_call == PaidCall::Reissue {
            return self.apply_reissue(a).await;
        }
        let key = self.load_key(&a.key)?;
        let csr = key.csr_pem(&self.cert.domain, &self.names_for_csr())?;
        let source = a.source_order_id;
        let call = a.paid_call;
        if call == PaidCall::Renew && a.product_code.is_none() {
            a.product_code = self.product_code_of(source);
        }
        if let Some(code) = a.product_code.clone() {
            self.check_package(&code, true).await?;
        }
        let requested = RenewRequested {
            attempt: a,
            requested_at: self.e.clock.now(),
            known_order_ids: self.known_order_ids(),
            unclear_since: None,
        };
        // In a fleet: the lock is ours and the lease alive; the fenced commit
        // just below proves the lock again the moment before the call.
        self.fleet_may_spend()?;
        self.commit(Phase::RenewRequested(requested.clone()))?;
        crash_point(CrashPoint::AfterRenewRequested);
        self.report.renew_calls += 1;
        self.e.observer.paid_call(&self.cert.name);
        let result = self.send_paid_call(&requested.attempt, &csr).await;
        match result {
            Ok((order_id, request_id)) => {
                crash_point(CrashPoint::AfterRenewCall);
                info!(cert = %self.cert.name, source_order_id = source.get(), new_order_id = order_id.get(), request_id = %request_id, action = call.action(), "paid call accepted");
                self.commit(Phase::OrderCreated(requested.ordered(order_id)))?;
                crash_point(CrashPoint::AfterOrderCreated);
                Ok(Next::Moved)
            }
            // A 200 without the documented OrderId may have acted as well: the
            // journal stays at renew-requested, whose step is the reconciliation.
            Err(e @ (ApiError::Ambiguous { .. } | ApiError::Schema { .. })) => {
                warn!(cert = %self.cert.name, error = %e, action = call.action(), "paid call outcome unknown; looking for the order it may have created before anything else");
                Ok(Next::Moved)
            }
            Err(ApiError::Service(e)) if self.force => {
                // The operator's own forced call: they see the refusal now, and no
                // plan repeats a call that was not due.
                self.journal.last_error = Some(e.to_string());
                self.commit(Phase::Idle)?;
                Err(ApiError::Service(e).into())
            }
            Err(ApiError::Service(e)) => {
                // Refused: nothing was spent, and the same call would be refused
                // again every pass; an operator looks before anything is paid.
                let msg = self.refusal_message(call, source, &e);
                error!(cert = %self.cert.name, code = %e.code, request_id = %e.request_id, "{msg}");
                self.journal.last_error = Some(msg.clone());
                self.commit(Phase::Rejected(Rejected::default()))?;
                Err(EngineError::Blocked(msg))
            }
            Err(e) => {
                // Not sent, or every attempt was turned away before execution.
                self.journal.last_error = Some(e.to_string());
                self.commit(Phase::Idle)?;
                Err(e.into())
            }
        }
    }

    /// Records what the operator must do for an order stuck in `payed`.
    pub(super) fn pending(
        &mut self,
        stage: Stage,
        o: &mut Following,
        what: String,
    ) -> Result<(), EngineError> {
        self.e.observer.pending_application(&self.cert.name, true);
        if o.pending_application.as_deref() != Some(what.as_str()) {
            warn!(cert = %self.cert.name, order_id = o.new_order_id.get(), "{what}");
            o.pending_application = Some(what);
            self.commit(Phase::following(stage, o.clone()))?;
        }
        Ok(())
    }

    /// The `payed` (pending application) answer of DescribeCertificateState.
    pub(super) async fn on_payed(
        &mut self,
        stage: &mut Stage,
        o: &mut Following,
        payed_polls: u32,
    ) -> Result<(), EngineError> {
        if payed_polls < APPLY_AFTER_PAYED_POLLS {
            return Ok(());
        }
        if let Some(inst) = o.instance.clone() {
            return self.on_instance_idle(stage, o, inst).await;
        }
        let order = o.new_order_id;
        let what = match *stage {
            Stage::OrderCreated if !o.adopted && o.paid_call == PaidCall::Renew => {
                return self.submit_application(stage, o).await;
            }
            Stage::OrderCreated if o.adopted => format!(
                "order {order} (made elsewhere) is pending application (payed): submit its application in the CAS console; cas-renewd follows it and gives it up {} after taking it up",
                humantime::format_duration(self.e.cfg.renewal.issuance_timeout)
            ),
            Stage::OrderCreated => format!(
                "order {order} (CreateCertificateForPackageRequest) is still payed (pending application): check its application in the CAS console"
            ),
            Stage::ApplicationRequested | Stage::ApplicationSubmitted => format!(
                "order {order} is still payed (pending application) after cas-renewd's ApplyCertificate call ({}); it is not submitted twice: submit the application in the CAS console",
                Phase::following(*stage, o.clone()).name()
            ),
        };
        self.pending(*stage, o, what)
    }

    /// The InstanceId ListUserCertificateOrder gives `order`, if any.
    async fn instance_of(&self, order: OrderId) -> Result<Option<String>, EngineError> {
        let orders = self
            .e
            .cas
            .list_all_orders(OrderFilter::default(), self.e.cfg.api.page_size)
            .await?;
        Ok(orders
            .into_iter()
            .find(|o| o.order_id == Some(order.get()))
            .and_then(|o| o.instance_id)
            .filter(|i| !i.is_empty()))
    }

    /// Submits the application of a renewal order left pending: UpdateInstance
    /// (our CSR, the domain, the validation method; repeatable), then, journaled
    /// first and never twice, ApplyCertificate (SSL Certificate Management V2.0).
    async fn submit_application(
        &mut self,
        stage: &mut Stage,
        o: &mut Following,
    ) -> Result<(), EngineError> {
        let order = o.new_order_id;
        let Some(instance) = self.instance_of(order).await? else {
            let what = format!(
                "order {order} is pending application (payed) and ListUserCertificateOrder gives it no InstanceId, so cas-renewd cannot submit it: in the CAS console, submit the application of order {order} for {} (CAS then validates and issues it; cas-renewd keeps following it)",
                self.cert.domain
            );
            return self.pending(*stage, o, what);
        };
        // Only a journal of an earlier version can follow its own renewal without
        // the key (the flat form did not require it): the operator submits then.
        let Some(key_file) = o.key.clone() else {
            let what = format!(
                "order {order} is pending application (payed) and its journal records no key of this host to send a CSR for: submit the application of order {order} in the CAS console"
            );
            return self.pending(*stage, o, what);
        };
        let key = self.load_key(&key_file)?;
        let update = self.application(&instance, &key)?;
        if let Err(e) = self.e.cas.update_instance(&update).await {
            // Nothing submitted yet: the next payed answer tries again.
            let what = format!(
                "order {order} is pending application (payed); UpdateInstance of {instance} failed ({e}); cas-renewd tries again on the next poll, or submit the application in the CAS console"
            );
            return self.pending(*stage, o, what);
        }
        if let Err(e) = self.apply_journaled(stage, o, &instance).await? {
            let what = format!(
                "order {order} is pending application (payed); ApplyCertificate of {instance} did not clearly succeed ({e}) and is not repeated: check the order in the CAS console and submit its application there if it is still pending"
            );
            return self.pending(*stage, o, what);
        }
        info!(cert = %self.cert.name, order_id = order.get(), instance_id = %instance, "application submitted for the pending renewal order");
        Ok(())
    }

    /// ApplyCertificate on `instance` (a V1 renewal order's, or a V2.0 instance's
    /// re-issue), journaled first: the journal says `ApplicationRequested` before the
    /// call and `ApplicationSubmitted` once it is accepted. The call's own error is
    /// the inner result: the journal then stays at `ApplicationRequested`, and the
    /// caller decides (never a blind second call).
    pub(super) async fn apply_journaled(
        &mut self,
        stage: &mut Stage,
        o: &mut Following,
        instance: &str,
    ) -> Result<Result<(), ApiError>, EngineError> {
        *stage = Stage::ApplicationRequested;
        self.fleet_may_spend()?;
        self.commit(Phase::following(*stage, o.clone()))?;
        crash_point(CrashPoint::AfterApplicationRequested);
        match self.e.cas.apply_certificate(instance).await {
            Ok(r) => {
                info!(cert = %self.cert.name, instance_id = %instance, request_id = %r.request_id, "ApplyCertificate accepted");
                *stage = Stage::ApplicationSubmitted;
                o.pending_application = None;
                self.commit(Phase::following(*stage, o.clone()))?;
                self.e.observer.pending_application(&self.cert.name, false);
                crash_point(CrashPoint::AfterApplicationSubmitted);
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// An adopted order not issued within `issuance_timeout`: given up (listed as
    /// unusable, so the plan may renew the expiring order), with the decision logged.
    pub(super) async fn give_up_adopted(
        &mut self,
        mut o: Following,
        state: CertificateState,
    ) -> Result<(), EngineError> {
        self.unpublish(&mut o.published).await;
        let order = o.new_order_id;
        let msg = format!(
            "{} (made elsewhere, adopted) is still {} after {}; cas-renewd gives it up and renews the expiring certificate itself when due",
            o.subject(),
            state.as_str(),
            humantime::format_duration(self.e.cfg.renewal.issuance_timeout)
        );
        warn!(cert = %self.cert.name, order_id = order.get(), "decision: {msg}");
        if o.instance.is_none() {
            self.journal.unusable_orders.push(order);
        }
        self.journal.last_error = Some(msg);
        self.commit(Phase::Idle)?;
        self.e.observer.pending_application(&self.cert.name, false);
        Ok(())
    }
}

/// The tag put on the attempt's order, so an operator can tell it in the console.
fn tag(a: &Attempt) -> Tag {
    Tag {
        key: TAG_KEY.into(),
        value: a.attempt.clone(),
    }
}

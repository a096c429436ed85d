//! The paid call (renew, or a new application for kinds CAS does not renew), the
//! reconciliation of an unclear one, and the application an order left in `payed`
//! (pending application) needs.
//!
//! Money rules: the key exists and the intent is journaled before a paid call; a
//! call whose outcome is unclear is never repeated blindly. Its order is looked for
//! with documented fields only; when none shows, an alert fires and cas-renewd
//! pays again only after `renewal.unclear_retry_after`, or at `renew --force`.

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::steps::CertRun;
use super::{EngineError, RECONCILE_GRACE, TAG_KEY};
use crate::cas::api::CertificateState;
use crate::cas::api::{CertificateOrder, OrderFilter, OrderStatus, Tag};
use crate::cas::api_apply::{CreateCertificateParams, UpdateInstanceParams, is_free_product};
use crate::cas::client::{ApiError, ServiceError};
use crate::config::ValidationMethod;
use crate::store::JournalPhase;
use crate::store::PaidCall;
use crate::store::faults::{CrashPoint, crash_point};

/// Consecutive `payed` answers before cas-renewd submits the application itself.
/// One `payed` answer is normal right after a renew (the order is being set up);
/// if CAS takes the application up by itself (a Csr was sent) it leaves `payed`
/// within a poll or two, so two answers a poll interval apart mean nobody will.
pub(super) const APPLY_AFTER_PAYED_POLLS: u32 = 2;

/// How the reconciliation of an unclear paid call ended.
enum Found {
    One(i64),
    None,
    Several(Vec<i64>),
}

impl CertRun<'_> {
    /// Whether the resource plan has a unit left (`renew::quota`; `take` it for
    /// the paid call about to be made). A plan with none left blocks without a
    /// call; a plan that cannot be read only warns.
    pub(super) async fn check_package(
        &mut self,
        product_code: &str,
        take: bool,
    ) -> Result<(), EngineError> {
        self.e.quota.unit(&self.e.cas, product_code, take).await
    }

    /// Orders that an unclear paid call may have made are those not in this list.
    fn known_order_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .orders
            .iter()
            .filter(|o| domain_is_ours_or_empty(o, &self.cert.domain).is_some())
            .filter_map(|o| o.order_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn paid_call_params(&self, csr: &str) -> CreateCertificateParams {
        let product_code = self.journal.product_code.clone().unwrap_or_default();
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
            tags: vec![self.tag()],
            ..Default::default()
        }
    }

    fn tag(&self) -> Tag {
        Tag {
            key: TAG_KEY.into(),
            value: self.journal.attempt.clone().unwrap_or_default(),
        }
    }

    /// The ProductCode of order `source` in this pass's listing, if it has one.
    fn product_code_of(&self, source: i64) -> Option<String> {
        self.orders
            .iter()
            .find(|o| o.order_id == Some(source))
            .and_then(|o| o.product_code.clone())
            .filter(|p| !p.is_empty())
    }

    /// Sends the paid call itself, nothing else: the new order's id and the
    /// request id. The caller journals before and after.
    async fn send_paid_call(
        &self,
        call: PaidCall,
        source: i64,
        csr: &str,
    ) -> Result<(i64, String), ApiError> {
        match call {
            PaidCall::Renew => self
                .e
                .cas
                .renew_certificate_order(source, Some(csr), &[self.tag()])
                .await
                .map(|r| (r.body.order_id, r.request_id)),
            PaidCall::Create => self
                .e
                .cas
                .create_certificate_for_package(&self.paid_call_params(csr))
                .await
                .map(|r| (r.body.order_id, r.request_id)),
        }
    }

    /// What the operator reads when CAS refused the paid call for order `source`.
    fn refusal_message(&self, call: PaidCall, source: i64, e: &ServiceError) -> String {
        format!(
            "CAS refused {} for order {source}: {}: {}; nothing was spent and the call is not repeated: fix the cause, then run `cas-renewd renew --cert {} --force`",
            call.action(),
            e.code,
            e.message,
            self.cert.name
        )
    }

    /// The paid call (renew or create), journaled before it is made.
    pub(super) async fn call_renew(&mut self) -> Result<(), EngineError> {
        let key = self.load_key()?.ok_or(EngineError::JournalIncomplete {
            phase: "key-ready",
            missing: "key",
        })?;
        let csr = key.csr_pem(&self.cert.domain, &self.names_for_csr())?;
        let source = self
            .journal
            .source_order_id
            .ok_or(EngineError::JournalIncomplete {
                phase: "key-ready",
                missing: "source order",
            })?;
        let call = self.journal.paid_call;
        if call == PaidCall::Renew && self.journal.product_code.is_none() {
            self.journal.product_code = self.product_code_of(source);
        }
        if let Some(code) = self.journal.product_code.clone() {
            self.check_package(&code, true).await?;
        }
        self.journal.known_order_ids = self.known_order_ids();
        self.journal.phase = JournalPhase::RenewRequested;
        self.journal.requested_at = Some(Utc::now());
        self.journal.unclear_since = None;
        self.save()?;
        crash_point(CrashPoint::AfterRenewRequested);
        self.report.renew_calls += 1;
        self.e.observer.paid_call(&self.cert.name);
        let result = self.send_paid_call(call, source, &csr).await;
        match result {
            Ok((order_id, request_id)) => {
                crash_point(CrashPoint::AfterRenewCall);
                info!(cert = %self.cert.name, source_order_id = source, new_order_id = order_id, request_id = %request_id, action = call.action(), "paid call accepted");
                self.journal.phase = JournalPhase::OrderCreated;
                self.journal.new_order_id = Some(order_id);
                self.save()?;
                crash_point(CrashPoint::AfterOrderCreated);
                Ok(())
            }
            // A 200 without the documented OrderId may have acted as well.
            Err(e @ (ApiError::Ambiguous { .. } | ApiError::Schema { .. })) => {
                warn!(cert = %self.cert.name, error = %e, action = call.action(), "paid call outcome unknown; looking for the order it may have created before anything else");
                Ok(())
            }
            Err(ApiError::Service(e)) if self.force => {
                // The operator's own forced call: they see the refusal now, and no
                // plan repeats a call that was not due.
                self.journal.phase = JournalPhase::Idle;
                self.journal.last_error = Some(e.to_string());
                self.save()?;
                Err(ApiError::Service(e).into())
            }
            Err(ApiError::Service(e)) => {
                // Refused: nothing was spent, and the same call would be refused
                // again every pass; an operator looks before anything is paid.
                let msg = self.refusal_message(call, source, &e);
                error!(cert = %self.cert.name, code = %e.code, request_id = %e.request_id, "{msg}");
                self.journal.phase = JournalPhase::Rejected;
                self.journal.last_error = Some(msg.clone());
                self.save()?;
                Err(EngineError::Blocked(msg))
            }
            Err(e) => {
                // Not sent, or every attempt was turned away before execution.
                self.journal.phase = JournalPhase::Idle;
                self.journal.last_error = Some(e.to_string());
                self.save()?;
                Err(e.into())
            }
        }
    }

    /// The order an unclear paid call made, judged by documented fields only: an
    /// OrderId the account did not show before the call (not an OrderId ordering or
    /// BuyDate), `Domain` ours or empty (the documented PAYED sample has
    /// `"Domain": ""`), the same `ProductCode`, and not EXPIRED/REVOKED. An exact
    /// domain beats an empty one; two equally good candidates are not guessed at;
    /// an order another certificate's journal follows is never taken.
    fn reconcile_candidates(&self, orders: &[CertificateOrder], source: i64) -> Found {
        let known = &self.journal.known_order_ids;
        // Orders another certificate's journal already follows are not ours (two
        // certificates may pay in the same pass, and a new order's Domain may be empty).
        let others: Vec<_> = self
            .state
            .journals()
            .into_iter()
            .filter(|(name, _)| *name != self.cert.name)
            .map(|(_, j)| j)
            .collect();
        let claimed: Vec<i64> = others.iter().filter_map(|j| j.new_order_id).collect();
        // Another certificate of the same product whose paid call is out but whose
        // order is not journaled yet may own any order with an empty Domain.
        let rival_in_flight = others.iter().any(|j| {
            matches!(
                j.phase,
                JournalPhase::KeyReady | JournalPhase::RenewRequested
            ) && match (&j.product_code, &self.journal.product_code) {
                (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                _ => true,
            }
        });
        let (mut exact, mut empty) = (Vec::new(), Vec::new());
        for o in orders {
            let Some(id) = o.order_id else { continue };
            let new = if known.is_empty() {
                // A journal written before known_order_ids existed.
                id > source
            } else {
                !known.contains(&id)
            };
            if id == source
                || !new
                || self.journal.unusable_orders.contains(&id)
                || claimed.contains(&id)
            {
                continue;
            }
            if matches!(o.status, Some(OrderStatus::Expired | OrderStatus::Revoked)) {
                continue;
            }
            if let (Some(want), Some(pc)) = (
                self.journal.product_code.as_deref(),
                o.product_code.as_deref().filter(|p| !p.is_empty()),
            ) && !want.eq_ignore_ascii_case(pc)
            {
                continue;
            }
            match domain_is_ours_or_empty(o, &self.cert.domain) {
                Some(true) => exact.push(id),
                Some(false) => empty.push(id),
                None => {}
            }
        }
        if exact.is_empty() && rival_in_flight {
            // Wait (and after the grace, block) rather than take a rival's order.
            return Found::None;
        }
        let pick = if exact.is_empty() { empty } else { exact };
        match pick.len() {
            0 => Found::None,
            1 => Found::One(pick[0]),
            _ => Found::Several(pick),
        }
    }

    /// What the operator reads when several orders look like the result of the
    /// unclear `call`.
    fn several_candidates_message(&self, call: &str, ids: &[i64]) -> String {
        format!(
            "the {call} call of {} had an unclear outcome and orders {ids:?} all look like its result; cas-renewd pays nothing more and adopts none: keep the one to use (delete the others in the console), then run `cas-renewd renew --cert {} --force` to pay again, or wait for the others to go",
            self.journal
                .requested_at
                .map_or_else(|| "?".to_owned(), |t| t.to_rfc3339()),
            self.cert.name
        )
    }

    /// What the operator reads while no order has appeared after the unclear
    /// `call` made at `requested`, which is paid again at `requested + ceiling`.
    fn no_order_yet_message(
        &self,
        call: &str,
        requested: DateTime<Utc>,
        ceiling: std::time::Duration,
    ) -> String {
        let again_at = DateTime::<Utc>::from(std::time::SystemTime::from(requested) + ceiling);
        format!(
            "the {call} call of {} had an unclear outcome and no new order for {} has appeared; cas-renewd looks again every pass and pays again by itself at {} (renewal.unclear_retry_after), or now with `cas-renewd renew --cert {} --force` once the console shows no such order",
            requested.to_rfc3339(),
            self.cert.domain,
            again_at.to_rfc3339(),
            self.cert.name
        )
    }

    /// After an unclear paid call: adopt the order it created; when none shows
    /// within the grace period, alert and keep looking on later passes, and pay
    /// again only after `renewal.unclear_retry_after` or at `renew --force`.
    pub(super) async fn reconcile_or_renew(&mut self) -> Result<(), EngineError> {
        let source = self.journal.source_order_id.unwrap_or(0);
        let requested = self.requested_at();
        let r = &self.e.cfg.renewal;
        let grace = RECONCILE_GRACE.max(r.poll_interval * 2);
        let ceiling = r.unclear_retry_after.max(grace);
        let call = self.journal.paid_call.action();
        loop {
            // Every order, not a Keyword search: a new order's Domain may be empty.
            let orders = self
                .e
                .cas
                .list_all_orders(OrderFilter::default(), self.e.cfg.api.page_size)
                .await?;
            let waited = (Utc::now() - requested).to_std().unwrap_or_default();
            match self.reconcile_candidates(&orders, source) {
                Found::One(id) => {
                    info!(cert = %self.cert.name, order_id = id, action = call, "found the order the unclear paid call created; following it");
                    self.journal.phase = JournalPhase::OrderCreated;
                    self.journal.new_order_id = Some(id);
                    self.journal.unclear_since = None;
                    self.save()?;
                    self.set_unclear_metric(false);
                    crash_point(CrashPoint::AfterOrderCreated);
                    return Ok(());
                }
                // Never resolved by paying again, not even under --force: one of
                // these orders is already ours.
                Found::Several(ids) => {
                    self.set_unclear_metric(true);
                    let msg = self.several_candidates_message(call, &ids);
                    error!(cert = %self.cert.name, candidates = ?ids, "{msg}");
                    return Err(EngineError::Blocked(msg));
                }
                Found::None => {}
            }
            if waited < grace {
                tokio::time::sleep((grace - waited).min(r.poll_interval)).await;
                continue;
            }
            if self.journal.unclear_since.is_none() {
                self.journal.unclear_since = Some(Utc::now());
                self.save()?;
            }
            self.set_unclear_metric(true);
            // `--force` allows one more paid call, not one per grace period: a
            // forced run whose call is unclear again stops here like any other.
            let forced = self.force && self.report.renew_calls == 0;
            if forced || waited >= ceiling {
                warn!(
                    cert = %self.cert.name,
                    source_order_id = source,
                    waited_s = waited.as_secs(),
                    forced,
                    action = call,
                    "decision: no order appeared after the unclear paid call; paying again"
                );
                self.journal.phase = JournalPhase::KeyReady;
                self.journal.unclear_since = None;
                self.save()?;
                self.set_unclear_metric(false);
                return Ok(());
            }
            let msg = self.no_order_yet_message(call, requested, ceiling);
            error!(cert = %self.cert.name, source_order_id = source, "{msg}");
            return Err(EngineError::Blocked(msg));
        }
    }

    fn set_unclear_metric(&self, on: bool) {
        self.e.observer.unclear_paid_call(&self.cert.name, on);
    }

    /// Records what the operator must do for an order stuck in `payed`.
    fn pending(&mut self, order: i64, what: String) -> Result<(), EngineError> {
        self.e.observer.pending_application(&self.cert.name, true);
        if self.journal.pending_application.as_deref() != Some(what.as_str()) {
            warn!(cert = %self.cert.name, order_id = order, "{what}");
            self.journal.pending_application = Some(what);
            self.save()?;
        }
        Ok(())
    }

    /// The `payed` (pending application) answer of DescribeCertificateState.
    pub(super) async fn on_payed(
        &mut self,
        order: i64,
        payed_polls: u32,
    ) -> Result<(), EngineError> {
        if payed_polls < APPLY_AFTER_PAYED_POLLS {
            return Ok(());
        }
        match self.journal.phase {
            JournalPhase::OrderCreated
                if !self.journal.adopted && self.journal.paid_call == PaidCall::Renew =>
            {
                self.submit_application(order).await
            }
            JournalPhase::OrderCreated if self.journal.adopted => self.pending(
                order,
                format!(
                    "order {order} (made elsewhere) is pending application (payed): submit its application in the CAS console; cas-renewd follows it and gives it up {} after taking it up",
                    humantime::format_duration(self.e.cfg.renewal.issuance_timeout)
                ),
            ),
            JournalPhase::OrderCreated => self.pending(
                order,
                format!(
                    "order {order} (CreateCertificateForPackageRequest) is still payed (pending application): check its application in the CAS console"
                ),
            ),
            JournalPhase::ApplicationRequested | JournalPhase::ApplicationSubmitted => self
                .pending(
                    order,
                    format!(
                        "order {order} is still payed (pending application) after cas-renewd's ApplyCertificate call ({}); it is not submitted twice: submit the application in the CAS console",
                        self.journal.phase.as_str()
                    ),
                ),
            _ => Ok(()),
        }
    }

    /// The InstanceId ListUserCertificateOrder gives `order`, if any.
    async fn instance_of(&self, order: i64) -> Result<Option<String>, EngineError> {
        let orders = self
            .e
            .cas
            .list_all_orders(OrderFilter::default(), self.e.cfg.api.page_size)
            .await?;
        Ok(orders
            .into_iter()
            .find(|o| o.order_id == Some(order))
            .and_then(|o| o.instance_id)
            .filter(|i| !i.is_empty()))
    }

    /// Submits the application of a renewal order left pending: UpdateInstance
    /// (our CSR, the domain, the validation method; repeatable), then, journaled
    /// first and never twice, ApplyCertificate (SSL Certificate Management V2.0).
    async fn submit_application(&mut self, order: i64) -> Result<(), EngineError> {
        let Some(instance) = self.instance_of(order).await? else {
            return self.pending(
                order,
                format!(
                    "order {order} is pending application (payed) and ListUserCertificateOrder gives it no InstanceId, so cas-renewd cannot submit it: in the CAS console, submit the application of order {order} for {} (CAS then validates and issues it; cas-renewd keeps following it)",
                    self.cert.domain
                ),
            );
        };
        let key = self.load_key()?.ok_or(EngineError::JournalIncomplete {
            phase: "order-created",
            missing: "key",
        })?;
        let csr = key.csr_pem(&self.cert.domain, &self.names_for_csr())?;
        let update = UpdateInstanceParams {
            instance_id: instance.clone(),
            csr: Some(csr),
            domain: Some(self.cert.domain.clone()),
            validation_method: match self.cert.validation.method {
                ValidationMethod::Dns => Some("DNS".into()),
                ValidationMethod::File => Some("HTTP".into()),
                ValidationMethod::None => None,
            },
        };
        if let Err(e) = self.e.cas.update_instance(&update).await {
            // Nothing submitted yet: the next payed answer tries again.
            return self.pending(
                order,
                format!(
                    "order {order} is pending application (payed); UpdateInstance of {instance} failed ({e}); cas-renewd tries again on the next poll, or submit the application in the CAS console"
                ),
            );
        }
        self.journal.phase = JournalPhase::ApplicationRequested;
        self.save()?;
        crash_point(CrashPoint::AfterApplicationRequested);
        match self.e.cas.apply_certificate(&instance).await {
            Ok(r) => {
                info!(cert = %self.cert.name, order_id = order, instance_id = %instance, request_id = %r.request_id, "application submitted for the pending renewal order");
                self.journal.phase = JournalPhase::ApplicationSubmitted;
                self.journal.pending_application = None;
                self.save()?;
                self.e
                    .observer
                    .pending_application(&self.cert.name, false);
                crash_point(CrashPoint::AfterApplicationSubmitted);
                Ok(())
            }
            Err(e) => self.pending(
                order,
                format!(
                    "order {order} is pending application (payed); ApplyCertificate of {instance} did not clearly succeed ({e}) and is not repeated: check the order in the CAS console and submit its application there if it is still pending"
                ),
            ),
        }
    }

    /// An adopted order not issued within `issuance_timeout`: given up (listed as
    /// unusable, so the plan may renew the expiring order), with the decision logged.
    pub(super) async fn give_up_adopted(
        &mut self,
        order: i64,
        state: CertificateState,
    ) -> Result<(), EngineError> {
        super::validation::unpublish(&self.e.dns, &self.published_from_journal()).await;
        self.journal.dns_record = None;
        self.journal.validation_file = None;
        let msg = format!(
            "order {order} (made elsewhere, adopted) is still {} after {}; cas-renewd gives it up and renews the expiring order itself when due",
            state.as_str(),
            humantime::format_duration(self.e.cfg.renewal.issuance_timeout)
        );
        warn!(cert = %self.cert.name, order_id = order, "decision: {msg}");
        self.journal.unusable_orders.push(order);
        self.journal.phase = JournalPhase::Idle;
        self.journal.adopted = false;
        self.journal.new_order_id = None;
        self.journal.pending_application = None;
        self.journal.last_error = Some(msg);
        self.save()?;
        self.e.observer.pending_application(&self.cert.name, false);
        Ok(())
    }
}

/// `Some(true)` when the order's Domain is ours, `Some(false)` when it is empty or
/// absent, `None` when it names another domain.
fn domain_is_ours_or_empty(o: &CertificateOrder, domain: &str) -> Option<bool> {
    match o.domain.as_deref().map(str::trim).filter(|d| !d.is_empty()) {
        None => Some(false),
        Some(d) if d.eq_ignore_ascii_case(domain) => Some(true),
        // A multi-name order (reapply sends up to five names) may list them all,
        // comma-separated; ours among them is ours.
        Some(d) if d.split(',').any(|n| n.trim().eq_ignore_ascii_case(domain)) => Some(true),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(domain: &str) -> CertificateOrder {
        serde_json::from_value(serde_json::json!({ "OrderId": 1, "Domain": domain }))
            .expect("an order")
    }

    #[test]
    fn an_order_listing_several_names_is_ours_when_ours_is_among_them() {
        let d = "www.example.com";
        assert_eq!(
            domain_is_ours_or_empty(&order("www.example.com"), d),
            Some(true)
        );
        assert_eq!(
            domain_is_ours_or_empty(&order("WWW.example.com"), d),
            Some(true)
        );
        assert_eq!(
            domain_is_ours_or_empty(&order("api.example.com, www.example.com"), d),
            Some(true)
        );
        assert_eq!(domain_is_ours_or_empty(&order(""), d), Some(false));
        assert_eq!(domain_is_ours_or_empty(&order("api.example.com"), d), None);
        assert_eq!(
            domain_is_ours_or_empty(&order("api.example.com,www.example.com.evil"), d),
            None
        );
    }
}

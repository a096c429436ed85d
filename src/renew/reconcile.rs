//! The reconciliation of a paid call whose outcome is unclear: the order it made
//! is looked for with documented fields only, never paid for again blindly.

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::steps::{CertRun, Next};
use super::{EngineError, RECONCILE_GRACE};
use crate::cas::api::{CertificateOrder, OrderFilter, OrderStatus};
use crate::ids::OrderId;
use crate::store::faults::{CrashPoint, crash_point};
use crate::store::{Phase, RenewRequested};

/// How the reconciliation of an unclear paid call ended.
enum Found {
    One(OrderId),
    None,
    Several(Vec<OrderId>),
}

impl CertRun<'_> {
    /// The order an unclear paid call made, judged by documented fields only: an
    /// OrderId the account did not show before the call (not an OrderId ordering or
    /// BuyDate), `Domain` ours or empty (the documented PAYED sample has
    /// `"Domain": ""`), the same `ProductCode`, and not EXPIRED/REVOKED. An exact
    /// domain beats an empty one; two equally good candidates are not guessed at;
    /// an order another certificate's journal follows is never taken.
    fn reconcile_candidates(&self, orders: &[CertificateOrder], r: &RenewRequested) -> Found {
        let known = &r.known_order_ids;
        let source = r.attempt.source_order_id;
        let product = r.attempt.product_code.as_deref();
        // Orders another certificate's journal already follows are not ours (two
        // certificates may pay in the same pass, and a new order's Domain may be empty).
        let others: Vec<_> = self
            .state
            .journals()
            .into_iter()
            .filter(|(name, _)| *name != self.cert.name)
            .map(|(_, j)| j)
            .collect();
        let claimed: Vec<OrderId> = others
            .iter()
            .filter_map(|j| j.phase.new_order_id())
            .collect();
        // Another certificate of the same product whose paid call is out but whose
        // order is not journaled yet may own any order with an empty Domain.
        let rival_in_flight = others.iter().any(|j| {
            matches!(j.phase, Phase::KeyReady(_) | Phase::RenewRequested(_))
                && match (j.phase.product_code(), product) {
                    (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                    _ => true,
                }
        });
        let (mut exact, mut empty) = (Vec::new(), Vec::new());
        for o in orders {
            let Some(id) = o.order_id.map(OrderId::new) else {
                continue;
            };
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
            if let (Some(want), Some(pc)) =
                (product, o.product_code.as_deref().filter(|p| !p.is_empty()))
                && !want.eq_ignore_ascii_case(pc)
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
    fn several_candidates_message(
        &self,
        call: &str,
        requested: DateTime<Utc>,
        ids: &[OrderId],
    ) -> String {
        format!(
            "the {call} call of {} had an unclear outcome and orders {ids:?} all look like its result; cas-renewd pays nothing more and adopts none: keep the one to use (delete the others in the console), then run `cas-renewd renew --cert {} --force` to pay again, or wait for the others to go",
            requested.to_rfc3339(),
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
    pub(super) async fn reconcile(&mut self, mut req: RenewRequested) -> Result<Next, EngineError> {
        let source = req.attempt.source_order_id;
        let requested = req.requested_at;
        let r = &self.e.cfg.renewal;
        let grace = RECONCILE_GRACE.max(r.poll_interval * 2);
        let ceiling = r.unclear_retry_after.max(grace);
        let call = req.attempt.paid_call.action();
        loop {
            // Every order, not a Keyword search: a new order's Domain may be empty.
            // Unfiltered: the renewal order may also show in ListInstances, and
            // reconciling only adopts (what the pass already knew is in the
            // journal's known_order_ids), it never pays for what it lists.
            let orders = self
                .e
                .cas
                .list_all_orders(OrderFilter::default(), self.e.cfg.api.page_size)
                .await?;
            let waited = (self.e.clock.now() - requested)
                .to_std()
                .unwrap_or_default();
            match self.reconcile_candidates(&orders, &req) {
                Found::One(id) => {
                    info!(cert = %self.cert.name, order_id = id.get(), action = call, "found the order the unclear paid call created; following it");
                    self.commit(Phase::OrderCreated(req.ordered(id)))?;
                    self.set_unclear_metric(false);
                    crash_point(CrashPoint::AfterOrderCreated);
                    return Ok(Next::Moved);
                }
                // Never resolved by paying again, not even under --force: one of
                // these orders is already ours.
                Found::Several(ids) => {
                    self.set_unclear_metric(true);
                    let msg = self.several_candidates_message(call, requested, &ids);
                    error!(cert = %self.cert.name, candidates = %ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(","), "{msg}");
                    return Err(EngineError::Blocked(msg));
                }
                Found::None => {}
            }
            if waited < grace {
                tokio::time::sleep((grace - waited).min(r.poll_interval)).await;
                continue;
            }
            if req.unclear_since.is_none() {
                req.unclear_since = Some(self.e.clock.now());
                self.commit(Phase::RenewRequested(req.clone()))?;
            }
            self.set_unclear_metric(true);
            // `--force` allows one more paid call, not one per grace period: a
            // forced run whose call is unclear again stops here like any other.
            let forced = self.force && self.report.renew_calls == 0;
            if forced || waited >= ceiling {
                warn!(
                    cert = %self.cert.name,
                    source_order_id = source.get(),
                    waited_s = waited.as_secs(),
                    forced,
                    action = call,
                    "decision: no order appeared after the unclear paid call; paying again"
                );
                self.commit(Phase::KeyReady(req.attempt))?;
                self.set_unclear_metric(false);
                return Ok(Next::Moved);
            }
            let msg = self.no_order_yet_message(call, requested, ceiling);
            error!(cert = %self.cert.name, source_order_id = source.get(), "{msg}");
            return Err(EngineError::Blocked(msg));
        }
    }

    fn set_unclear_metric(&self, on: bool) {
        self.e.observer.unclear_paid_call(&self.cert.name, on);
    }
}

/// `Some(true)` when the order's Domain is ours, `Some(false)` when it is empty or
/// absent, `None` when it names another domain.
pub(super) fn domain_is_ours_or_empty(o: &CertificateOrder, domain: &str) -> Option<bool> {
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

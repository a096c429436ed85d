//! The resource plans a pass may spend from: DescribePackageState read once per
//! product code at the start of a pass and kept for the pass, the due certificates
//! per product code (for the metrics and the alert), and the guard every paid call
//! passes, which refuses a call for a plan that has no unit left.
//!
//! A unit the guard lets through is counted against the cached plan at once, so two
//! certificates of one product in the same pass cannot both take its last unit.
//! A plan that could not be read never blocks: a wrong "none left" would stop every
//! renewal of that product, while a paid call into an empty plan is only refused.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde::Serialize;
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::EngineError;
use super::engine::Engine;
use super::plan::{Action, Plan};
use super::ports::CertificateSource;
use crate::cas::api::CertificateOrder;
use crate::cas::api_apply::PackageState;
use crate::ids::OrderId;
use crate::settings::CertificateConfig;
use crate::store::{Journal, Phase};

/// What a pass knows of one product code's plan.
#[derive(Debug, Clone)]
struct Entry {
    /// `None`: DescribePackageState failed this pass.
    state: Option<PackageState>,
    /// Units the guard let through in this pass.
    taken: i64,
}

/// The plans of the current pass (cleared at the start of each pass).
#[derive(Debug, Default)]
pub struct QuotaCache {
    entries: Mutex<BTreeMap<String, Entry>>,
}

/// Units a plan has left by its counters; `None` when they do not say (an absent
/// counter, or a total of 0, which is what a product never bought may report: a
/// wrong "none left" would block for ever).
pub fn units_left(s: &PackageState) -> Option<i64> {
    match (s.total_count, s.used_count) {
        (Some(t), Some(u)) if t > 0 => Some((t - u).max(0)),
        _ => None,
    }
}

/// The message of a certificate blocked by an empty plan.
fn no_units_message(product_code: &str, s: &PackageState, taken: i64) -> String {
    let others = if taken > 0 {
        format!(", and {taken} taken by other certificates in this pass")
    } else {
        String::new()
    };
    format!(
        "no units left in plan {product_code}: {} of {} used (DescribePackageState){others}; nothing was spent: buy a resource plan of this product (free certificates: 20 per account per year) or free a unit; cas-renewd reads the plan again every pass and carries on once it has units",
        s.used_count.unwrap_or(0),
        s.total_count.unwrap_or(0)
    )
}

impl QuotaCache {
    /// Forgets the last pass's plans.
    pub(super) async fn clear(&self) {
        self.entries.lock().await.clear();
    }

    /// Reads every plan in `codes` not read yet this pass; a failure is cached too
    /// (warned about once), so a pass asks at most once per product code.
    pub(super) async fn read(&self, cas: &dyn CertificateSource, codes: &BTreeSet<String>) {
        let mut entries = self.entries.lock().await;
        for code in codes {
            if entries.contains_key(code) {
                continue;
            }
            let state = match cas.describe_package_state(code).await {
                Ok(r) => {
                    let s = r.body;
                    info!(product_code = %code, total = s.total_count, used = s.used_count, issued = s.issued_count, request_id = %r.request_id, "resource plan");
                    Some(s)
                }
                Err(e) => {
                    warn!(product_code = %code, error = %e, "cannot read the resource plan (DescribePackageState); paid calls for it go ahead unchecked");
                    None
                }
            };
            entries.insert(code.clone(), Entry { state, taken: 0 });
        }
    }

    /// What the pass read for `code`, if it was read.
    pub(super) async fn state(&self, code: &str) -> Option<PackageState> {
        self.entries.lock().await.get(code)?.state.clone()
    }

    /// Before a paid call from plan `product_code`: takes one unit (`take`; else
    /// only looks), or refuses with `Blocked` when the plan has none left. Reads
    /// the plan if the pass has not.
    pub(super) async fn unit(
        &self,
        cas: &dyn CertificateSource,
        product_code: &str,
        take: bool,
    ) -> Result<(), EngineError> {
        self.read(cas, &BTreeSet::from([product_code.to_owned()]))
            .await;
        let mut entries = self.entries.lock().await;
        let Some(entry) = entries.get_mut(product_code) else {
            return Ok(());
        };
        let Some(s) = &entry.state else {
            return Ok(());
        };
        if let Some(why) = refusal(product_code, s, entry.taken) {
            return Err(EngineError::Blocked(why));
        }
        if take {
            entry.taken += 1;
        }
        Ok(())
    }

    /// Every plan this pass read, by product code (`None`: the read failed).
    pub(super) async fn snapshot(&self) -> BTreeMap<String, Option<PackageState>> {
        let entries = self.entries.lock().await;
        entries
            .iter()
            .map(|(code, e)| (code.clone(), e.state.clone()))
            .collect()
    }
}

/// Why the guard refuses a paid call from plan `product_code` read as `s`, with
/// `taken` units already let through this pass; `None` when it lets it through.
pub(super) fn refusal(product_code: &str, s: &PackageState, taken: i64) -> Option<String> {
    units_left(s)
        .filter(|left| left - taken <= 0)
        .map(|_| no_units_message(product_code, s, taken))
}

/// The product code a paid call for this plan spends from, if the plan makes one
/// (renew, reapply, or a journal waiting to make its paid call), or will make one
/// in this pass: an order installed first that expires before `due_by_ms` (now
/// plus `renew_before`) is renewed next.
pub fn paid_product_code(
    action: &Action,
    journal: &Journal,
    orders: &[CertificateOrder],
    due_by_ms: i64,
) -> Option<String> {
    let of_order = |id: OrderId| {
        orders
            .iter()
            .find(|o| o.order_id == Some(id.get()))
            .and_then(|o| o.product_code.clone())
    };
    let code = match action {
        Action::Renew { source_order_id } => of_order(*source_order_id),
        Action::Reapply { product_code, .. } => Some(product_code.clone()),
        Action::Install { order_id } => orders
            .iter()
            .find(|o| o.order_id == Some(order_id.get()))
            .filter(|o| o.not_after_ms().is_some_and(|t| t < due_by_ms))
            .filter(|o| crate::cas::api_apply::not_renewable(o).is_none())
            .and_then(|o| o.product_code.clone()),
        Action::Resume { .. } => match &journal.phase {
            Phase::KeyReady(a) => a
                .product_code
                .clone()
                .or_else(|| of_order(a.source_order_id)),
            _ => None,
        },
        _ => None,
    };
    code.filter(|c| !c.is_empty())
}

/// One product code's plan as `cas-renewd quota` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct QuotaRow {
    pub product_code: String,
    pub total: Option<i64>,
    pub used: Option<i64>,
    pub issued: Option<i64>,
    /// `total - used` when the counters say.
    pub left: Option<i64>,
    /// Managed certificates whose plan this pass would spend from this product.
    pub due: u32,
    /// Why the plan could not be read.
    pub error: Option<String>,
}

/// The product codes of the managed certificates' orders, and how many of them are
/// due (their plan is a paid call) per product code.
/// A plan with its certificate (borrowed from the pass's plans: a copy of all
/// of them was ~1.5 KiB per certificate) and the journal the quota reads.
type Journaled<'p> = (&'p CertificateConfig, &'p Plan, Journal);

fn codes_and_due(
    certs: &[Journaled<'_>],
    orders: &[CertificateOrder],
    due_by_ms: i64,
) -> (BTreeSet<String>, BTreeMap<String, u32>) {
    // One look at each order (as `is_for` compares: ASCII case-insensitive), not
    // one per certificate: at 10,000 of each that was 10^8 comparisons.
    let domains: HashSet<String> = certs
        .iter()
        .map(|(c, _, _)| c.domain.to_ascii_lowercase())
        .collect();
    let mut codes: BTreeSet<String> = orders
        .iter()
        .filter(|o| {
            o.domain_name()
                .is_some_and(|d| domains.contains(&d.to_ascii_lowercase()))
        })
        .filter_map(|o| o.product_code.clone())
        .filter(|c| !c.is_empty())
        .collect();
    let mut due: BTreeMap<String, u32> = BTreeMap::new();
    for (_, plan, journal) in certs {
        if let Some(code) = paid_product_code(&plan.action, journal, orders, due_by_ms) {
            codes.insert(code.clone());
            *due.entry(code).or_default() += 1;
        }
    }
    (codes, due)
}

impl Engine {
    /// Each plan with its certificate's journal (an unreadable one as idle: the
    /// pass reports it when it acts). Only a resumed renewal's journal says
    /// anything to [`paid_product_code`]: the others are not read again (10,000
    /// reads at the start of every pass).
    pub(super) fn journaled<'p>(
        &self,
        plans: &'p [(CertificateConfig, Plan)],
    ) -> Vec<Journaled<'p>> {
        plans
            .iter()
            .map(|(c, p)| {
                let j = match p.action {
                    Action::Resume { .. } => self.read_journal(&c.name).unwrap_or_default(),
                    _ => Journal::default(),
                };
                (c, p, j)
            })
            .collect()
    }

    /// `cas-renewd quota`: the plans the managed certificates use, with the
    /// certificates due now; read-only.
    pub async fn quota(&self) -> Result<Vec<QuotaRow>, EngineError> {
        let orders = self.inventory().await?;
        let plans = self.plans(&orders, &super::PassOptions::default())?;
        Ok(self
            .read_quota(&self.journaled(&plans.certs), &orders)
            .await)
    }

    /// The start of a pass: reads the plans of every product code the managed
    /// certificates' orders use (once), and reports each with its due certificates.
    pub(super) async fn read_quota(
        &self,
        certs: &[Journaled<'_>],
        orders: &[CertificateOrder],
    ) -> Vec<QuotaRow> {
        self.quota.clear().await;
        let renew_before = chrono::Duration::from_std(self.cfg.renewal.renew_before)
            .unwrap_or(chrono::Duration::MAX);
        let due_by_ms = self
            .clock
            .now()
            .checked_add_signed(renew_before)
            .map_or(i64::MAX, |t| t.timestamp_millis());
        let (codes, due) = codes_and_due(certs, orders, due_by_ms);
        self.quota.read(self.cas.as_ref(), &codes).await;
        let mut rows = Vec::new();
        for code in codes {
            let state = self.quota.state(&code).await;
            let n = due.get(&code).copied().unwrap_or(0);
            self.observer.package_state(&code, state.as_ref(), n);
            rows.push(QuotaRow {
                total: state.as_ref().and_then(|s| s.total_count),
                used: state.as_ref().and_then(|s| s.used_count),
                issued: state.as_ref().and_then(|s| s.issued_count),
                left: state.as_ref().and_then(units_left),
                due: n,
                error: state
                    .is_none()
                    .then(|| "DescribePackageState failed (see the log)".to_owned()),
                product_code: code,
            });
        }
        rows
    }
}

/// `cas-renewd quota` as a table.
pub fn table(rows: &[QuotaRow]) -> String {
    let n = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let mut out = format!(
        "{:<32} {:>7} {:>7} {:>7} {:>7} {:>5}\n",
        "PRODUCT CODE", "TOTAL", "USED", "ISSUED", "LEFT", "DUE"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<32} {:>7} {:>7} {:>7} {:>7} {:>5}{}\n",
            crate::domain::ControlsEscaped(&r.product_code).to_string(),
            n(r.total),
            n(r.used),
            n(r.issued),
            n(r.left),
            r.due,
            r.error
                .as_deref()
                .map(|e| format!("  ({e})"))
                .unwrap_or_default()
        ));
        if r.left.is_some_and(|l| l < i64::from(r.due)) {
            out.push_str(&format!(
                "  warning: {} certificate(s) due but {} unit(s) left in plan {}\n",
                r.due,
                n(r.left),
                crate::domain::ControlsEscaped(&r.product_code)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::PhaseName;

    fn state(total: Option<i64>, used: Option<i64>) -> PackageState {
        PackageState {
            total_count: total,
            used_count: used,
            ..PackageState::default()
        }
    }

    #[test]
    fn units_left_only_when_the_counters_say() {
        assert_eq!(units_left(&state(Some(5), Some(2))), Some(3));
        assert_eq!(units_left(&state(Some(5), Some(7))), Some(0));
        assert_eq!(units_left(&state(Some(0), Some(0))), None);
        assert_eq!(units_left(&state(Some(5), None)), None);
        assert_eq!(units_left(&state(None, Some(1))), None);
    }

    #[test]
    fn the_blocking_message_names_the_plan_and_the_fix() {
        let m = no_units_message("geotrust-dv-1-starter", &state(Some(2), Some(2)), 0);
        assert!(
            m.starts_with("no units left in plan geotrust-dv-1-starter: 2 of 2 used"),
            "{m}"
        );
        assert!(m.contains("buy a resource plan"), "{m}");
        let m = no_units_message("p", &state(Some(2), Some(1)), 1);
        assert!(
            m.contains("1 taken by other certificates in this pass"),
            "{m}"
        );
    }

    #[test]
    fn the_paid_product_code_follows_the_plan() {
        let orders: Vec<CertificateOrder> = serde_json::from_value(serde_json::json!([
            { "OrderId": 7, "ProductCode": "geotrust-dv-1-starter", "CertEndTime": 1_000 },
            { "OrderId": 8, "ProductCode": "" },
            { "OrderId": 9, "ProductCode": "geotrust-dv-1-starter", "CertEndTime": 5_000 }
        ]))
        .expect("orders");
        let by = 2_000;
        let install = |id| Action::Install {
            order_id: OrderId::new(id),
        };
        assert_eq!(
            paid_product_code(&install(7), &Journal::default(), &orders, by).as_deref(),
            Some("geotrust-dv-1-starter"),
            "installed first, then renewed: due"
        );
        assert_eq!(
            paid_product_code(&install(9), &Journal::default(), &orders, by),
            None,
            "installed, not due yet"
        );
        let idle = Journal::default();
        let renew = Action::Renew {
            source_order_id: OrderId::new(7),
        };
        assert_eq!(
            paid_product_code(&renew, &idle, &orders, by).as_deref(),
            Some("geotrust-dv-1-starter")
        );
        let no_code = Action::Renew {
            source_order_id: OrderId::new(8),
        };
        assert_eq!(paid_product_code(&no_code, &idle, &orders, by), None);
        let resume = Action::Resume {
            phase: PhaseName::KeyReady,
        };
        let waiting = Journal {
            phase: Phase::example(PhaseName::KeyReady, OrderId::new(7)),
            ..Journal::default()
        };
        assert_eq!(
            paid_product_code(&resume, &waiting, &orders, by).as_deref(),
            Some("geotrust-dv-1-starter")
        );
        let following = Journal {
            phase: Phase::example(PhaseName::OrderCreated, OrderId::new(7)),
            ..Journal::default()
        };
        assert_eq!(paid_product_code(&resume, &following, &orders, by), None);
        assert_eq!(
            paid_product_code(&Action::Nothing, &waiting, &orders, by),
            None
        );
    }

    #[test]
    fn the_product_codes_are_those_of_the_certificates_domains_in_any_case() {
        let cfg = crate::settings::Config::parse(
            "certificates:\n  - { name: a, domain: A.example.com, output: { dir: /srv/a } }\n  - { name: b, domain: b.example.com, output: { dir: /srv/b } }\n",
            std::path::Path::new("t.yaml"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let order = |domain: Option<&str>, common: Option<&str>, code: &str| CertificateOrder {
            domain: domain.map(str::to_owned),
            common_name: common.map(str::to_owned),
            product_code: Some(code.to_owned()),
            ..CertificateOrder::default()
        };
        let orders = [
            order(Some("a.EXAMPLE.com"), None, "pa"),
            order(None, Some("B.example.com"), "pb"),
            order(Some("c.example.com"), None, "pc"),
            order(None, None, "none"),
            order(Some("a.example.com"), None, ""),
        ];
        let plans: Vec<(CertificateConfig, Plan)> = cfg
            .certificates
            .iter()
            .map(|c| {
                let plan = Plan {
                    cert: c.name.clone(),
                    action: Action::Nothing,
                    reason: String::new(),
                };
                (c.clone(), plan)
            })
            .collect();
        let certs: Vec<Journaled<'_>> = plans
            .iter()
            .map(|(c, p)| (c, p, Journal::default()))
            .collect();
        let (codes, due) = codes_and_due(&certs, &orders, 0);
        assert_eq!(codes.into_iter().collect::<Vec<_>>(), ["pa", "pb"]);
        assert!(due.is_empty());
    }

    #[test]
    fn the_table_warns_when_fewer_units_than_due_certificates() {
        let rows = [QuotaRow {
            product_code: "geotrust-dv-1-starter".into(),
            total: Some(3),
            used: Some(2),
            issued: Some(2),
            left: Some(1),
            due: 2,
            error: None,
        }];
        let t = table(&rows);
        assert!(t.contains("geotrust-dv-1-starter"), "{t}");
        assert!(t.contains("2 certificate(s) due but 1 unit(s) left"), "{t}");
    }
}

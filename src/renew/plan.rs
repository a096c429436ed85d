//! The plan: a pure function from (orders, journal, disk, now, config) to what to
//! do for one certificate, with the reason in words an operator can act on.

use std::time::Duration;

use serde::Serialize;

use crate::cas::api::{CertificateOrder, OrderStatus};
use crate::cas::api_apply::not_renewable;
use crate::config::RenewalMode;
use crate::pki::CertInfo;
use crate::store::{Journal, JournalPhase};

/// CertEndTime and the certificate's notAfter may differ a little; a newer order
/// must expire at least this much later than the installed certificate.
const NEWER_SLACK_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "kebab-case")]
pub enum Action {
    /// Nothing to do this pass.
    Nothing,
    /// Continue the renewal the journal records.
    Resume { phase: String },
    /// The certificate is installed but its reload hooks have not succeeded.
    RerunReload,
    /// An issued order holds a newer certificate than the one on disk.
    Install { order_id: i64 },
    /// A renewal made elsewhere (console, another host) is in progress: follow it.
    Adopt { order_id: i64 },
    /// Renew this order (spends quota).
    Renew { source_order_id: i64 },
    /// Apply for a new certificate of the same product, for an order CAS does not
    /// renew (`renewal.mode: reapply`; spends quota).
    Reapply {
        source_order_id: i64,
        product_code: String,
    },
    /// Cannot proceed without the operator.
    Blocked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub cert: String,
    #[serde(flatten)]
    pub action: Action,
    pub reason: String,
}

/// Everything the decision depends on.
pub struct PlanInput<'a> {
    pub cert: &'a str,
    pub domain: &'a str,
    /// The account's orders for this domain.
    pub orders: &'a [CertificateOrder],
    pub journal: &'a Journal,
    /// The installed leaf, if any.
    pub disk: Option<&'a CertInfo>,
    pub now_ms: i64,
    pub renew_before: Duration,
    /// `renew --force`: renew even when not due, and past a rejection.
    pub force: bool,
    /// `renewal.mode` of this certificate.
    pub mode: RenewalMode,
}

fn days(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

fn date(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

/// Decides what to do for one certificate.
pub fn plan(i: &PlanInput<'_>) -> Plan {
    let out = |action: Action, reason: String| Plan {
        cert: i.cert.to_owned(),
        action,
        reason,
    };
    let j = i.journal;
    match j.phase {
        JournalPhase::KeyReady
        | JournalPhase::RenewRequested
        | JournalPhase::OrderCreated
        | JournalPhase::ApplicationRequested
        | JournalPhase::ApplicationSubmitted
        | JournalPhase::Issued => {
            return out(
                Action::Resume {
                    phase: j.phase.as_str().to_owned(),
                },
                format!(
                    "a renewal is in flight at phase {}{}{}{}",
                    j.phase.as_str(),
                    j.new_order_id
                        .map(|o| format!(" (order {o})"))
                        .unwrap_or_default(),
                    j.unclear_since
                        .as_deref()
                        .map(|t| format!(
                            "; the paid call's outcome is unclear and no order has shown since {t}: see last_error"
                        ))
                        .unwrap_or_default(),
                    j.pending_application
                        .as_deref()
                        .map(|p| format!("; {p}"))
                        .unwrap_or_default()
                ),
            );
        }
        JournalPhase::Rejected if !i.force => {
            return out(
                Action::Blocked,
                format!(
                    "the last renewal was refused: {}; check it, then run `cas-renewd renew --cert {} --force`",
                    j.last_error.as_deref().unwrap_or("no reason recorded"),
                    i.cert
                ),
            );
        }
        _ => {}
    }
    let p = decide(i, &out);
    // A pending reload runs at the end of the pass anyway; it only becomes the
    // action when nothing else is to be done.
    if !j.reload_pending.is_empty() && matches!(p.action, Action::Nothing) {
        return out(
            Action::RerunReload,
            format!(
                "the installed certificate still needs its reload ({})",
                j.reload_pending.join(", ")
            ),
        );
    }
    p
}

fn decide(i: &PlanInput<'_>, out: &dyn Fn(Action, String) -> Plan) -> Plan {
    let j = i.journal;
    let disk_end = i.disk.map(|d| d.not_after * 1000);
    let is_issued = |o: &&CertificateOrder| {
        matches!(
            o.status,
            Some(OrderStatus::Issued | OrderStatus::Willexpired)
        ) && o.cert_end_time.is_some()
    };
    let newest_issued = i
        .orders
        .iter()
        .filter(is_issued)
        .max_by_key(|o| (o.cert_end_time, o.order_id));
    let newest_any = i.orders.iter().max_by_key(|o| o.order_id);

    if let Some(n) = newest_issued {
        let end = n.cert_end_time.unwrap_or(0);
        let newer = disk_end.is_none_or(|d| end > d + NEWER_SLACK_MS);
        if newer && j.unusable_orders.contains(&n.order_id.unwrap_or(0)) {
            return out(
                Action::Blocked,
                format!(
                    "order {} (valid until {}) was renewed elsewhere and its private key is not available here; install it by hand, or renew again with `renew --force`",
                    n.order_id.unwrap_or(0),
                    date(end)
                ),
            );
        }
        if newer && let Some(id) = n.order_id {
            return out(
                Action::Install { order_id: id },
                match disk_end {
                    None => format!(
                        "no certificate on disk; order {id} holds one valid until {}",
                        date(end)
                    ),
                    Some(d) => format!(
                        "order {id} holds a certificate valid until {}, newer than the one on disk ({})",
                        date(end),
                        date(d)
                    ),
                },
            );
        }
    }

    // A renewal order newer than every issued one, not ours, still being processed.
    // Following it is bounded: the engine gives an adopted order up (and lists it as
    // unusable) when it is not issued within `issuance_timeout`, so an order bought
    // in the console and never applied for cannot hold the renewal back for ever.
    let newest_issued_id = newest_issued.and_then(|o| o.order_id).unwrap_or(0);
    if let Some(p) = i.orders.iter().find(|o| {
        matches!(o.status, Some(OrderStatus::Payed | OrderStatus::Checking))
            && o.order_id.is_some_and(|id| id > newest_issued_id)
            && o.order_id != j.new_order_id
            && !j.unusable_orders.contains(&o.order_id.unwrap_or(0))
    }) && let Some(id) = p.order_id
    {
        return out(
            Action::Adopt { order_id: id },
            format!(
                "order {id} ({}) is a renewal made elsewhere that is still in progress; following it instead of renewing again",
                p.status.map(|s| s.as_str()).unwrap_or("?")
            ),
        );
    }

    let Some(current) = newest_issued.or(newest_any) else {
        return out(
            Action::Blocked,
            format!(
                "no order for {} in the account; check the domain (it must equal the order's Domain)",
                i.domain
            ),
        );
    };
    let Some(current_id) = current.order_id else {
        return out(Action::Blocked, "the newest order has no OrderId".into());
    };
    let end = disk_end.or(current.cert_end_time);
    let window = i64::try_from(i.renew_before.as_millis()).unwrap_or(i64::MAX);
    let status = current.status.unwrap_or(OrderStatus::Unknown);
    let left = end.map(|e| e - i.now_ms);
    let due = status == OrderStatus::Willexpired || left.is_some_and(|l| l <= window);

    let kind = not_renewable(current);
    // CAS does not renew this kind: apply for a new certificate, or say what fixes it.
    let replace = |why: String| match (&kind, i.mode) {
        (Some(k), RenewalMode::Reapply) => match current.product_code.as_deref() {
            Some(pc) if !pc.is_empty() => out(
                Action::Reapply {
                    source_order_id: current_id,
                    product_code: pc.to_owned(),
                },
                format!(
                    "{why}; order {current_id} is {}, which CAS does not renew: applying for a new {pc} certificate (renewal.mode: reapply)",
                    k.describe()
                ),
            ),
            _ => out(
                Action::Blocked,
                format!(
                    "{why}; order {current_id} is {}, which CAS does not renew, and it has no ProductCode to apply for again: apply for a new certificate in the console",
                    k.describe()
                ),
            ),
        },
        (Some(k), RenewalMode::Renew) => out(
            Action::Blocked,
            format!(
                "{why}; order {current_id} is {}, which CAS does not renew: a new certificate must be applied for; set `renewal: {{ mode: reapply }}` on certificate {} (or under `defaults:`) to let cas-renewd apply with CreateCertificateForPackageRequest, or apply in the console",
                k.describe(),
                i.cert
            ),
        ),
        (None, _) => out(
            Action::Renew {
                source_order_id: current_id,
            },
            why,
        ),
    };
    if i.force {
        return replace(format!("forced renewal of order {current_id} ({status})"));
    }
    if !due {
        let e = end.unwrap_or(0);
        return out(
            Action::Nothing,
            format!(
                "valid until {} ({} days); renewal due from {}",
                date(e),
                days(e - i.now_ms),
                date(e - window)
            ),
        );
    }
    let left_words = left
        .map(|l| format!(" ({} days left)", days(l)))
        .unwrap_or_default();
    if kind.is_some() {
        // A new application does not need the order to be WILLEXPIRED, nor unexpired.
        return replace(format!("due: order {current_id} is {status}{left_words}"));
    }
    match status {
        OrderStatus::Willexpired => {
            replace(format!("order {current_id} is WILLEXPIRED{left_words}"))
        }
        OrderStatus::Expired => out(
            Action::Blocked,
            format!(
                "order {current_id} has EXPIRED; CAS cannot renew an expired order: buy a new certificate"
            ),
        ),
        other => out(
            Action::Nothing,
            format!(
                "due (renew_before), but order {current_id} is {other}; CAS renews only WILLEXPIRED orders, so this waits until it is"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn order(id: i64, status: OrderStatus, end_days: Option<i64>) -> CertificateOrder {
        CertificateOrder {
            order_id: Some(id),
            domain: Some("www.example.com".into()),
            status: Some(status),
            cert_end_time: end_days.map(|d| NOW + d * DAY_MS),
            ..Default::default()
        }
    }

    fn disk(end_days: i64) -> CertInfo {
        CertInfo {
            der: vec![],
            subject: String::new(),
            issuer: String::new(),
            serial_hex: String::new(),
            not_before: 0,
            not_after: (NOW + end_days * DAY_MS) / 1000,
            dns_names: vec![],
            spki_sha256: String::new(),
            key_type: String::new(),
            sha256: String::new(),
        }
    }

    fn run(orders: &[CertificateOrder], j: &Journal, d: Option<&CertInfo>, force: bool) -> Plan {
        run_mode(orders, j, d, force, RenewalMode::Renew)
    }

    fn run_mode(
        orders: &[CertificateOrder],
        j: &Journal,
        d: Option<&CertInfo>,
        force: bool,
        mode: RenewalMode,
    ) -> Plan {
        plan(&PlanInput {
            cert: "www",
            domain: "www.example.com",
            orders,
            journal: j,
            disk: d,
            now_ms: NOW,
            renew_before: Duration::from_secs(30 * 86_400),
            force,
            mode,
        })
    }

    fn kind(mut o: CertificateOrder, cert_type: &str, product: &str, dt: &str) -> CertificateOrder {
        o.cert_type = Some(cert_type.into());
        o.product_code = Some(product.into());
        o.domain_type = Some(dt.into());
        o
    }

    #[test]
    fn kinds_cas_does_not_renew_are_reapplied_or_blocked() {
        let d20 = disk(20);
        let cases = [
            ("FREE", "digicert-free-1-free", "ONE"),
            ("DV", "digicert-free-1-free", "ONE"),
            ("OV", "geotrust-ov-1-personal", "MIX"),
            ("DV", "geotrust-dv-1-starter", "MULTIPLE"),
        ];
        for (ct, pc, dt) in cases {
            for status in [OrderStatus::Willexpired, OrderStatus::Expired] {
                let orders = vec![kind(order(1, status, Some(20)), ct, pc, dt)];
                for force in [false, true] {
                    let p = run(&orders, &Journal::default(), Some(&d20), force);
                    assert_eq!(p.action, Action::Blocked, "{ct} {pc} {dt}: {}", p.reason);
                    assert!(
                        p.reason.contains("mode: reapply") && p.reason.contains("does not renew"),
                        "{}",
                        p.reason
                    );
                    let p = run_mode(
                        &orders,
                        &Journal::default(),
                        Some(&d20),
                        force,
                        RenewalMode::Reapply,
                    );
                    assert_eq!(
                        p.action,
                        Action::Reapply {
                            source_order_id: 1,
                            product_code: pc.into()
                        },
                        "{}",
                        p.reason
                    );
                }
            }
        }
        // Not due: nothing, whatever the kind.
        let calm = vec![kind(
            order(1, OrderStatus::Issued, Some(200)),
            "FREE",
            "digicert-free-1-free",
            "ONE",
        )];
        assert_eq!(
            run_mode(
                &calm,
                &Journal::default(),
                Some(&disk(200)),
                false,
                RenewalMode::Reapply
            )
            .action,
            Action::Nothing
        );
        // A renewable kind renews in either mode.
        let paid = vec![kind(
            order(1, OrderStatus::Willexpired, Some(20)),
            "DV",
            "geotrust-dv-1-starter",
            "ONE",
        )];
        assert_eq!(
            run_mode(
                &paid,
                &Journal::default(),
                Some(&d20),
                false,
                RenewalMode::Reapply
            )
            .action,
            Action::Renew { source_order_id: 1 }
        );
        // No ProductCode: nothing to apply for again.
        let mut bare = order(1, OrderStatus::Willexpired, Some(20));
        bare.cert_type = Some("FREE".into());
        let p = run_mode(
            &[bare],
            &Journal::default(),
            Some(&d20),
            false,
            RenewalMode::Reapply,
        );
        assert_eq!(p.action, Action::Blocked, "{}", p.reason);
        assert!(p.reason.contains("no ProductCode"), "{}", p.reason);
    }

    #[test]
    fn decisions_with_reasons() {
        let idle = Journal::default();
        let d20 = disk(20);
        let d200 = disk(200);
        let dm1 = disk(-1);
        type Case<'a> = (
            &'a str,
            Vec<CertificateOrder>,
            Journal,
            Option<&'a CertInfo>,
            bool,
            Action,
            &'a str,
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "far from expiry",
                vec![order(1, OrderStatus::Issued, Some(200))],
                idle.clone(),
                Some(&d200),
                false,
                Action::Nothing,
                "renewal due from",
            ),
            (
                "WILLEXPIRED renews",
                vec![order(1, OrderStatus::Willexpired, Some(20))],
                idle.clone(),
                Some(&d20),
                false,
                Action::Renew { source_order_id: 1 },
                "WILLEXPIRED (20 days left)",
            ),
            (
                "nothing on disk installs",
                vec![order(1, OrderStatus::Willexpired, Some(20))],
                idle.clone(),
                None,
                false,
                Action::Install { order_id: 1 },
                "no certificate on disk",
            ),
            (
                "newer issued order installs",
                vec![
                    order(1, OrderStatus::Willexpired, Some(20)),
                    order(2, OrderStatus::Issued, Some(385)),
                ],
                idle.clone(),
                Some(&d20),
                false,
                Action::Install { order_id: 2 },
                "newer than the one on disk",
            ),
            (
                "renewal made elsewhere is adopted",
                vec![
                    order(1, OrderStatus::Willexpired, Some(20)),
                    order(2, OrderStatus::Payed, None),
                ],
                idle.clone(),
                Some(&d20),
                false,
                Action::Adopt { order_id: 2 },
                "made elsewhere",
            ),
            (
                "expired is blocked",
                vec![order(1, OrderStatus::Expired, Some(-1))],
                idle.clone(),
                Some(&dm1),
                false,
                Action::Blocked,
                "EXPIRED",
            ),
            (
                "no order is blocked",
                vec![],
                idle.clone(),
                None,
                false,
                Action::Blocked,
                "no order for www.example.com",
            ),
            (
                "due but not yet WILLEXPIRED waits",
                vec![order(1, OrderStatus::Issued, Some(20))],
                idle.clone(),
                Some(&d20),
                false,
                Action::Nothing,
                "renews only WILLEXPIRED",
            ),
            (
                "force renews",
                vec![order(1, OrderStatus::Issued, Some(200))],
                idle.clone(),
                Some(&d200),
                true,
                Action::Renew { source_order_id: 1 },
                "forced",
            ),
        ];
        for (name, orders, j, d, force, action, phrase) in cases {
            let p = run(&orders, &j, d, force);
            assert_eq!(p.action, action, "{name}: {}", p.reason);
            assert!(
                p.reason.contains(phrase),
                "{name}: {:?} lacks {phrase:?}",
                p.reason
            );
        }
    }

    #[test]
    fn the_journal_comes_first() {
        let orders = vec![order(1, OrderStatus::Willexpired, Some(20))];
        for phase in [
            JournalPhase::KeyReady,
            JournalPhase::RenewRequested,
            JournalPhase::OrderCreated,
            JournalPhase::Issued,
        ] {
            let j = Journal {
                phase,
                new_order_id: Some(9),
                ..Default::default()
            };
            assert!(
                matches!(run(&orders, &j, None, false).action, Action::Resume { .. }),
                "{phase:?}"
            );
        }
        let rejected = Journal {
            phase: JournalPhase::Rejected,
            last_error: Some("wrong key".into()),
            ..Default::default()
        };
        let p = run(&orders, &rejected, Some(&disk(20)), false);
        assert_eq!(p.action, Action::Blocked);
        assert!(
            p.reason.contains("wrong key") && p.reason.contains("--force"),
            "{}",
            p.reason
        );
        assert!(matches!(
            run(&orders, &rejected, Some(&disk(20)), true).action,
            Action::Renew { .. }
        ));
        let reload = Journal {
            reload_pending: vec!["nginx".into()],
            ..Default::default()
        };
        // A pending reload does not hold back a due renewal (its install reloads)...
        assert!(matches!(
            run(&orders, &reload, Some(&disk(20)), false).action,
            Action::Renew { .. }
        ));
        // ...and is the action when nothing else is due.
        let calm = vec![order(1, OrderStatus::Issued, Some(200))];
        assert_eq!(
            run(&calm, &reload, Some(&disk(200)), false).action,
            Action::RerunReload
        );
    }

    #[test]
    fn an_unclear_or_pending_renewal_says_so() {
        let orders = vec![order(1, OrderStatus::Willexpired, Some(20))];
        let j = Journal {
            phase: JournalPhase::RenewRequested,
            unclear_since: Some("2026-11-29T06:00:00Z".into()),
            ..Default::default()
        };
        let p = run(&orders, &j, Some(&disk(20)), true);
        assert!(matches!(p.action, Action::Resume { .. }), "{}", p.reason);
        assert!(p.reason.contains("outcome is unclear"), "{}", p.reason);
        let j = Journal {
            phase: JournalPhase::OrderCreated,
            new_order_id: Some(2),
            pending_application: Some("submit order 2 in the console".into()),
            ..Default::default()
        };
        let p = run(&orders, &j, Some(&disk(20)), false);
        assert!(p.reason.contains("submit order 2"), "{}", p.reason);
    }

    #[test]
    fn unusable_orders_block_instead_of_spending_again() {
        let orders = vec![
            order(1, OrderStatus::Willexpired, Some(20)),
            order(2, OrderStatus::Checking, None),
        ];
        let j = Journal {
            unusable_orders: vec![2],
            ..Default::default()
        };
        assert_eq!(
            run(&orders, &j, Some(&disk(20)), false).action,
            Action::Renew { source_order_id: 1 }
        );
        let ours = Journal {
            new_order_id: Some(2),
            ..Default::default()
        };
        assert_eq!(
            run(&orders, &ours, Some(&disk(20)), false).action,
            Action::Renew { source_order_id: 1 }
        );
        let orders = vec![
            order(1, OrderStatus::Willexpired, Some(20)),
            order(3, OrderStatus::Issued, Some(380)),
        ];
        let j = Journal {
            unusable_orders: vec![3],
            ..Default::default()
        };
        let p = run(&orders, &j, Some(&disk(20)), false);
        assert_eq!(p.action, Action::Blocked);
        assert!(p.reason.contains("renewed elsewhere"), "{}", p.reason);
    }
}

#[cfg(test)]
mod properties {
    //! Invariants over many random situations (seeded, so a failure repeats).
    use rand::{Rng, SeedableRng};

    use super::*;

    const NOW: i64 = 1_800_000_000_000;
    const DAY: i64 = 86_400_000;
    const STATUSES: [OrderStatus; 6] = [
        OrderStatus::Payed,
        OrderStatus::Checking,
        OrderStatus::Issued,
        OrderStatus::Willexpired,
        OrderStatus::Expired,
        OrderStatus::CheckedFail,
    ];
    const PHASES: [JournalPhase; 9] = [
        JournalPhase::Idle,
        JournalPhase::KeyReady,
        JournalPhase::RenewRequested,
        JournalPhase::OrderCreated,
        JournalPhase::ApplicationRequested,
        JournalPhase::ApplicationSubmitted,
        JournalPhase::Issued,
        JournalPhase::Installed,
        JournalPhase::Rejected,
    ];
    /// (CertType, ProductCode, DomainType, SourceType): renewable and not.
    const KINDS: [(&str, &str, &str, &str); 7] = [
        ("DV", "geotrust-dv-1-starter", "ONE", "cpack"),
        ("OV", "geotrust-ov-w-personal", "WILDCARD", "buy"),
        ("FREE", "digicert-free-1-free", "ONE", "cpack"),
        ("DV", "symantec-free-1-free", "ONE", "cpack"),
        ("OV", "geotrust-ov-1-personal", "MIX", "cpack"),
        ("DV", "geotrust-dv-1-starter", "M_WILDCARD", "cpack"),
        ("DV", "geotrust-dv-1-starter", "ONE", "upload"),
    ];

    fn random_case(
        rng: &mut rand::rngs::StdRng,
    ) -> (Vec<CertificateOrder>, Journal, Option<CertInfo>) {
        let orders: Vec<CertificateOrder> = (0..rng.random_range(0..5))
            .map(|i| {
                let status = STATUSES[rng.random_range(0..STATUSES.len())];
                let issued = matches!(
                    status,
                    OrderStatus::Issued | OrderStatus::Willexpired | OrderStatus::Expired
                );
                // Half renewable kinds (the first two), half the others.
                let k = if rng.random_bool(0.5) {
                    rng.random_range(0..2)
                } else {
                    rng.random_range(2..KINDS.len())
                };
                let (ct, pc, dt, st) = KINDS[k];
                CertificateOrder {
                    order_id: Some(100 + i),
                    domain: Some("www.example.com".into()),
                    status: Some(status),
                    cert_end_time: issued.then(|| NOW + rng.random_range(-10..400) * DAY),
                    cert_type: Some(ct.into()),
                    product_code: rng.random_bool(0.9).then(|| pc.into()),
                    domain_type: Some(dt.into()),
                    source_type: Some(st.into()),
                    ..Default::default()
                }
            })
            .collect();
        let journal = Journal {
            phase: PHASES[rng.random_range(0..PHASES.len())],
            new_order_id: rng.random_bool(0.5).then(|| 100 + rng.random_range(0..5)),
            reload_pending: if rng.random_bool(0.3) {
                vec!["nginx".into()]
            } else {
                vec![]
            },
            unusable_orders: if rng.random_bool(0.2) {
                vec![100 + rng.random_range(0..5)]
            } else {
                vec![]
            },
            ..Default::default()
        };
        let disk = rng.random_bool(0.7).then(|| CertInfo {
            der: vec![],
            subject: String::new(),
            issuer: String::new(),
            serial_hex: String::new(),
            not_before: 0,
            not_after: (NOW + rng.random_range(-10..400) * DAY) / 1000,
            dns_names: vec![],
            spki_sha256: String::new(),
            key_type: String::new(),
            sha256: String::new(),
        });
        (orders, journal, disk)
    }

    #[test]
    fn no_plan_spends_quota_when_it_must_not() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
        let (mut renews, mut reapplies) = (0, 0);
        for case in 0..20_000 {
            let (orders, journal, disk) = random_case(&mut rng);
            let mode = if rng.random_bool(0.5) {
                RenewalMode::Reapply
            } else {
                RenewalMode::Renew
            };
            let force = rng.random_bool(0.1);
            let p = plan(&PlanInput {
                cert: "www",
                domain: "www.example.com",
                orders: &orders,
                journal: &journal,
                disk: disk.as_ref(),
                now_ms: NOW,
                renew_before: Duration::from_secs(30 * 86_400),
                force,
                mode,
            });
            let ctx = format!(
                "case {case}: {orders:?} {journal:?} {mode:?} -> {}",
                p.reason
            );
            let source_of = |id: i64| orders.iter().find(|o| o.order_id == Some(id));
            let source_order_id = match &p.action {
                Action::Renew { source_order_id } => {
                    // Never a kind CAS does not renew, not even with --force.
                    let src = source_of(*source_order_id).expect("the source is listed");
                    assert!(not_renewable(src).is_none(), "{ctx}");
                    *source_order_id
                }
                Action::Reapply {
                    source_order_id,
                    product_code,
                } => {
                    reapplies += 1;
                    let src = source_of(*source_order_id).expect("the source is listed");
                    assert!(not_renewable(src).is_some(), "{ctx}");
                    assert_eq!(mode, RenewalMode::Reapply, "{ctx}");
                    assert_eq!(src.product_code.as_deref(), Some(product_code.as_str()));
                    assert!(
                        matches!(journal.phase, JournalPhase::Idle | JournalPhase::Installed)
                            || force && journal.phase == JournalPhase::Rejected,
                        "{ctx}"
                    );
                    continue;
                }
                _ => continue,
            };
            if force {
                continue;
            }
            renews += 1;
            // Never while a renewal is in flight or refused.
            assert!(
                matches!(journal.phase, JournalPhase::Idle | JournalPhase::Installed),
                "{ctx}"
            );
            // Never while another renewal (not ours, not unusable) is in progress.
            let newest_issued = orders
                .iter()
                .filter(|o| {
                    matches!(
                        o.status,
                        Some(OrderStatus::Issued | OrderStatus::Willexpired)
                    )
                })
                .filter_map(|o| o.order_id)
                .max()
                .unwrap_or(0);
            assert!(
                !orders.iter().any(|o| matches!(
                    o.status,
                    Some(OrderStatus::Payed | OrderStatus::Checking)
                ) && o.order_id.is_some_and(|id| id > newest_issued)
                    && o.order_id != journal.new_order_id
                    && !journal.unusable_orders.contains(&o.order_id.unwrap_or(0))),
                "{ctx}"
            );
            // Only a WILLEXPIRED order is renewed without --force.
            let source = orders.iter().find(|o| o.order_id == Some(source_order_id));
            assert_eq!(
                source.and_then(|o| o.status),
                Some(OrderStatus::Willexpired),
                "{ctx}"
            );
        }
        assert!(
            renews > 100 && reapplies > 100,
            "the generator reaches the renew branch ({renews} times) and the reapply branch ({reapplies})"
        );
    }
}

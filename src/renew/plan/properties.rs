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
const PHASES: [PhaseName; 9] = PhaseName::ALL;
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

fn random_case(rng: &mut rand::rngs::StdRng) -> (Vec<CertificateOrder>, Journal, Option<CertInfo>) {
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
    let phase = PHASES[rng.random_range(0..PHASES.len())];
    let order = rng
        .random_bool(0.5)
        .then(|| OrderId::new(100 + rng.random_range(0..5)));
    let journal = Journal {
        phase: Phase::example(phase, order.unwrap_or(OrderId::new(100))),
        last_order_id: order,
        reload_pending: if rng.random_bool(0.3) {
            vec!["nginx".into()]
        } else {
            vec![]
        },
        unusable_orders: if rng.random_bool(0.2) {
            vec![OrderId::new(100 + rng.random_range(0..5))]
        } else {
            vec![]
        },
        ..Default::default()
    };
    // The installed certificate is often one of the orders' (as after an install),
    // else any end.
    let ends: Vec<i64> = orders.iter().filter_map(|o| o.cert_end_time).collect();
    let end_ms = if !ends.is_empty() && rng.random_bool(0.5) {
        ends[rng.random_range(0..ends.len())]
    } else {
        NOW + rng.random_range(-10..400) * DAY
    };
    let disk = rng.random_bool(0.7).then(|| CertInfo {
        der: vec![],
        subject: String::new(),
        issuer: String::new(),
        serial_hex: String::new(),
        not_before: 0,
        not_after: end_ms / 1000,
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
    for case in 0..30_000 {
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
            instances: &[],
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
        // The hooks' scan after a pass skips the journals planned `Nothing`
        // (`reload::pending_hooks`): a pending reload must never plan nothing.
        if p.action == Action::Nothing {
            assert!(journal.reload_pending.is_empty(), "{ctx}");
        }
        let source_of = |id: OrderId| orders.iter().find(|o| o.order_id == Some(id.get()));
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
                    matches!(journal.phase, Phase::Idle | Phase::Installed)
                        || force && matches!(journal.phase, Phase::Rejected(_)),
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
            matches!(journal.phase, Phase::Idle | Phase::Installed),
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
            .max();
        assert!(
            !orders.iter().any(|o| matches!(
                o.status,
                Some(OrderStatus::Payed | OrderStatus::Checking)
            ) && o
                .order_id
                .is_some_and(|id| newest_issued.is_none_or(|n| id > n))
                && o.order_id.map(OrderId::new) != journal.order_id()
                && !o
                    .order_id
                    .is_some_and(|id| journal.unusable_orders.contains(&OrderId::new(id)))),
            "{ctx}"
        );
        // Only a WILLEXPIRED order is renewed without --force.
        let source = orders
            .iter()
            .find(|o| o.order_id == Some(source_order_id.get()));
        // Never when the installed certificate is newer than the source's and not
        // due: that renewal was paid already (its order missing from the listing).
        if let (Some(d), Some(src_end)) = (&disk, source.and_then(|o| o.cert_end_time)) {
            let disk_ms = d.not_after * 1000;
            assert!(
                disk_ms <= src_end + NEWER_SLACK_MS || disk_ms - NOW <= 30 * DAY,
                "{ctx}"
            );
        }
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

//! Plans for hand-picked situations.

use super::*;
use crate::store::Rejected;

pub(super) const NOW: i64 = 1_800_000_000_000;

fn order(id: i64, status: OrderStatus, end_days: Option<i64>) -> CertificateOrder {
    CertificateOrder {
        order_id: Some(id),
        domain: Some("www.example.com".into()),
        status: Some(status),
        cert_end_time: end_days.map(|d| NOW + d * DAY_MS),
        ..Default::default()
    }
}

pub(super) fn disk(end_days: i64) -> CertInfo {
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
    plan(&input(orders, j, d, force, mode))
}

fn input<'a>(
    orders: &'a [CertificateOrder],
    j: &'a Journal,
    d: Option<&'a CertInfo>,
    force: bool,
    mode: RenewalMode,
) -> PlanInput<'a> {
    PlanInput {
        cert: "www",
        domain: "www.example.com",
        orders,
        instances: &[],
        journal: j,
        disk: d,
        now_ms: NOW,
        renew_before: Duration::from_secs(30 * 86_400),
        force,
        mode,
    }
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
                        source_order_id: OrderId::new(1),
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
        Action::Renew {
            source_order_id: OrderId::new(1)
        }
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
            Action::Renew {
                source_order_id: OrderId::new(1),
            },
            "WILLEXPIRED (20 days left)",
        ),
        (
            "nothing on disk installs",
            vec![order(1, OrderStatus::Willexpired, Some(20))],
            idle.clone(),
            None,
            false,
            Action::Install {
                order_id: OrderId::new(1),
            },
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
            Action::Install {
                order_id: OrderId::new(2),
            },
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
            Action::Adopt {
                order_id: OrderId::new(2),
            },
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
            Action::Renew {
                source_order_id: OrderId::new(1),
            },
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
    // Every phase but idle, installed and rejected is a renewal in flight.
    for phase in &PhaseName::ALL[1..7] {
        let phase = *phase;
        let j = Journal {
            phase: Phase::example(phase, OrderId::new(9)),
            ..Default::default()
        };
        assert_eq!(
            run(&orders, &j, None, false).action,
            Action::Resume { phase },
            "{phase}"
        );
    }
    let rejected = Journal {
        phase: Phase::Rejected(Rejected::default()),
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
    let Phase::RenewRequested(mut r) = Phase::example(PhaseName::RenewRequested, OrderId::new(1))
    else {
        unreachable!("a renew-requested example")
    };
    r.unclear_since = "2026-11-29T06:00:00Z".parse().ok();
    let j = Journal {
        phase: Phase::RenewRequested(r),
        ..Default::default()
    };
    let p = run(&orders, &j, Some(&disk(20)), true);
    assert!(matches!(p.action, Action::Resume { .. }), "{}", p.reason);
    assert!(p.reason.contains("outcome is unclear"), "{}", p.reason);
    let Phase::OrderCreated(mut o) = Phase::example(PhaseName::OrderCreated, OrderId::new(2))
    else {
        unreachable!("an order-created example")
    };
    o.pending_application = Some("submit order 2 in the console".into());
    let j = Journal {
        phase: Phase::OrderCreated(o),
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
        unusable_orders: vec![OrderId::new(2)],
        ..Default::default()
    };
    assert_eq!(
        run(&orders, &j, Some(&disk(20)), false).action,
        Action::Renew {
            source_order_id: OrderId::new(1)
        }
    );
    let ours = Journal {
        last_order_id: Some(OrderId::new(2)),
        ..Default::default()
    };
    assert_eq!(
        run(&orders, &ours, Some(&disk(20)), false).action,
        Action::Renew {
            source_order_id: OrderId::new(1)
        }
    );
}

/// An issued order that is unusable blocks; the block names the two commands that
/// get past it, and `--force` does.
#[test]
fn a_certificate_renewed_elsewhere_names_import_and_force_which_gets_past_it() {
    let orders = vec![
        order(1, OrderStatus::Willexpired, Some(20)),
        order(3, OrderStatus::Issued, Some(380)),
    ];
    let j = Journal {
        unusable_orders: vec![OrderId::new(3)],
        ..Default::default()
    };
    let p = run(&orders, &j, Some(&disk(20)), false);
    assert_eq!(p.action, Action::Blocked);
    assert!(p.reason.contains("renewed elsewhere"), "{}", p.reason);
    for hint in [
        "cas-renewd import --cert www --key FILE",
        "cas-renewd renew --cert www --force",
    ] {
        assert!(p.reason.contains(hint), "{}", p.reason);
    }
    assert!(!p.reason.contains("by hand"), "{}", p.reason);
    assert!(matches!(
        run(&orders, &j, Some(&disk(20)), true).action,
        Action::Renew { .. }
    ));
}

#[test]
fn plans_read_as_words_not_debug_text() {
    let cases = [
        (Action::Nothing, "nothing"),
        (
            Action::Resume {
                phase: PhaseName::OrderCreated,
            },
            "resume (order-created)",
        ),
        (Action::RerunReload, "reload"),
        (
            Action::Install {
                order_id: OrderId::new(7),
            },
            "install (order 7)",
        ),
        (
            Action::Adopt {
                order_id: OrderId::new(8),
            },
            "adopt (order 8)",
        ),
        (
            Action::Renew {
                source_order_id: OrderId::new(9),
            },
            "renew (order 9)",
        ),
        (
            Action::Reapply {
                source_order_id: OrderId::new(10),
                product_code: "digicert-free-1-free".into(),
            },
            "reapply (digicert-free-1-free, for order 10)",
        ),
        (Action::Blocked, "blocked"),
    ];
    for (action, words) in cases {
        assert_eq!(action.to_string(), words);
    }
}

/// A look ahead that answers every install with `install` and refuses every paid
/// call with `refuse`, recording what it was asked.
struct Ahead {
    install: chain::Installable,
    refuse: Option<&'static str>,
    installs: Vec<OrderId>,
    paid: Vec<Action>,
}

impl Ahead {
    fn new(install: chain::Installable) -> Ahead {
        Ahead {
            install,
            refuse: None,
            installs: vec![],
            paid: vec![],
        }
    }
}

impl chain::Lookahead for Ahead {
    fn install(&mut self, order: OrderId) -> chain::Installable {
        self.installs.push(order);
        self.install.clone()
    }
    fn paid(&mut self, action: &Action, _: &Journal) -> Result<(), String> {
        self.paid.push(action.clone());
        self.refuse.map_or(Ok(()), |r| Err(r.to_owned()))
    }
}

fn chain_of(
    orders: &[CertificateOrder],
    j: &Journal,
    d: Option<&CertInfo>,
    reload: &[String],
    look: &mut Ahead,
) -> chain::Chain {
    chain::chain(
        &input(orders, j, d, false, RenewalMode::Renew),
        reload,
        look,
    )
}

fn actions(c: &chain::Chain) -> Vec<String> {
    c.steps.iter().map(|p| p.action.to_string()).collect()
}

#[test]
fn a_first_run_installs_then_renews_what_is_due() {
    let orders = vec![order(1, OrderStatus::Willexpired, Some(20))];
    let mut look = Ahead::new(chain::Installable::Yes(disk(20)));
    let c = chain_of(&orders, &Journal::default(), None, &[], &mut look);
    assert_eq!(actions(&c), ["install (order 1)", "renew (order 1)"]);
    assert!(!c.blocked() && c.failure.is_none());
    assert_eq!(look.installs, [OrderId::new(1)]);
    assert_eq!(
        look.paid.len(),
        1,
        "the guard is asked before the paid call"
    );
    assert!(
        c.reasons().contains("no certificate on disk") && c.reasons().contains("WILLEXPIRED"),
        "{}",
        c.reasons()
    );
    // Not due: the install only, then its reload when hooks are configured.
    let calm = vec![order(1, OrderStatus::Issued, Some(200))];
    let mut look = Ahead::new(chain::Installable::Yes(disk(200)));
    let c = chain_of(&calm, &Journal::default(), None, &[], &mut look);
    assert_eq!(actions(&c), ["install (order 1)"]);
    let c = chain_of(
        &calm,
        &Journal::default(),
        None,
        &["nginx".into()],
        &mut look,
    );
    assert_eq!(actions(&c), ["install (order 1)", "reload"]);
    assert!(look.paid.is_empty(), "nothing paid when nothing is due");
}

#[test]
fn an_order_renewed_with_a_key_from_elsewhere_blocks() {
    let orders = vec![
        order(1, OrderStatus::Willexpired, Some(20)),
        order(2, OrderStatus::Issued, Some(365)),
    ];
    let mut look = Ahead::new(chain::Installable::ForeignKey);
    let (idle, d20) = (Journal::default(), disk(20));
    let c = chain_of(&orders, &idle, Some(&d20), &[], &mut look);
    assert_eq!(actions(&c), ["install (order 2)", "blocked"]);
    assert!(c.blocked());
    assert!(
        c.reasons().contains("private key is not available here"),
        "{}",
        c.reasons()
    );
    assert!(look.paid.is_empty(), "no paid call past a block");
}

#[test]
fn the_quota_guard_and_a_failing_install_end_the_chain_as_the_pass_would() {
    let orders = vec![order(1, OrderStatus::Willexpired, Some(20))];
    let mut look = Ahead::new(chain::Installable::Yes(disk(20)));
    look.refuse = Some("no units left in plan p");
    let (idle, d20) = (Journal::default(), disk(20));
    let c = chain_of(&orders, &idle, Some(&d20), &[], &mut look);
    assert_eq!(actions(&c), ["renew (order 1)", "blocked"]);
    assert!(c.blocked());
    assert!(c.reasons().ends_with("then: no units left in plan p"));
    // An install that would fail ends with the failure, not a renewal.
    let mut look = Ahead::new(chain::Installable::Fails("order 1 not issued".into()));
    let c = chain_of(&orders, &Journal::default(), None, &[], &mut look);
    assert_eq!(actions(&c), ["install (order 1)"]);
    assert_eq!(c.failure.as_deref(), Some("order 1 not issued"));
    assert!(!c.blocked());
    // A journal whose key is ready makes the paid call next: the guard is asked;
    // one following an order is not.
    for (phase, asked) in [(PhaseName::KeyReady, 1), (PhaseName::OrderCreated, 0)] {
        let j = Journal {
            phase: Phase::example(phase, OrderId::new(9)),
            ..Default::default()
        };
        let mut look = Ahead::new(chain::Installable::ForeignKey);
        let c = chain_of(&orders, &j, Some(&disk(20)), &[], &mut look);
        assert_eq!(actions(&c), [format!("resume ({phase})")]);
        assert_eq!(look.paid.len(), asked, "{phase}");
    }
}

#[test]
fn a_willexpired_order_older_than_the_installed_certificate_is_not_due() {
    // The renewal's new order is missing from this listing (a listing lag, or an
    // entry left out as a V2.0 instance) while its certificate is installed: the
    // source order's WILLEXPIRED speaks of the old certificate and must not pay again.
    let source = order(1, OrderStatus::Willexpired, Some(20));
    let p = run(
        std::slice::from_ref(&source),
        &Journal::new("www"),
        Some(&disk(365)),
        false,
    );
    assert_eq!(p.action, Action::Nothing, "{p:?}");
    // The same order with its own certificate installed is due, as before.
    let p = run(&[source], &Journal::new("www"), Some(&disk(20)), false);
    assert!(matches!(p.action, Action::Renew { .. }), "{p:?}");
}

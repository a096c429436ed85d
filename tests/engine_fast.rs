//! The engine in process, against a scripted fake CAS and DNS (`renew::ports`),
//! with tokio's clock paused: every step of a renewal (key, paid call, the
//! reconciliation of an unclear call, following pending states, DNS and FILE
//! validation, a pending application, issue, install, the reload hook) and a crash
//! at every crash point, each asserting one paid call and a matching pair. The
//! whole file runs in seconds; tests/engine.rs keeps the same crash matrix over
//! the real HTTP client and simulator, and tests/renew.rs and
//! tests/reliability.rs the SIGKILL campaign of the real binary. The V2.0
//! instance re-issue (same steps, another source) is in `engine_fast/instances.rs`.
//!
//! Needs the `fault-injection` feature (crash points): the crate's
//! dev-dependency on itself turns it on for every `cargo test`.

mod common;
#[path = "engine_fast/fake.rs"]
mod fake;
#[path = "engine_fast/fake_instances.rs"]
mod fake_instances;
#[path = "engine_fast/instances.rs"]
mod instances;
#[path = "engine_fast/world.rs"]
mod world;

use std::collections::VecDeque;
use std::time::Duration;

use cas_renewd::renew::{Outcome, PassOptions};
use common::crash::{CrashWorld, matrix};
use fake::{CREATE, Paid, RENEW, Script};
use world::{Setup, World, run};

fn dns_reapply() -> Setup {
    Setup {
        cert_extra: ", renewal: { mode: reapply }, validation: { method: dns }".into(),
        free: true,
        ..Setup::default()
    }
}

fn unclear(paid: Paid) -> Script {
    Script {
        paid: VecDeque::from([paid]),
        // The documented PAYED sample lists a new order with `"Domain": ""`.
        empty_domain_until_issued: true,
        ..Script::default()
    }
}

#[test]
fn a_renewal_pays_once_follows_the_order_and_installs_a_matching_pair() {
    run(async {
        let w = World::new(Script::default(), Setup::default());
        let started = w.now();
        let r = w.ok_pass("first pass").await;
        let c = &r.certs[0];
        assert_eq!(c.outcome, Outcome::Renewed, "{}", r.render(false));
        assert_eq!(c.renew_calls, 1);
        assert_eq!(c.served_matches_disk, None, "no served check configured");
        assert_eq!(w.cas.calls(RENEW), 1);
        // Two `process` answers, each followed after a poll interval of paused time.
        assert!(w.cas.calls("DescribeCertificateState") >= 4);
        assert!((w.now() - started).num_seconds() >= 20, "the polls waited");
        w.assert_renewed("renewal");
        let again = w.ok_pass("second pass").await;
        assert_eq!(again.certs[0].outcome, Outcome::Unchanged);
        assert_eq!(w.cas.calls(RENEW), 1, "nothing is paid twice");
    });
}

#[test]
fn an_order_still_pending_when_the_budget_ends_is_followed_on_the_next_pass() {
    run(async {
        let script = Script {
            polls_before_issued: 6,
            ..Script::default()
        };
        let w = World::new(script, Setup::default());
        let budget = PassOptions {
            follow_budget: Some(Duration::from_secs(25)),
            ..PassOptions::default()
        };
        let r = w.pass(budget).await.expect("a pass");
        assert_eq!(r.certs[0].outcome, Outcome::Waiting, "{}", r.render(false));
        assert!(w.journal().contains("\"phase\": \"order-created\""));
        let r = w.ok_pass("next pass").await;
        assert_eq!(r.certs[0].outcome, Outcome::Renewed, "{}", r.render(false));
        assert_eq!(w.cas.calls(RENEW), 1);
        w.assert_renewed("resumed");
    });
}

#[test]
fn an_unclear_paid_call_whose_order_shows_is_followed_without_paying_again() {
    run(async {
        let w = World::new(unclear(Paid::Unclear(1)), Setup::default());
        let r = w.ok_pass("unclear, one order").await;
        assert_eq!(r.certs[0].outcome, Outcome::Renewed, "{}", r.render(false));
        assert_eq!(w.cas.calls(RENEW), 1);
        w.assert_renewed("reconciled");
    });
}

#[test]
fn an_unclear_paid_call_whose_order_also_shows_as_an_instance_is_adopted_not_paid_again() {
    run(async {
        let script = Script {
            renewals_in_instances: true,
            ..unclear(Paid::Unclear(1))
        };
        let w = World::new(script, Setup::default());
        // Before the fix the reconciliation's listing left the order out: blocked,
        // then paid again after the ceiling.
        let r = w.pass(PassOptions::default()).await.expect("a pass");
        assert_eq!(r.certs[0].outcome, Outcome::Renewed, "{}", r.render(false));
        assert_eq!(
            w.cas.calls(RENEW),
            1,
            "the order is found, never paid again"
        );
        w.assert_renewed("reconciled");
    });
}

#[test]
fn an_unclear_paid_call_without_an_order_blocks_then_pays_again_after_the_ceiling() {
    run(async {
        let w = World::new(unclear(Paid::Unclear(0)), Setup::default());
        let started = w.now();
        let r = w.pass(PassOptions::default()).await.expect("a pass");
        let c = &r.certs[0];
        assert_eq!(c.outcome, Outcome::Blocked, "{}", r.render(false));
        assert!(c.message.contains("unclear outcome"), "{}", c.message);
        // The grace (twice the poll interval) passed on the paused clock.
        assert!((w.now() - started).num_seconds() >= 20);
        assert_eq!(w.cas.calls(RENEW), 1);
        let r = w.pass(PassOptions::default()).await.expect("a pass");
        assert_eq!(r.certs[0].outcome, Outcome::Blocked);
        assert_eq!(w.cas.calls(RENEW), 1, "not paid again before the ceiling");
        // renewal.unclear_retry_after is 6h.
        tokio::time::advance(Duration::from_secs(6 * 3600)).await;
        let r = w.ok_pass("after the ceiling").await;
        assert_eq!(r.certs[0].outcome, Outcome::Renewed, "{}", r.render(false));
        assert_eq!(w.cas.calls(RENEW), 2, "paid again once, after the ceiling");
        w.assert_renewed("paid again");
    });
}

#[test]
fn an_unclear_paid_call_with_several_candidate_orders_blocks_without_paying() {
    run(async {
        let w = World::new(unclear(Paid::Unclear(2)), Setup::default());
        for label in ["first pass", "second pass"] {
            let r = w.pass(PassOptions::default()).await.expect("a pass");
            let c = &r.certs[0];
            assert_eq!(c.outcome, Outcome::Blocked, "{label}: {}", r.render(false));
            assert!(
                c.message.contains("all look like its result"),
                "{label}: {}",
                c.message
            );
        }
        assert_eq!(w.cas.calls(RENEW), 1);
        // Still the source's certificate (installed first), not a guess.
        let (days, matches) = w.installed().expect("the source's pair");
        assert!(matches && days < 30, "{days} days");
    });
}

#[test]
fn dns_validation_publishes_the_record_and_removes_it_once_issued() {
    run(async {
        let w = World::new(Script::default(), dns_reapply());
        let r = w.ok_pass("reapply with DNS").await;
        assert_eq!(r.certs[0].outcome, Outcome::Renewed, "{}", r.render(false));
        assert_eq!(w.cas.calls(CREATE), 1);
        assert_eq!(w.cas.calls("DescribePackageState"), 1);
        assert_eq!(w.dns.calls("AddDomainRecord"), 1);
        assert_eq!(w.dns.calls("DeleteDomainRecord"), 1);
        assert_eq!(w.dns.len(), 0, "the validation record is gone");
        w.assert_renewed("DNS validation");
    });
}

#[test]
fn an_order_never_issued_times_out_on_the_paused_clock_and_its_record_is_removed() {
    run(async {
        let script = Script {
            polls_before_issued: u32::MAX,
            ..Script::default()
        };
        let w = World::new(script, dns_reapply());
        let started = w.now();
        let r = w.pass(PassOptions::default()).await.expect("a pass");
        let c = &r.certs[0];
        assert_eq!(c.outcome, Outcome::Failed, "{}", r.render(false));
        assert!(c.message.contains("not issued after 1h"), "{}", c.message);
        // renewal.issuance_timeout is 1h, measured by the engine's clock.
        assert!((w.now() - started).num_minutes() >= 60);
        assert_eq!(w.dns.calls("AddDomainRecord"), 1);
        assert_eq!(w.dns.len(), 0, "the validation record is removed");
        assert!(
            w.journal().contains("\"phase\": \"order-created\""),
            "followed again later"
        );
        assert_eq!(w.cas.calls(CREATE), 1);
    });
}

#[test]
fn file_validation_writes_the_file_and_removes_it_once_issued() {
    run(async {
        let setup = Setup {
            cert_extra:
                ", renewal: { mode: reapply }, validation: { method: file, webroot: DIR/www }"
                    .into(),
            free: true,
            ..Setup::default()
        };
        let w = World::new(Script::default(), setup);
        let r = w.ok_pass("reapply with FILE").await;
        assert_eq!(r.certs[0].outcome, Outcome::Renewed, "{}", r.render(false));
        assert_eq!(w.cas.calls(CREATE), 1);
        assert_eq!(w.dns.calls("AddDomainRecord"), 0);
        let file = w
            .dir
            .path()
            .join("www/.well-known/pki-validation/fileauth.txt");
        assert!(!file.exists(), "the validation file is gone");
        w.assert_renewed("FILE validation");
    });
}

#[test]
fn a_renewal_left_payed_gets_its_application_submitted_once() {
    run(async {
        let script = Script {
            needs_application: true,
            ..Script::default()
        };
        let w = World::new(script, Setup::default());
        let r = w.ok_pass("pending application").await;
        assert_eq!(r.certs[0].outcome, Outcome::Renewed, "{}", r.render(false));
        assert_eq!(w.cas.calls(RENEW), 1);
        assert_eq!(w.cas.calls("UpdateInstance"), 1);
        assert_eq!(w.cas.calls("ApplyCertificate"), 1);
        w.assert_renewed("application");
    });
}

#[test]
fn the_reload_hook_runs_once_per_pass_and_leaves_the_journal_idle() {
    run(async {
        let setup = Setup {
            hook: true,
            ..Setup::default()
        };
        let w = World::new(Script::default(), setup);
        let r = w.ok_pass("install and renew").await;
        assert_eq!(r.hooks.len(), 1, "{}", r.render(false));
        assert!(r.hooks[0].ok);
        assert_eq!(w.reloads(), 1, "one reload for the install and the renewal");
        w.assert_renewed("reloaded");
        w.ok_pass("nothing to do").await;
        assert_eq!(w.reloads(), 1, "no reload without an install");
    });
}

/// One kind of renewal the crash matrix runs.
struct Case {
    name: &'static str,
    script: fn() -> Script,
    setup: fn() -> Setup,
    paid_action: &'static str,
}

fn with_hook(mut s: Setup) -> Setup {
    s.hook = true;
    s
}

const CASES: [Case; 3] = [
    Case {
        name: "renew",
        script: Script::default,
        setup: || with_hook(Setup::default()),
        paid_action: RENEW,
    },
    Case {
        name: "reapply",
        script: Script::default,
        setup: || with_hook(dns_reapply()),
        paid_action: CREATE,
    },
    Case {
        name: "renew-with-application",
        script: || Script {
            needs_application: true,
            ..Script::default()
        },
        setup: || with_hook(Setup::default()),
        paid_action: RENEW,
    },
];

/// Every crash point, in every case that reaches it; each point is reached by at
/// least one case.
#[test]
fn a_crash_at_every_point_resumes_with_one_paid_call_and_a_matching_pair() {
    run(async {
        let cases: Vec<_> = CASES.iter().map(|c| (c.name, c.paid_action)).collect();
        let world = async |i: usize| World::new((CASES[i].script)(), (CASES[i].setup)());
        matrix(&cases, world, |w, label| {
            w.assert_renewed(label);
            assert!(w.reloads() >= 1, "{label}: the reload ran");
        })
        .await;
    });
}

//! V2.0 instances through the same engine as orders, against the fake CAS: the
//! re-issue within the service period, an application made elsewhere adopted,
//! an unclear ApplyCertificate reconciled, CAS's own re-issue installed, an
//! expired service period blocked without a call, a mixed account in one pass,
//! and a crash at every point of a re-issue.

use std::time::Duration;

use cas_renewd::pki::{Key, KeyAlgorithm};
use cas_renewd::renew::{Outcome, PassOptions};
use cas_renewd::store::faults::{CrashPoint, in_process};

use super::fake::{DOMAIN, RENEW, Script};
use super::fake_instances::{Apply, INSTANCE};
use super::world::{Setup, World, run};
use crate::common::crash::CrashWorld;

const DAY: Duration = Duration::from_secs(86_400);

/// The instance actions a test counts, in the order a re-issue makes them.
const ACTIONS: [&str; 5] = [
    "UpdateInstance",
    "ApplyCertificate",
    "GetInstanceDetail",
    "GetUserCertificateDetail",
    "ListInstances",
];

/// An account with one instance for [`DOMAIN`] and no order: its service period
/// ends in `service_days`, its certificate (CAS's key) in `cert_days`.
fn instance_world(setup: Setup, service_days: i64, cert_days: i64, auto: bool) -> World {
    let w = World::new(Script::default(), setup);
    w.cas.drop_orders();
    w.cas
        .instances
        .add(INSTANCE, DOMAIN, service_days, Some(cert_days), auto);
    w
}

fn calls(w: &World) -> String {
    ACTIONS
        .iter()
        .map(|a| format!("{a}={}", w.cas.calls(a)))
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn an_instance_due_is_reissued_once_with_our_key_and_installed() {
    run(async {
        let w = instance_world(Setup::default(), 700, 20, false);
        let r = w.ok_pass("first pass").await;
        let c = &r.certs[0];
        assert_eq!(c.outcome, Outcome::Renewed, "{}", r.render(false));
        println!(
            "calls for the first install and one re-issue: {}",
            calls(&w)
        );
        assert_eq!(w.cas.calls("UpdateInstance"), 1);
        assert_eq!(w.cas.calls("ApplyCertificate"), 1);
        assert_eq!(w.cas.calls(RENEW), 0, "no V1 call for an instance");
        assert_eq!(w.cas.instances.certificates(INSTANCE), 2);
        let (days, matches) = w.installed().expect("installed");
        assert!(matches && days > 80, "the re-issued pair: {days} days");
        let j = w.journal();
        assert!(j.contains("\"phase\": \"idle\""), "{j}");
        assert!(j.contains(INSTANCE), "the journal names the instance: {j}");
        let again = w.ok_pass("second pass").await;
        assert_eq!(again.certs[0].outcome, Outcome::Unchanged);
        assert!(
            again.certs[0].message.contains("service period ends"),
            "{}",
            again.certs[0].message
        );
        assert_eq!(w.cas.calls("ApplyCertificate"), 1, "not applied twice");
    });
}

#[test]
fn an_instance_reissue_publishes_its_dns_validation_and_removes_it() {
    run(async {
        let setup = Setup {
            cert_extra: ", validation: { method: dns }".into(),
            ..Setup::default()
        };
        let w = instance_world(setup, 700, 20, false);
        let r = w.ok_pass("dns").await;
        assert_eq!(r.certs[0].outcome, Outcome::Renewed, "{}", r.render(false));
        assert_eq!(w.dns.calls("AddDomainRecord"), 1);
        assert_eq!(w.dns.len(), 0, "the validation record is removed");
        assert_eq!(w.cas.calls("ApplyCertificate"), 1);
    });
}

#[test]
fn an_application_under_review_made_elsewhere_is_adopted_not_applied_again() {
    run(async {
        let w = instance_world(Setup::default(), 700, 20, false);
        w.cas.instances.start_review(INSTANCE, 2);
        let r = w.ok_pass("adopted").await;
        let c = &r.certs[0];
        // The review's certificate is for a key CAS made (no CSR of ours).
        assert_eq!(c.outcome, Outcome::Installed, "{}", r.render(false));
        assert_eq!(w.cas.calls("ApplyCertificate"), 0);
        assert_eq!(w.cas.calls("UpdateInstance"), 0);
        let (days, matches) = w.installed().expect("installed");
        assert!(matches && days > 80, "{days}");
    });
}

#[test]
fn an_adopted_review_for_a_key_held_elsewhere_is_not_installed_and_says_why() {
    run(async {
        let w = instance_world(Setup::default(), 700, 20, false);
        // Applied for in the console with another host's CSR: CAS holds no key.
        let other = Key::generate(KeyAlgorithm::EcdsaP256).expect("a key");
        let csr = other.csr_pem(DOMAIN, &[DOMAIN.to_owned()]).expect("a CSR");
        w.cas.instances.update(INSTANCE, Some(&csr), None);
        w.cas.instances.start_review(INSTANCE, 1);
        let r = w.pass(PassOptions::default()).await.expect("a pass");
        assert_eq!(r.certs[0].outcome, Outcome::Failed, "{}", r.render(false));
        assert!(
            r.certs[0]
                .message
                .contains(&format!("instance {INSTANCE} was issued for a key")),
            "{}",
            r.certs[0].message
        );
        let j = w.journal();
        assert!(
            j.contains("\"phase\": \"idle\"") && j.contains("\"unusable_orders\": []"),
            "no order is listed for an instance: {j}"
        );
        let r = w.pass(PassOptions::default()).await.expect("a pass");
        let c = &r.certs[0];
        assert_eq!(c.outcome, Outcome::Blocked, "{}", r.render(false));
        assert!(
            c.message.contains("a key this host does not have"),
            "{}",
            c.message
        );
        assert_eq!(w.cas.calls("ApplyCertificate"), 0);
    });
}

#[test]
fn an_unclear_apply_that_was_taken_is_followed_not_repeated() {
    run(async {
        let w = instance_world(Setup::default(), 700, 20, false);
        w.cas.instances.script_apply(&[Apply::UnclearTaken]);
        let r = w.ok_pass("unclear, taken").await;
        assert_eq!(r.certs[0].outcome, Outcome::Renewed, "{}", r.render(false));
        assert_eq!(w.cas.calls("ApplyCertificate"), 1);
        assert_eq!(w.cas.instances.certificates(INSTANCE), 2);
    });
}

/// `renewal.unclear_retry_after` within the world's one-hour issuance timeout,
/// so a second ApplyCertificate may come within one pass.
const RETRY_AFTER: Duration = Duration::from_secs(1800);

fn short_retry(mut w: World) -> World {
    w.cfg.renewal.unclear_retry_after = RETRY_AFTER;
    w
}

#[test]
fn an_unclear_apply_that_was_lost_is_made_again_only_after_the_instance_shows_none() {
    run(async {
        let w = short_retry(instance_world(Setup::default(), 700, 20, false));
        w.cas.instances.script_apply(&[Apply::UnclearLost]);
        let started = w.now();
        let r = w.ok_pass("unclear, lost").await;
        assert_eq!(r.certs[0].outcome, Outcome::Renewed, "{}", r.render(false));
        // GetInstanceDetail showed nothing under review until V1's ceiling for an
        // unclear paid call passed, and only then was the second call made.
        assert_eq!(w.cas.calls("ApplyCertificate"), 2);
        let waited = (w.now() - started).to_std().unwrap_or_default();
        assert!(waited >= RETRY_AFTER, "made again after {waited:?}");
        assert!(w.cas.calls("GetInstanceDetail") >= 3, "{}", calls(&w));
        assert_eq!(w.cas.instances.certificates(INSTANCE), 2, "one re-issue");
        let (_, matches) = w.installed().expect("installed");
        assert!(matches);
    });
}

#[test]
fn an_apply_made_again_that_fails_too_is_left_to_the_operator_not_repeated() {
    run(async {
        for second in [Apply::UnclearLost, Apply::Refused] {
            let w = short_retry(instance_world(Setup::default(), 700, 20, false));
            w.cas.instances.script_apply(&[Apply::UnclearLost, second]);
            let r = w.pass(PassOptions::default()).await.expect("a pass");
            let c = &r.certs[0];
            assert_eq!(
                c.outcome,
                Outcome::Failed,
                "{second:?}: {}",
                r.render(false)
            );
            assert_eq!(
                w.cas.calls("ApplyCertificate"),
                2,
                "{second:?}: {}",
                calls(&w)
            );
            let j = w.journal();
            assert!(
                j.contains("\"phase\": \"application-requested\"")
                    && j.contains("it is not made again"),
                "{second:?}: {j}"
            );
            let r = w.pass(PassOptions::default()).await.expect("a pass");
            assert_ne!(r.certs[0].outcome, Outcome::Renewed, "{second:?}");
            assert_eq!(w.cas.calls("ApplyCertificate"), 2, "{second:?}: not again");
        }
    });
}

#[test]
fn an_autoreissue_instance_is_never_reissued_and_gets_cas_certificate_installed() {
    run(async {
        let w = instance_world(Setup::default(), 700, 20, true);
        let r = w.ok_pass("first install").await;
        let c = &r.certs[0];
        assert_eq!(c.outcome, Outcome::Installed, "{}", r.render(false));
        assert!(c.message.contains("valid until"), "{}", c.message);
        let again = w.ok_pass("managed").await;
        let c = &again.certs[0];
        assert_eq!(c.outcome, Outcome::Unchanged);
        assert!(
            c.message.contains("managed by CAS (AutoReissue)"),
            "{}",
            c.message
        );
        w.cas.instances.cas_reissue(INSTANCE, 90);
        let r = w.ok_pass("CAS re-issued").await;
        let c = &r.certs[0];
        assert_eq!(c.outcome, Outcome::Installed, "{}", r.render(false));
        assert!(c.plan.reason.contains("managed by CAS (AutoReissue)"));
        let (days, matches) = w.installed().expect("installed");
        assert!(matches && days > 80, "CAS's pair: {days} days");
        assert_eq!(
            (
                w.cas.calls("UpdateInstance"),
                w.cas.calls("ApplyCertificate")
            ),
            (0, 0)
        );
    });
}

#[test]
fn an_instance_whose_service_period_is_over_or_too_short_is_blocked_without_a_call() {
    run(async {
        // Over: the certificate ended with the service period; nothing to install.
        // Too short: the certificate is installed, but a new one would end with the
        // service period two days after it.
        for (label, service_days, calls_allowed) in [("over", -1, 0), ("too short", 22, 1)] {
            let w = instance_world(Setup::default(), service_days, 20, false);
            let r = w.pass(PassOptions::default()).await.expect("a pass");
            let c = &r.certs[0];
            assert_eq!(c.outcome, Outcome::Blocked, "{label}: {}", r.render(false));
            assert!(
                c.message
                    .contains(&format!("buy a renewal of instance {INSTANCE}")),
                "{label}: {}",
                c.message
            );
            for a in &ACTIONS[..3] {
                assert_eq!(w.cas.calls(a), 0, "{label}: no {a}");
            }
            assert_eq!(
                w.cas.calls("GetUserCertificateDetail"),
                calls_allowed,
                "{label}: only the install of the current certificate"
            );
            let again = w.pass(PassOptions::default()).await.expect("a pass");
            assert_eq!(again.certs[0].outcome, Outcome::Blocked, "{label}");
            assert_eq!(w.cas.calls("ApplyCertificate"), 0, "{label}");
        }
    });
}

#[test]
fn a_mixed_account_renews_an_order_and_reissues_an_instance_in_one_pass() {
    run(async {
        let mut w = World::new(Script::default(), Setup::default());
        w.cas
            .instances
            .add(INSTANCE, "api.example.com", 700, Some(20), false);
        let mut api = w.cfg.certificates[0].clone();
        api.name = "api".into();
        api.domain = "api.example.com".into();
        api.output.dir = w.dir.path().join("out/api");
        w.cfg.certificates.push(api);
        let r = w.ok_pass("mixed").await;
        let outcomes: Vec<_> = r
            .certs
            .iter()
            .map(|c| (c.name.as_str(), c.outcome))
            .collect();
        assert_eq!(
            outcomes,
            [("www", Outcome::Renewed), ("api", Outcome::Renewed)],
            "{}",
            r.render(false)
        );
        assert_eq!(w.cas.calls(RENEW), 1);
        assert_eq!(w.cas.calls("ApplyCertificate"), 1);
        assert_eq!(w.cas.calls("ListInstances"), 1);
        assert_eq!(w.cas.calls("ListUserCertificateOrder"), 1);
    });
}

/// Crashes a re-issue (the instance's first certificate installed before) at
/// `point`, then restarts until the pass succeeds; `None` when the re-issue
/// never reaches the point.
async fn crash_reissue_at(point: CrashPoint) -> Option<World> {
    let w = short_retry(instance_world(
        Setup {
            hook: true,
            ..Setup::default()
        },
        700,
        60,
        false,
    ));
    w.ok_pass("the instance's certificate installed").await;
    tokio::time::advance(31 * DAY).await;
    let label = point.name();
    in_process::arm(Some(point));
    let first = w.pass(PassOptions::default()).await;
    let reached = in_process::armed().is_none();
    in_process::arm(None);
    if !reached {
        let r = first.unwrap_or_else(|e| panic!("{label}: {e}"));
        assert!(r.ok(), "{label}: {}", r.render(false));
        return None;
    }
    // Between the renames of an install the set is mixed until start-up's repair.
    w.repair();
    if let Some((_, matches)) = w.installed() {
        assert!(
            matches,
            "{label}: a pair on disk after the crash and repair"
        );
    }
    let r = w.pass(PassOptions::default()).await.expect("resume");
    assert!(r.ok(), "{label}: resume: {}", r.render(false));
    Some(w)
}

#[test]
fn a_crash_at_every_point_of_a_reissue_resumes_with_one_application_and_a_matching_pair() {
    run(async {
        let mut reached = Vec::new();
        for point in CrashPoint::ALL {
            let label = point.name();
            let Some(w) = crash_reissue_at(point).await else {
                continue;
            };
            reached.push(label);
            assert_eq!(w.cas.calls("ApplyCertificate"), 1, "{label}: {}", calls(&w));
            assert_eq!(w.cas.instances.certificates(INSTANCE), 2, "{label}");
            let (days, matches) = w.installed().expect("installed");
            assert!(matches && days > 50, "{label}: the new pair ({days} days)");
            let j = w.journal();
            assert!(
                j.contains("\"phase\": \"idle\"") && j.contains("\"reload_pending\": []"),
                "{label}: {j}"
            );
            // Once for the first install, at least once for the re-issue's.
            assert!(w.reloads() >= 2, "{label}: the hook ran ({})", w.reloads());
        }
        println!(
            "instance re-issue: crashed and resumed at {} points: {reached:?}",
            reached.len()
        );
        for must in [
            CrashPoint::AfterKeyReady,
            CrashPoint::AfterApplicationRequested,
            CrashPoint::AfterApplicationSubmitted,
            CrashPoint::AfterIssued,
            CrashPoint::BeforeInstall,
            CrashPoint::AfterInstalled,
        ] {
            assert!(
                reached.contains(&must.name()),
                "{} not reached",
                must.name()
            );
        }
    });
}

#[test]
fn a_second_apply_killed_before_its_answer_is_journaled_is_never_made_a_third_time() {
    run(async {
        let w = short_retry(instance_world(Setup::default(), 700, 20, false));
        w.cas
            .instances
            .script_apply(&[Apply::UnclearLost, Apply::LostThenKilled]);
        // The killed certificate's task ends the pass without a report of it.
        let first = w.pass(PassOptions::default()).await;
        assert!(
            first.as_ref().is_ok_and(|r| r.certs.is_empty()),
            "killed after the second call: {first:?}"
        );
        assert_eq!(w.cas.calls("ApplyCertificate"), 2, "{}", calls(&w));
        for restart in 0..3 {
            w.repair();
            let r = w.pass(PassOptions::default()).await.expect("a pass");
            assert_ne!(r.certs[0].outcome, Outcome::Renewed, "{restart}");
            assert_eq!(
                w.cas.calls("ApplyCertificate"),
                2,
                "restart {restart}: {}",
                calls(&w)
            );
            tokio::time::advance(DAY).await;
        }
        let j = w.journal();
        assert!(
            j.contains("\"reapplied_at\"") && j.contains("it is not made again"),
            "{j}"
        );
    });
}

#[test]
fn an_application_cas_takes_up_late_is_not_made_again_during_the_lag() {
    run(async {
        let w = instance_world(Setup::default(), 700, 20, false);
        // Taken, but the answer lost, and the instance shows as before the call
        // for five GetInstanceDetail reads.
        w.cas.instances.script_apply(&[Apply::UnclearTaken]);
        w.cas.instances.lag_reviews(5);
        let r = w.ok_pass("taken late").await;
        assert_eq!(r.certs[0].outcome, Outcome::Renewed, "{}", r.render(false));
        assert_eq!(w.cas.calls("ApplyCertificate"), 1, "{}", calls(&w));
        assert_eq!(w.cas.instances.certificates(INSTANCE), 2);
    });
}

#[test]
fn an_unclear_apply_not_taken_waits_for_the_ceiling_and_says_when() {
    run(async {
        // The world's ceiling (6h) is beyond its issuance timeout (1h).
        let w = instance_world(Setup::default(), 700, 20, false);
        w.cas.instances.script_apply(&[Apply::UnclearLost]);
        let r = w.pass(PassOptions::default()).await.expect("a pass");
        assert_ne!(r.certs[0].outcome, Outcome::Renewed, "{}", r.render(false));
        assert_eq!(w.cas.calls("ApplyCertificate"), 1, "{}", calls(&w));
        let j = w.journal();
        assert!(
            j.contains("applies again by itself at") && j.contains("unclear_retry_after"),
            "{j}"
        );
    });
}

#[test]
fn a_reissue_listed_without_certificate_id_waits_for_the_new_certificate() {
    run(async {
        let w = instance_world(Setup::default(), 700, 20, false);
        // The current certificate is only in GetInstanceDetail: it must not count
        // as the re-issue's new one when the first reads after the application do
        // not show it under review yet.
        w.cas.instances.list_without_certificate_id();
        w.cas.instances.lag_reviews(2);
        let r = w.ok_pass("no CertificateId listed").await;
        assert_eq!(r.certs[0].outcome, Outcome::Renewed, "{}", r.render(false));
        assert_eq!(w.cas.calls("ApplyCertificate"), 1, "{}", calls(&w));
        assert_eq!(w.cas.instances.certificates(INSTANCE), 2);
        let (days, matches) = w.installed().expect("installed");
        assert!(matches && days > 80, "the re-issued pair: {days} days");
    });
}

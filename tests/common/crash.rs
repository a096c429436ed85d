//! The in-process crash matrix, shared by the engine over HTTP (tests/engine.rs)
//! and over the fake ports (tests/engine_fast.rs): a crash at every crash point
//! in every case that reaches it, then fresh engines that resume from the state
//! directory with one paid call and a matching pair installed.

use cas_renewd::renew::{EngineError, Outcome, PassOptions, PassReport};
use cas_renewd::store::faults::{CrashPoint, SimulatedCrash, in_process};
use tokio::task::JoinError;

/// One test world a crash case runs in.
pub trait CrashWorld {
    /// One pass of a fresh engine; a simulated crash becomes `Err("crashed at …")`.
    async fn pass(&self, opts: PassOptions) -> Result<PassReport, String>;
    /// What the binary's start-up does before any pass.
    fn repair(&self);
    /// How many times the CAS action `action` was called.
    fn calls(&self, action: &str) -> u64;
    /// Days left on the installed certificate, and whether the key matches it.
    fn installed(&self) -> Option<(i64, bool)>;
    /// The certificate's journal as its file reads.
    fn journal(&self) -> String;
}

/// The result of a pass run as its own task: a simulated crash that unwound out
/// of it becomes an error naming the point; any other panic goes on.
pub fn caught(
    joined: Result<Result<PassReport, EngineError>, JoinError>,
) -> Result<PassReport, String> {
    match joined {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(e) if e.is_panic() => {
            let payload = e.into_panic();
            match payload.downcast_ref::<SimulatedCrash>() {
                Some(c) => Err(format!("crashed at {}", c.0.name())),
                None => std::panic::resume_unwind(payload),
            }
        }
        Err(e) => Err(e.to_string()),
    }
}

/// How one crash run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ran {
    /// The case never reaches the point (its one pass succeeded).
    NotReached,
    /// Crashed after the application call: stopped for the operator, as it must.
    StoppedForOperator,
    /// Crashed and resumed to the renewed pair.
    Resumed,
}

/// Crashes world `w` (case `name`, whose paid call is `paid_action`) at `point`
/// and resumes.
pub async fn crash_and_resume<W: CrashWorld>(
    w: &W,
    name: &str,
    paid_action: &str,
    point: CrashPoint,
) -> Ran {
    let label = format!("{name} at {}", point.name());
    in_process::arm(Some(point));
    let first = w.pass(PassOptions::default()).await;
    let reached = in_process::armed().is_none();
    in_process::arm(None);
    if !reached {
        let r = first.unwrap_or_else(|e| panic!("{label}: pass without the point: {e}"));
        assert!(r.ok(), "{label}: {}", r.render(false));
        return Ran::NotReached;
    }
    if let Some((_, matches)) = w.installed() {
        assert!(
            matches,
            "{label}: whatever is on disk after the crash is a pair"
        );
    }
    w.repair();
    if point == CrashPoint::AfterRenewRequested {
        // The intent is journaled but the call never left: an unclear outcome. No
        // order shows, so nothing is paid until the operator forces it.
        let r = w.pass(PassOptions::default()).await.expect("resume");
        assert_eq!(
            r.certs[0].outcome,
            Outcome::Blocked,
            "{label}: {}",
            r.render(false)
        );
        assert!(r.certs[0].message.contains("unclear outcome"), "{label}");
        assert_eq!(w.calls(paid_action), 0, "{label}: not paid");
        let forced = PassOptions {
            force: true,
            only: Some("www".into()),
            ..PassOptions::default()
        };
        let r = w.pass(forced).await.expect("forced");
        assert!(r.ok(), "{label}: forced: {}", r.render(false));
    } else if point == CrashPoint::AfterApplicationRequested {
        // Whether ApplyCertificate left is unknown, and it is never made twice:
        // the order stays payed and the operator is told to submit it in the
        // console. Nothing more is paid or applied for.
        let r = w.pass(PassOptions::default()).await.expect("resume");
        assert_eq!(
            r.certs[0].outcome,
            Outcome::Failed,
            "{label}: {}",
            r.render(false)
        );
        let j = w.journal();
        assert!(
            j.contains("\"phase\": \"application-requested\"") && j.contains("not submitted twice"),
            "{label}: {j}"
        );
        assert_eq!(
            (w.calls(paid_action), w.calls("ApplyCertificate")),
            (1, 0),
            "{label}: one paid call, no application after the crash"
        );
        return Ran::StoppedForOperator;
    } else {
        let r = w.pass(PassOptions::default()).await.expect("resume");
        assert!(r.ok(), "{label}: resume: {}", r.render(false));
    }
    let (days, matches) = w
        .installed()
        .unwrap_or_else(|| panic!("{label}: nothing installed"));
    assert!(matches, "{label}: key matches certificate");
    // The source expires in 20 days; a new certificate (a year, or 90 days for a
    // free one) is far past it.
    assert!(
        days > 60,
        "{label}: the new certificate is installed ({days} days)"
    );
    assert_eq!(w.calls(paid_action), 1, "{label}: exactly one paid call");
    for step in ["UpdateInstance", "ApplyCertificate"] {
        assert!(w.calls(step) <= 1, "{label}: {step} at most once");
    }
    let j = w.journal();
    assert!(
        j.contains("\"phase\": \"idle\"") && j.contains("\"reload_pending\": []"),
        "{label}: {j}"
    );
    Ran::Resumed
}

/// Every crash point in every case (`(name, paid action)`) that reaches it, each
/// case in a fresh world from `world(i)`; each point must be reached by one case
/// at least. `resumed` checks a world after a run that resumed. Prints the figures.
pub async fn matrix<W: CrashWorld>(
    cases: &[(&'static str, &'static str)],
    world: impl AsyncFn(usize) -> W,
    resumed: impl Fn(&W, &str),
) {
    let started = std::time::Instant::now();
    let mut runs = 0;
    for point in CrashPoint::ALL {
        let mut reached_by = Vec::new();
        for (i, (name, paid_action)) in cases.iter().enumerate() {
            let w = world(i).await;
            let ran = crash_and_resume(&w, name, paid_action, point).await;
            if ran == Ran::Resumed {
                resumed(&w, &format!("{name} at {}", point.name()));
            }
            if ran != Ran::NotReached {
                reached_by.push(*name);
                runs += 1;
            }
        }
        assert!(
            !reached_by.is_empty(),
            "{}: no case reaches it",
            point.name()
        );
        println!("{}: crashed and resumed in {reached_by:?}", point.name());
    }
    println!(
        "figures: {runs} crash-and-resume runs over {} crash points in {:.2} s",
        CrashPoint::ALL.len(),
        started.elapsed().as_secs_f64()
    );
}

//! Fault injection for the crash and disk-full tests and the slow-disk benchmark:
//! named crash points, failing writes and slow fsyncs. The switches that arm them
//! (`CAS_RENEWD_CRASH_AT`, `CAS_RENEWD_FAULT_WRITE`, `CAS_RENEWD_FAULT_FSYNC_MS`)
//! exist only with the `fault-injection` cargo feature,
//! so the shipped binary cannot be made to kill itself or fail its writes.

use std::path::Path;

/// A place where a crash must lose nothing: every journal transition and every
/// rename of an install.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    AfterKeyReady,
    AfterRenewRequested,
    AfterRenewCall,
    AfterOrderCreated,
    AfterApplicationRequested,
    AfterApplicationSubmitted,
    AfterIssued,
    BeforeInstall,
    BetweenInstallRenames,
    AfterInstallFiles,
    AfterInstalled,
    AfterReload,
}

impl CrashPoint {
    pub const ALL: [CrashPoint; 12] = [
        CrashPoint::AfterKeyReady,
        CrashPoint::AfterRenewRequested,
        CrashPoint::AfterRenewCall,
        CrashPoint::AfterOrderCreated,
        CrashPoint::AfterApplicationRequested,
        CrashPoint::AfterApplicationSubmitted,
        CrashPoint::AfterIssued,
        CrashPoint::BeforeInstall,
        CrashPoint::BetweenInstallRenames,
        CrashPoint::AfterInstallFiles,
        CrashPoint::AfterInstalled,
        CrashPoint::AfterReload,
    ];

    /// The name the test harnesses pass in `CAS_RENEWD_CRASH_AT`.
    pub fn name(self) -> &'static str {
        match self {
            CrashPoint::AfterKeyReady => "after-key-ready",
            CrashPoint::AfterRenewRequested => "after-renew-requested",
            CrashPoint::AfterRenewCall => "after-renew-call",
            CrashPoint::AfterOrderCreated => "after-order-created",
            CrashPoint::AfterApplicationRequested => "after-application-requested",
            CrashPoint::AfterApplicationSubmitted => "after-application-submitted",
            CrashPoint::AfterIssued => "after-issued",
            CrashPoint::BeforeInstall => "before-install",
            CrashPoint::BetweenInstallRenames => "between-install-renames",
            CrashPoint::AfterInstallFiles => "after-install-files",
            CrashPoint::AfterInstalled => "after-installed",
            CrashPoint::AfterReload => "after-reload",
        }
    }
}

/// Kills the process with SIGKILL when `CAS_RENEWD_CRASH_AT` names `point`: the
/// same death as a power cut or the OOM killer (no destructor, no flush).
#[cfg(feature = "fault-injection")]
pub fn crash_point(point: CrashPoint) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let name = point.name();
    if in_process::take(point) {
        // An in-process test's crash: unwinding stops the step here, like a kill
        // would, and the test resumes with a fresh engine from what is on disk.
        std::panic::panic_any(SimulatedCrash(point));
    }
    if AT
        .get_or_init(|| std::env::var("CAS_RENEWD_CRASH_AT").ok())
        .as_deref()
        == Some(name)
    {
        eprintln!("cas-renewd: crash point {name} reached (CAS_RENEWD_CRASH_AT); SIGKILL");
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &std::process::id().to_string()])
            .status();
        std::process::abort();
    }
}

/// The payload of the panic an in-process crash raises.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimulatedCrash(pub CrashPoint);

/// Crash points armed by in-process tests (one at a time: the engine tests run
/// their crashes one after another).
#[cfg(feature = "fault-injection")]
pub mod in_process {
    use std::sync::Mutex;

    use super::CrashPoint;

    static ARMED: Mutex<Option<CrashPoint>> = Mutex::new(None);

    /// Makes the next time `point` is reached unwind (see [`super::SimulatedCrash`]).
    pub fn arm(point: Option<CrashPoint>) {
        *ARMED.lock().unwrap_or_else(|e| e.into_inner()) = point;
    }

    /// Whether a crash armed at `point` has not fired yet.
    pub fn armed() -> Option<CrashPoint> {
        *ARMED.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fires (disarms and says so) when `point` is the armed one.
    pub(super) fn take(point: CrashPoint) -> bool {
        let mut armed = ARMED.lock().unwrap_or_else(|e| e.into_inner());
        if *armed == Some(point) {
            *armed = None;
            return true;
        }
        false
    }
}

/// Without the `fault-injection` feature a crash point is nothing.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn crash_point(_point: CrashPoint) {}

/// Whether a write to `path` must fail as on a full disk:
/// `CAS_RENEWD_FAULT_WRITE=<text>` fails every write to a path containing `<text>`.
#[cfg(feature = "fault-injection")]
pub fn write_fails(path: &Path) -> bool {
    static FAULT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    FAULT
        .get_or_init(|| {
            std::env::var("CAS_RENEWD_FAULT_WRITE")
                .ok()
                .filter(|s| !s.is_empty())
        })
        .as_deref()
        .is_some_and(|pattern| path.to_string_lossy().contains(pattern))
}

/// Without the `fault-injection` feature every write is attempted.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn write_fails(_path: &Path) -> bool {
    false
}

/// Makes every fsync of a file or directory take this much longer, as on a slow or
/// busy disk: `CAS_RENEWD_FAULT_FSYNC_MS=<milliseconds>` (the benchmark's slow-disk run).
#[cfg(feature = "fault-injection")]
pub fn slow_fsync() {
    static DELAY: std::sync::OnceLock<Option<std::time::Duration>> = std::sync::OnceLock::new();
    let delay = DELAY.get_or_init(|| {
        std::env::var("CAS_RENEWD_FAULT_FSYNC_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(std::time::Duration::from_millis)
    });
    if let Some(d) = delay {
        std::thread::sleep(*d);
    }
}

/// Without the `fault-injection` feature an fsync takes what the disk takes.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn slow_fsync() {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_point_names_are_distinct_and_kebab_case() {
        let mut names: Vec<&str> = CrashPoint::ALL.iter().map(|p| p.name()).collect();
        assert!(
            names
                .iter()
                .all(|n| n.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'))
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CrashPoint::ALL.len());
    }
}

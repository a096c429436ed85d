//! When passes start: the cron job (tokio-cron-scheduler), the jitter before a
//! scheduled pass, the follow-up timer for orders still in progress, and the
//! backoff retry after a failed pass. Every start request reaches the daemon's
//! loop as a [`Trigger`] on one channel.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_cron_scheduler::{Job, JobScheduler, JobSchedulerError};
use tracing::info;

use crate::config;

/// Why a pass starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    Start,
    Cron,
    Signal,
    FollowUp,
    /// The backoff retry of a failed or incomplete pass.
    Retry,
    /// Another host of the fleet published an issued certificate (or the fleet's
    /// watch started again after a failure).
    Fleet,
}

#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("scheduler: {0}")]
    Scheduler(#[source] JobSchedulerError),
    #[error("scheduler: {cron:?}: {source}")]
    Job {
        cron: String,
        #[source]
        source: JobSchedulerError,
    },
}

/// The running scheduler with the one cron job that sends [`Trigger::Cron`].
pub(super) struct Schedule {
    sched: JobScheduler,
    job: uuid::Uuid,
    tx: mpsc::Sender<Trigger>,
    /// The one pending backoff retry; a new one replaces it, a good pass cancels it.
    retry: Option<JoinHandle<()>>,
}

impl Schedule {
    /// Starts the scheduler with a job for `cron`; returns it with the receiving
    /// end of the trigger channel.
    pub(super) async fn start(
        cron: &str,
        jitter: Duration,
    ) -> Result<(Schedule, mpsc::Receiver<Trigger>), ScheduleError> {
        let (tx, rx) = mpsc::channel::<Trigger>(16);
        let sched = JobScheduler::new()
            .await
            .map_err(ScheduleError::Scheduler)?;
        let job = add_job(&sched, cron, tx.clone()).await?;
        sched.start().await.map_err(ScheduleError::Scheduler)?;
        let fires: Vec<String> = config::next_fires(cron, Utc::now(), 3)
            .iter()
            .map(|t| t.to_rfc3339())
            .collect();
        info!(cron = %cron, next = %fires.join(","), jitter = %humantime::format_duration(jitter), "scheduled");
        Ok((
            Schedule {
                sched,
                job,
                tx,
                retry: None,
            },
            rx,
        ))
    }

    /// Swaps the cron job for one on `cron`. On an error no cron job is left until
    /// the next successful replacement.
    pub(super) async fn replace(&mut self, cron: &str) -> Result<(), ScheduleError> {
        // Removing a job that is already gone is harmless.
        let _ = self.sched.remove(&self.job).await;
        self.job = add_job(&self.sched, cron, self.tx.clone()).await?;
        Ok(())
    }

    /// Where other parts of the daemon send triggers (the fleet's watch).
    pub(super) fn sender(&self) -> mpsc::Sender<Trigger> {
        self.tx.clone()
    }

    /// Sends [`Trigger::FollowUp`] after `after`, from a task of its own.
    pub(super) fn follow_up(&self, after: Duration) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Trigger::FollowUp).await;
        });
    }

    /// Sends [`Trigger::Retry`] after `after`, replacing a retry already waiting.
    pub(super) fn retry_after(&mut self, after: Duration) {
        self.cancel_retry();
        let tx = self.tx.clone();
        self.retry = Some(tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Trigger::Retry).await;
        }));
    }

    /// Drops the waiting retry, if any: the cron schedule is back in charge.
    pub(super) fn cancel_retry(&mut self) {
        if let Some(r) = self.retry.take() {
            r.abort();
        }
    }

    pub(super) async fn shutdown(mut self) {
        self.cancel_retry();
        let _ = self.sched.shutdown().await;
    }
}

async fn add_job(
    sched: &JobScheduler,
    cron: &str,
    tx: mpsc::Sender<Trigger>,
) -> Result<uuid::Uuid, ScheduleError> {
    let job = Job::new_async(cron, move |_, _| {
        let tx = tx.clone();
        Box::pin(async move {
            let _ = tx.send(Trigger::Cron).await;
        })
    })
    .map_err(|source| ScheduleError::Job {
        cron: cron.to_owned(),
        source,
    })?;
    sched.add(job).await.map_err(ScheduleError::Scheduler)
}

/// How long a pass waits before it starts: a random part of `jitter` for a
/// scheduled pass or a retry, so that a fleet on one cron line (or failing
/// together through one CAS outage) does not call CAS at the same second; nothing
/// for a pass that someone or something asked for now.
pub(super) fn jitter_wait(trigger: Trigger, jitter: Duration) -> Duration {
    if !matches!(trigger, Trigger::Cron | Trigger::Retry) || jitter.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(rand::rng().random::<f64>() * jitter.as_secs_f64())
}

/// The wait before retrying after `failures` passes in a row failed (1 for the
/// first): `first`, doubled for each further failure, never more than `max`.
pub(super) fn backoff(failures: u32, first: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    first
        .checked_mul(1u32 << doublings)
        .map_or(max, |d| d.min(max))
}

/// When the retry after `failures` failed passes in a row should start, seen at
/// `now`: `None` when the cron job fires first, because that pass is the retry.
pub(super) fn next_retry(
    failures: u32,
    now: DateTime<Utc>,
    next_cron: Option<DateTime<Utc>>,
    first: Duration,
    max: Duration,
) -> Option<DateTime<Utc>> {
    let wait = chrono::Duration::from_std(backoff(failures, first, max)).ok()?;
    let at = now.checked_add_signed(wait)?;
    match next_cron {
        Some(cron) if cron <= at => None,
        _ => Some(at),
    }
}

/// The next time `cron` fires after `now`.
pub(super) fn next_fire(cron: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    config::next_fires(cron, now, 1).first().copied()
}

/// The next time `cron` fires, for the systemd status line.
pub(super) fn next_fire_text(cron: &str) -> String {
    config::next_fires(cron, Utc::now(), 1)
        .first()
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_scheduled_pass_waits_and_never_past_the_jitter() {
        let jitter = Duration::from_secs(60);
        for t in [Trigger::Start, Trigger::Signal, Trigger::FollowUp] {
            assert_eq!(jitter_wait(t, jitter), Duration::ZERO, "{t:?}");
        }
        assert_eq!(jitter_wait(Trigger::Cron, Duration::ZERO), Duration::ZERO);
        let waits: Vec<Duration> = (0..200)
            .map(|_| jitter_wait(Trigger::Cron, jitter))
            .collect();
        assert!(waits.iter().all(|w| *w <= jitter), "{waits:?}");
        // 200 draws from [0, 60 s) that are all equal would mean no jitter at all.
        assert!(waits.iter().any(|w| *w != waits[0]), "{waits:?}");
    }

    #[test]
    fn a_retry_waits_within_the_jitter_too() {
        let jitter = Duration::from_secs(60);
        let waits: Vec<Duration> = (0..200)
            .map(|_| jitter_wait(Trigger::Retry, jitter))
            .collect();
        assert!(waits.iter().all(|w| *w <= jitter), "{waits:?}");
        assert!(waits.iter().any(|w| *w != waits[0]), "{waits:?}");
    }

    const MIN: Duration = Duration::from_secs(60);

    #[test]
    fn the_backoff_doubles_from_its_start_up_to_its_cap() {
        let waits: Vec<u64> = (1..=8)
            .map(|n| backoff(n, 15 * MIN, 240 * MIN).as_secs() / 60)
            .collect();
        assert_eq!(waits, [15, 30, 60, 120, 240, 240, 240, 240]);
        // No overflow however long the failures go on.
        assert_eq!(backoff(u32::MAX, 15 * MIN, 240 * MIN), 240 * MIN);
        assert_eq!(backoff(0, 15 * MIN, 240 * MIN), 15 * MIN);
    }

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().expect("test times are RFC 3339")
    }

    #[test]
    fn a_failed_pass_is_retried_the_same_day_not_at_the_next_cron_time() {
        // The default schedule: daily at 03:17; a pass fails at 03:20.
        let now = at("2026-11-29T03:20:00Z");
        let cron = next_fire("0 17 3 * * *", now);
        assert_eq!(cron, Some(at("2026-11-30T03:17:00Z")));
        let retries: Vec<Option<DateTime<Utc>>> = (1..=3)
            .map(|n| next_retry(n, now, cron, 15 * MIN, 240 * MIN))
            .collect();
        assert_eq!(
            retries,
            [
                Some(at("2026-11-29T03:35:00Z")),
                Some(at("2026-11-29T03:50:00Z")),
                Some(at("2026-11-29T04:20:00Z")),
            ]
        );
    }

    #[test]
    fn the_cron_pass_is_the_retry_when_it_comes_first() {
        let now = at("2026-11-29T03:10:00Z");
        let cron = next_fire("0 17 3 * * *", now);
        assert_eq!(next_retry(1, now, cron, 15 * MIN, 240 * MIN), None);
        // Exactly at the cron time: one pass, not two.
        let now = at("2026-11-29T03:02:00Z");
        assert_eq!(next_retry(1, now, cron, 15 * MIN, 240 * MIN), None);
        // A cron line that never fires again leaves the retry.
        assert_eq!(
            next_retry(1, now, None, 15 * MIN, 240 * MIN),
            Some(at("2026-11-29T03:17:00Z"))
        );
    }

    #[test]
    fn the_status_line_names_the_next_fire_or_a_question_mark() {
        let text = next_fire_text("0 17 3 * * *");
        assert!(text.ends_with(" 03:17 UTC"), "{text}");
        assert_eq!(next_fire_text("not cron"), "?");
    }

    #[tokio::test]
    async fn a_bad_cron_line_is_an_error_that_names_it() {
        let (tx, _rx) = mpsc::channel(1);
        let sched = JobScheduler::new().await.expect("a scheduler starts");
        let err = add_job(&sched, "61 * * * * *", tx)
            .await
            .expect_err("second 61 does not exist");
        assert!(
            matches!(&err, ScheduleError::Job { cron, .. } if cron == "61 * * * * *"),
            "{err:?}"
        );
        assert!(err.to_string().contains("\"61 * * * * *\""), "{err}");
    }
}

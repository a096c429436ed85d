//! When passes start: the cron job (tokio-cron-scheduler), the jitter before a
//! scheduled pass, and the follow-up timer for orders still in progress. Every
//! start request reaches the daemon's loop as a [`Trigger`] on one channel.

use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio::sync::mpsc;
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
        info!(cron = %cron, next = ?fires, jitter = %humantime::format_duration(jitter), "scheduled");
        Ok((Schedule { sched, job, tx }, rx))
    }

    /// Swaps the cron job for one on `cron`. On an error no cron job is left until
    /// the next successful replacement.
    pub(super) async fn replace(&mut self, cron: &str) -> Result<(), ScheduleError> {
        // Removing a job that is already gone is harmless.
        let _ = self.sched.remove(&self.job).await;
        self.job = add_job(&self.sched, cron, self.tx.clone()).await?;
        Ok(())
    }

    /// Sends [`Trigger::FollowUp`] after `after`, from a task of its own.
    pub(super) fn follow_up(&self, after: Duration) {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let _ = tx.send(Trigger::FollowUp).await;
        });
    }

    pub(super) async fn shutdown(mut self) {
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
/// scheduled pass, so that a fleet on one cron line does not call CAS at the same
/// second; nothing for a pass that someone or something asked for now.
pub(super) fn jitter_wait(trigger: Trigger, jitter: Duration) -> Duration {
    if trigger != Trigger::Cron || jitter.is_zero() {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(rand::rng().random::<f64>() * jitter.as_secs_f64())
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

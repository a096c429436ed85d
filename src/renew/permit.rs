//! The pass's concurrency permits: a certificate holds one while it works, and gives
//! it back while it only waits between polls of its order, so waiting orders do not
//! keep other certificates from working.

use std::cell::RefCell;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The semaphore a task's permit came from, and the permit while it holds it.
struct Held {
    sem: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

tokio::task_local! {
    static HELD: RefCell<Held>;
}

/// Runs `work` holding `permit` (taken from `sem`), which
/// [`sleep_without_permit`] inside it may give back for a while.
pub(super) async fn holding<F: Future>(
    sem: Arc<Semaphore>,
    permit: OwnedSemaphorePermit,
    work: F,
) -> F::Output {
    let held = Held {
        sem,
        permit: Some(permit),
    };
    HELD.scope(RefCell::new(held), work).await
}

/// Sleeps `d` without the task's permit, then waits for a permit again; outside
/// [`holding`] it just sleeps.
pub(super) async fn sleep_without_permit(d: Duration) {
    let sem = HELD
        .try_with(|h| {
            let mut h = h.borrow_mut();
            h.permit = None;
            h.sem.clone()
        })
        .ok();
    tokio::time::sleep(d).await;
    if let Some(sem) = sem
        && let Ok(p) = sem.acquire_owned().await
    {
        // The semaphore is never closed; were it, the task would go on without one.
        HELD.with(|h| h.borrow_mut().permit = Some(p));
    }
}

/// Spawns `task(i, item)` for each of `items`, each holding a permit of `sem`
/// (taken before it is spawned, so at most the permits' number of tasks exist
/// besides those lending theirs), and hands each result to `done` as soon as it is
/// joined. A finished task keeps its whole allocation (sized for its future, ~8 KiB
/// for a certificate's, not for its small output) until it is joined: joining only
/// after the last spawn held 10,000 of them at the end of a pass.
pub(super) async fn each_holding<I, F, T>(
    sem: Arc<Semaphore>,
    items: impl IntoIterator<Item = I>,
    mut task: impl FnMut(usize, I) -> F,
    mut done: impl FnMut(T),
) where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    let mut joined = |r: Result<T, tokio::task::JoinError>| match r {
        Ok(x) => done(x),
        Err(e) => tracing::error!(error = %e, "a certificate task panicked"),
    };
    for (i, item) in items.into_iter().enumerate() {
        let permit = sem
            .clone()
            .acquire_owned()
            .await
            .expect("the pass's semaphore is never closed");
        while let Some(r) = tasks.try_join_next() {
            joined(r);
        }
        tasks.spawn(holding(sem.clone(), permit, task(i, item)));
    }
    while let Some(r) = tasks.join_next().await {
        joined(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts the results not yet handed on.
    struct Unjoined(Arc<AtomicUsize>);

    impl Drop for Unjoined {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finished_tasks_are_joined_while_later_ones_are_spawned() {
        let unjoined = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut seen = Vec::new();
        each_holding(
            Arc::new(Semaphore::new(2)),
            0..200,
            |i, _| {
                let (unjoined, most) = (unjoined.clone(), most.clone());
                async move {
                    most.fetch_max(
                        unjoined.fetch_add(1, Ordering::SeqCst) + 1,
                        Ordering::SeqCst,
                    );
                    (i, Unjoined(unjoined))
                }
            },
            |(i, _)| seen.push(i),
        )
        .await;
        seen.sort_unstable();
        assert_eq!(
            seen,
            (0..200).collect::<Vec<_>>(),
            "every result handed on once"
        );
        let most = most.load(Ordering::SeqCst);
        assert!(
            most <= 8,
            "{most} finished tasks waited to be joined (2 permits)"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_task_lends_its_permit_and_takes_it_back() {
        let sem = Arc::new(Semaphore::new(1));
        let permit = sem.clone().acquire_owned().await.expect("open");
        let waiter = tokio::spawn(holding(sem.clone(), permit, async {
            sleep_without_permit(Duration::from_secs(10)).await;
            // Working again: holds the permit until the end of its work.
            tokio::time::sleep(Duration::from_secs(10)).await;
        }));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            sem.available_permits(),
            1,
            "lent while sleeping between polls"
        );
        let other = sem.clone().acquire_owned().await.expect("open");
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(sem.available_permits(), 0);
        drop(other);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(sem.available_permits(), 0, "taken back after the sleep");
        waiter.await.expect("task");
        assert_eq!(sem.available_permits(), 1, "returned at the end");
        // Outside a pass it only sleeps.
        sleep_without_permit(Duration::from_secs(1)).await;
    }
}

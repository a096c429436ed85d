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

#[cfg(test)]
mod tests {
    use super::*;

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

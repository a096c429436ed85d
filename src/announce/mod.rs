//! The engine's observer that tells people: forwards every report to the
//! observer it wraps (the metrics), turns each pass into notification events
//! ([`events_from_report`]) and queues them for `notify`'s background sender,
//! never waiting for it.

mod events;

pub use events::events_from_report;

use std::any::Any;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::cas::api_apply::PackageState;
use crate::notify::{self, ChannelSpec, Event, EventKind};
use crate::renew::{PassObserver, PassReport};
use crate::settings::CertificateConfig;

pub struct Notifying {
    inner: Arc<dyn PassObserver>,
    /// `None` once closed, or when no channel is configured.
    tx: Mutex<Option<mpsc::Sender<Event>>>,
    /// `quota_low` events seen during the pass; sent with the pass's events, when
    /// the certificates' domains are known.
    quota: Mutex<Vec<Event>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Notifying {
    /// Wraps `inner`; `sender` is the queue and task of [`notify::start`], if any.
    pub fn new(
        inner: Arc<dyn PassObserver>,
        sender: Option<(mpsc::Sender<Event>, JoinHandle<()>)>,
    ) -> Arc<Notifying> {
        let (tx, worker) = sender.unzip();
        Arc::new(Notifying {
            inner,
            tx: Mutex::new(tx),
            quota: Mutex::new(Vec::new()),
            worker: Mutex::new(worker),
        })
    }

    /// Opens `channels` (a channel whose files cannot be read is logged and left
    /// out: it must not silence the others nor stop renewals) and starts the
    /// sender; the sent-record lives in `state_dir`.
    pub fn start(
        channels: &[ChannelSpec],
        state_dir: &Path,
        inner: Arc<dyn PassObserver>,
    ) -> Arc<Notifying> {
        if channels.is_empty() {
            return Notifying::new(inner, None);
        }
        let (open, failed) = notify::open_channels(channels);
        for (name, e) in failed {
            error!(channel = %name, error = %e, "notification channel off");
        }
        let sender = (!open.is_empty()).then(|| notify::start(open, state_dir.to_owned()));
        Notifying::new(inner, sender)
    }

    fn queue(&self, e: Event) {
        let tx = self.tx.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = tx.as_ref() else { return };
        match tx.try_send(e) {
            Ok(()) => {}
            Err(TrySendError::Full(e)) => {
                warn!(event = e.event.as_str(), cert = %e.cert, "the notification queue is full; event dropped");
            }
            Err(TrySendError::Closed(_)) => {}
        }
    }

    /// Closes the queue and waits up to `within` for queued messages to go out (a
    /// command that exits after its pass).
    pub async fn finish(&self, within: Duration) {
        self.tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let worker = self
            .worker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(w) = worker
            && tokio::time::timeout(within, w).await.is_err()
        {
            warn!("notifications still unsent at exit; they are dropped");
        }
    }
}

impl PassObserver for Notifying {
    fn api_call(&self, action: &str, code: &str, took: Duration) {
        self.inner.api_call(action, code, took);
    }
    fn paid_call(&self, cert: &str) {
        self.inner.paid_call(cert);
    }
    fn unclear_paid_call(&self, cert: &str, on: bool) {
        self.inner.unclear_paid_call(cert, on);
    }
    fn pending_application(&self, cert: &str, on: bool) {
        self.inner.pending_application(cert, on);
    }
    fn order_state(&self, cert: &str, state: &str) {
        self.inner.order_state(cert, state);
    }
    fn blocked(&self, cert: &str) {
        self.inner.blocked(cert);
    }
    fn instance_service(&self, cert: &str, service_end: Option<i64>, auto_reissue: bool) {
        self.inner.instance_service(cert, service_end, auto_reissue);
    }
    fn fleet(&self, event: &crate::fleet::FleetEvent<'_>) {
        self.inner.fleet(event);
    }

    fn package_state(&self, product_code: &str, state: Option<&PackageState>, due: u32) {
        self.inner.package_state(product_code, state, due);
    }

    fn package_seen(&self, cert: &str, product_code: &str, total: Option<i64>, used: Option<i64>) {
        self.inner.package_seen(cert, product_code, total, used);
        // Only counters CAS gave, and a plan that exists (see PackageState::exhausted).
        let (Some(total), Some(used)) = (total, used) else {
            return;
        };
        if total <= 0 {
            return;
        }
        let left = (total - used).max(0);
        let message = format!(
            "resource plan {product_code}: {left} of {total} applications left (DescribePackageState); buy a resource plan of this product before it runs out"
        );
        let mut e = Event::new(EventKind::QuotaLow, cert, "", &message, Utc::now());
        e.product_code = Some(product_code.to_owned());
        e.units_left = Some(left);
        self.quota
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(e);
    }

    fn pass_done(&self, certs: &[CertificateConfig], report: &PassReport) {
        self.inner.pass_done(certs, report);
        // Without a channel every event would be dropped: none is built (one per
        // installed certificate, at the peak of a first run's memory).
        if self
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
        {
            self.quota
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
            return;
        }
        let quota: Vec<Event> =
            std::mem::take(&mut *self.quota.lock().unwrap_or_else(PoisonError::into_inner));
        for mut e in quota {
            if let Some(c) = report.certs.iter().find(|c| c.name == e.cert) {
                e.domain = c.domain.clone();
                e.not_after = c.not_after.clone();
            }
            self.queue(e);
        }
        for e in events_from_report(report, Utc::now()) {
            self.queue(e);
        }
    }

    fn pass_failed(&self, error: &str) {
        self.inner.pass_failed(error);
        self.queue(Event::new(
            EventKind::Failed,
            "*",
            "",
            &format!("the whole pass failed: {error}"),
            Utc::now(),
        ));
    }

    /// The wrapped observer's, so `Engine::metrics` still finds the registry.
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self.inner.clone().into_any()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::renew::Outcome;

    #[derive(Default)]
    struct Recorder {
        passes: AtomicUsize,
    }

    impl PassObserver for Recorder {
        fn pass_done(&self, _certs: &[CertificateConfig], _report: &PassReport) {
            self.passes.fetch_add(1, Ordering::SeqCst);
        }
        fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
            self
        }
    }

    #[tokio::test]
    async fn a_stuck_sender_drops_events_and_the_pass_goes_on() {
        // A queue of one that nobody reads: the sender is stuck on a dead receiver.
        let (tx, mut rx) = mpsc::channel(1);
        let recorder = Arc::new(Recorder::default());
        let n = Notifying::new(recorder.clone(), Some((tx, tokio::spawn(async {}))));
        let report = PassReport {
            certs: ["a", "b", "c"]
                .map(|c| events::tests::cert(c, Outcome::Failed, None))
                .to_vec(),
            hooks: vec![],
        };
        n.pass_done(&[], &report);
        assert_eq!(
            recorder.passes.load(Ordering::SeqCst),
            1,
            "the wrapped observer saw the pass"
        );
        assert_eq!(rx.try_recv().map(|e| e.cert).ok().as_deref(), Some("a"));
        assert!(
            rx.try_recv().is_err(),
            "the others were dropped, not waited for"
        );
        // The metrics behind the wrapper are still found (`Engine::metrics`).
        assert!(n.clone().into_any().downcast::<Recorder>().is_ok());
    }

    #[tokio::test]
    async fn a_failed_pass_is_an_event_and_finish_closes_the_queue() {
        let (tx, mut rx) = mpsc::channel(8);
        let n = Notifying::new(
            Arc::new(Recorder::default()),
            Some((tx, tokio::spawn(async {}))),
        );
        n.pass_failed("cannot list orders: InvalidAccessKeyId.NotFound");
        n.finish(Duration::from_secs(5)).await;
        let e = rx.recv().await.expect("one event");
        assert_eq!((e.event, e.cert.as_str()), (EventKind::Failed, "*"));
        assert!(
            e.message.contains("InvalidAccessKeyId.NotFound"),
            "{}",
            e.message
        );
        assert!(rx.recv().await.is_none(), "closed");
    }
}

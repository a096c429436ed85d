//! The engine's seams to the outside: the certificate source (CAS), DNS, the
//! journal store and the clock, as traits the engine holds as `Arc<dyn _>`.
//!
//! Production wires in [`Cas`], [`Dns`], [`LocalJournals`] and [`SystemClock`]
//! (`Engine::with_observer`); tests pass fakes through `Engine::with_ports`, so a
//! whole pass runs in process, under `tokio::time::pause()`, without HTTP.
//!
//! The methods return boxed futures because an `async fn` in a trait cannot be
//! called through `dyn` (instant-acme's `HttpClient` does the same); the boxing
//! costs one allocation per API call, nothing beside a network round trip.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use chrono::{DateTime, Utc};

use crate::cas::api::{
    Cas, CertificateOrder, CertificateStateResponse, OrderFilter, RenewResponse, Tag,
};
use crate::cas::api_apply::{
    Acknowledged, CreateCertificateParams, CreateCertificateResponse, PackageState,
    UpdateInstanceParams,
};
use crate::cas::client::{ApiError, Response};
use crate::cas::dns::{Dns, Record};
use crate::fleet::FleetError;
use crate::ids::OrderId;
use crate::secret::Secret;
use crate::store::{Journal, StateDir, StoreError};

/// What every port call returns: a boxed, sendable future of an API result.
pub type ApiFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, ApiError>> + Send + 'a>>;

/// The certificate source: the CAS operations the engine makes (inventory,
/// following an order, the paid calls, the application of a pending order).
///
/// The methods bear the names of the V1 (order) operations they stand for, so
/// the steps read like the API documentation. A second kind of source (SSL
/// Certificate Management V2.0 instances: UpdateInstance, ApplyCertificate,
/// GetTaskAttribute, GetInstanceDetail) is added as a second implementation of
/// this trait beside [`Cas`]: its `list_all_orders` lists instances as
/// [`CertificateOrder`]s, `describe_certificate_state` maps the task and
/// instance state to [`CertificateStateResponse`], and `renew_certificate_order`
/// fills in and submits the instance. The steps see only this trait and the
/// journal, so they do not change; the engine is given the source by its
/// constructor. Ids are `i64` order ids for now; a source whose ids are strings
/// keeps its own id table until the id becomes a newtype (issue 14, item 6).
pub trait CertificateSource: Send + Sync {
    /// Every matching order, page after page (ListUserCertificateOrder).
    fn list_all_orders(
        &self,
        filter: OrderFilter,
        page_size: u32,
    ) -> ApiFuture<'_, Vec<CertificateOrder>>;

    /// Where an order stands and, once issued, its certificate.
    fn describe_certificate_state(
        &self,
        order_id: i64,
    ) -> ApiFuture<'_, Response<CertificateStateResponse>>;

    /// The paid renewal of `order_id` (never repeated when the outcome is unclear).
    fn renew_certificate_order<'a>(
        &'a self,
        order_id: i64,
        csr: Option<&'a str>,
        tags: &'a [Tag],
    ) -> ApiFuture<'a, Response<RenewResponse>>;

    /// The paid new application (`renewal.mode: reapply`).
    fn create_certificate_for_package<'a>(
        &'a self,
        params: &'a CreateCertificateParams,
    ) -> ApiFuture<'a, Response<CreateCertificateResponse>>;

    /// The resource plan's counters before a new application.
    fn describe_package_state<'a>(
        &'a self,
        product_code: &'a str,
    ) -> ApiFuture<'a, Response<PackageState>>;

    /// Fills in a pending order's application (repeatable).
    fn update_instance<'a>(
        &'a self,
        params: &'a UpdateInstanceParams,
    ) -> ApiFuture<'a, Response<Acknowledged>>;

    /// Submits a pending order's application (never repeated).
    fn apply_certificate<'a>(
        &'a self,
        instance_id: &'a str,
    ) -> ApiFuture<'a, Response<Acknowledged>>;
}

impl CertificateSource for Cas {
    fn list_all_orders(
        &self,
        filter: OrderFilter,
        page_size: u32,
    ) -> ApiFuture<'_, Vec<CertificateOrder>> {
        Box::pin(Cas::list_all_orders(self, filter, page_size))
    }

    fn describe_certificate_state(
        &self,
        order_id: i64,
    ) -> ApiFuture<'_, Response<CertificateStateResponse>> {
        Box::pin(Cas::describe_certificate_state(self, order_id))
    }

    fn renew_certificate_order<'a>(
        &'a self,
        order_id: i64,
        csr: Option<&'a str>,
        tags: &'a [Tag],
    ) -> ApiFuture<'a, Response<RenewResponse>> {
        Box::pin(Cas::renew_certificate_order(self, order_id, csr, tags))
    }

    fn create_certificate_for_package<'a>(
        &'a self,
        params: &'a CreateCertificateParams,
    ) -> ApiFuture<'a, Response<CreateCertificateResponse>> {
        Box::pin(Cas::create_certificate_for_package(self, params))
    }

    fn describe_package_state<'a>(
        &'a self,
        product_code: &'a str,
    ) -> ApiFuture<'a, Response<PackageState>> {
        Box::pin(Cas::describe_package_state(self, product_code))
    }

    fn update_instance<'a>(
        &'a self,
        params: &'a UpdateInstanceParams,
    ) -> ApiFuture<'a, Response<Acknowledged>> {
        Box::pin(Cas::update_instance(self, params))
    }

    fn apply_certificate<'a>(
        &'a self,
        instance_id: &'a str,
    ) -> ApiFuture<'a, Response<Acknowledged>> {
        Box::pin(Cas::apply_certificate(self, instance_id))
    }
}

/// The DNS operations domain validation needs (Alibaba Cloud DNS in production).
pub trait DnsApi: Send + Sync {
    /// The zone of `fqdn` hosted in this account, if any.
    fn find_zone<'a>(&'a self, fqdn: &'a str) -> ApiFuture<'a, Option<String>>;

    /// The records at `fqdn` in `zone` (of `record_type`, or of every type).
    fn records_at<'a>(
        &'a self,
        fqdn: &'a str,
        zone: &'a str,
        record_type: Option<&'a str>,
    ) -> ApiFuture<'a, Vec<Record>>;

    /// Adds a record (`rr` relative to `zone`) and returns its id.
    fn add_record<'a>(
        &'a self,
        zone: &'a str,
        rr: &'a str,
        record_type: &'a str,
        value: &'a str,
    ) -> ApiFuture<'a, String>;

    fn delete_record<'a>(&'a self, record_id: &'a str) -> ApiFuture<'a, ()>;
}

impl DnsApi for Dns {
    fn find_zone<'a>(&'a self, fqdn: &'a str) -> ApiFuture<'a, Option<String>> {
        Box::pin(Dns::find_zone(self, fqdn))
    }

    fn records_at<'a>(
        &'a self,
        fqdn: &'a str,
        zone: &'a str,
        record_type: Option<&'a str>,
    ) -> ApiFuture<'a, Vec<Record>> {
        Box::pin(Dns::records_at(self, fqdn, zone, record_type))
    }

    fn add_record<'a>(
        &'a self,
        zone: &'a str,
        rr: &'a str,
        record_type: &'a str,
        value: &'a str,
    ) -> ApiFuture<'a, String> {
        Box::pin(Dns::add_record(self, zone, rr, record_type, value))
    }

    fn delete_record<'a>(&'a self, record_id: &'a str) -> ApiFuture<'a, ()> {
        Box::pin(Dns::delete_record(self, record_id))
    }
}

/// The wall clock of the engine: journal times, certificate validity, and every
/// elapsed time it measures against a journaled time. Waits use `tokio::time`, so
/// with [`TokioClock`] one `tokio::time::pause()` drives both.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock (production).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(
        clippy::disallowed_methods,
        reason = "the one place the engine reads the system clock"
    )]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A wall clock that moves with tokio's clock: `base` plus the tokio time elapsed
/// since it was made, so paused-time tests advance it with their sleeps.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock that reads `base` now (call it inside the runtime).
    pub fn starting_at(base: DateTime<Utc>) -> TokioClock {
        TokioClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::TimeDelta::from_std(self.start.elapsed()).unwrap_or_default();
        self.base + elapsed
    }
}

/// Where the journals live (local files now; an etcd store for a fleet later).
///
/// The methods are those of [`StateDir`], so the steps call them the same way
/// whatever the store. Keys and issued chains stay files on the host (`key_path`,
/// `issued_path`): they are this host's secrets, wherever the journals are. The
/// methods are synchronous, like the local files; an etcd store would make its
/// calls with `tokio::task::block_in_place` (the engine runs on the multi-thread
/// runtime), or the trait turns async then, which touches only the call sites of
/// `load_journal`/`save_journal` (`CertRun::save`, the engine, `reload`, `served`).
pub trait JournalStore: Send + Sync {
    /// Makes the store ready for writes (a dry run never calls it).
    fn prepare(&self) -> Result<(), StoreError>;

    /// The journal of `cert`, or a fresh idle one; creates nothing.
    fn load_journal(&self, cert: &str) -> Result<Journal, StoreError>;

    /// One atomic, durable journal transition.
    fn save_journal(&self, j: &mut Journal) -> Result<(), StoreError>;

    /// Every journal in the store with its certificate name (unreadable ones left out).
    fn journals(&self) -> Vec<(String, Journal)>;

    /// Where the key of `cert`'s `attempt` is kept on this host.
    fn key_path(&self, cert: &str, attempt: &str) -> PathBuf;

    /// Where the issued chain of `cert`'s `attempt` is kept on this host.
    fn issued_path(&self, cert: &str, attempt: &str) -> PathBuf;

    /// Removes the keys and chains of finished attempts of every idle certificate
    /// (the rule is in `store::prune`); how many went, for the log.
    fn prune_finished(&self) -> Result<usize, StoreError>;

    /// The fleet this store is shared with (etcd); `None` for a host alone.
    fn fleet(&self) -> Option<&dyn FleetPort> {
        None
    }
}

/// What every fleet call returns.
pub type FleetFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, FleetError>> + Send + 'a>>;

/// Material issued in the fleet, opened with this host's sealing key.
#[derive(Debug, Clone)]
pub struct SharedIssued {
    pub version: u64,
    pub order_id: OrderId,
    pub fullchain_pem: String,
    /// The private key (PEM).
    pub key: Secret,
    /// The host whose renewal it is.
    pub host: String,
}

/// What a pass asks of the fleet beside the journals (`renew::fleet` uses it):
/// the lock around the steps that can spend, the issued material every host
/// installs, and the reports of what each host installed.
pub trait FleetPort: Send + Sync {
    /// Checks, once, that this host's sealing key is the fleet's.
    fn ready(&self) -> FleetFuture<'_, ()>;

    /// The newest material issued for `cert` in the fleet, opened.
    fn shared_issued<'a>(&'a self, cert: &'a str) -> FleetFuture<'a, Option<SharedIssued>>;

    /// Reports that this host installed `version` of `cert` (at `at`).
    fn report_installed<'a>(
        &'a self,
        cert: &'a str,
        version: u64,
        leaf_sha256: &'a str,
        at: DateTime<Utc>,
    ) -> FleetFuture<'a, ()>;

    /// Takes `cert`'s lock, waiting while another host holds it until `until`.
    fn lock<'a>(&'a self, cert: &'a str, until: tokio::time::Instant) -> FleetFuture<'a, ()>;

    /// Releases `cert`'s lock if this host holds it.
    fn unlock<'a>(&'a self, cert: &'a str) -> FleetFuture<'a, ()>;

    /// Writes the key (and chain) the journal's attempt needs to this host's state
    /// directory from the fleet, when another host made them.
    fn fetch_attempt<'a>(&'a self, cert: &'a str, journal: &'a Journal) -> FleetFuture<'a, ()>;

    /// Whether a paid call for `cert` may go out now: this host holds the lock and
    /// etcd confirmed the lease recently.
    fn may_spend(&self, cert: &str) -> Result<(), FleetError>;
}

/// The journals as files of the state directory (`state_dir/journal/<name>.json`).
#[derive(Debug, Clone)]
pub struct LocalJournals {
    dir: StateDir,
}

impl LocalJournals {
    /// The store at `root`; nothing is created before [`JournalStore::prepare`].
    pub fn at(root: &Path) -> LocalJournals {
        LocalJournals {
            dir: StateDir::at(root),
        }
    }
}

impl JournalStore for LocalJournals {
    fn prepare(&self) -> Result<(), StoreError> {
        StateDir::open(self.dir.root()).map(|_| ())
    }

    fn load_journal(&self, cert: &str) -> Result<Journal, StoreError> {
        // Creates nothing (dry runs change nothing) and answers a fresh journal only
        // when there is none: a journal that cannot be read (a stat error, a link)
        // is an error, never "no renewal in flight", which could pay twice.
        self.dir.load_journal(cert)
    }

    fn save_journal(&self, j: &mut Journal) -> Result<(), StoreError> {
        self.dir.save_journal(j)
    }

    fn journals(&self) -> Vec<(String, Journal)> {
        self.dir.journals()
    }

    fn key_path(&self, cert: &str, attempt: &str) -> PathBuf {
        self.dir.key_path(cert, attempt)
    }

    fn issued_path(&self, cert: &str, attempt: &str) -> PathBuf {
        self.dir.issued_path(cert, attempt)
    }

    fn prune_finished(&self) -> Result<usize, StoreError> {
        crate::store::prune::prune_state(&self.dir).map(|p| p.files.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_tokio_clock_moves_with_paused_time() {
        let base = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).expect("a valid time");
        let clock = TokioClock::starting_at(base);
        assert_eq!(clock.now(), base);
        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        assert_eq!(clock.now(), base + chrono::TimeDelta::hours(1));
    }

    #[test]
    fn local_journals_create_nothing_until_prepared() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("state");
        let store = LocalJournals::at(&root);
        let j = store.load_journal("www").expect("a fresh journal");
        assert_eq!(j.cert, "www");
        assert!(!root.exists(), "loading created the state directory");
        store.prepare().expect("prepare");
        let mut j = j;
        j.last_error = Some("x".into());
        store.save_journal(&mut j).expect("save");
        let back = store.load_journal("www").expect("load");
        assert_eq!(back.last_error.as_deref(), Some("x"));
        assert_eq!(store.journals().len(), 1);
    }
}

//! The fleet's etcd client: one lease per process kept alive by a task, the
//! per-certificate lock on it, fenced writes of the shared journal, and reads of
//! the issued material and the hosts' reports.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use tracing::{info, warn};

use super::layout::{self, HostRecord, IssuedRecord, Layout, LockRecord};
use super::{FleetError, FleetSpec, SealingKey};

/// Attempts of one request while etcd answers "unavailable" (a member down, a
/// leader election): waits of 0.1, 0.2, 0.4, 0.8 and 1.6 s between them cover
/// an election (about a second with etcd's defaults).
const ATTEMPTS: u32 = 6;

/// Whether `e` says the member asked could not be reached (the request did not
/// get through): another member may answer.
fn is_unavailable(e: &etcd_client::Error) -> bool {
    match e {
        // gRPC code 14: UNAVAILABLE.
        etcd_client::Error::GRpcStatus(s) => i32::from(s.code()) == 14,
        etcd_client::Error::TransportError(_) => true,
        _ => false,
    }
}

/// How long one etcd request may take before it counts as etcd unreachable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The lease and when etcd last confirmed it.
#[derive(Debug, Default)]
struct LeaseState {
    id: Option<i64>,
    /// The last keepalive answer (or the grant), on the monotonic clock: a wall
    /// clock that is off changes nothing here.
    confirmed: Option<Instant>,
}

/// A connection to the fleet's etcd, for this host.
pub struct EtcdFleet {
    client: Client,
    layout: Layout,
    host: String,
    ttl: Duration,
    sealing_key: SealingKey,
    endpoints: String,
    lease: Arc<Mutex<LeaseState>>,
    /// The task keeping the lease alive: it must end with this client, or a
    /// replaced client (a reload) would keep its lease, and any lock left on
    /// it, alive for ever.
    keepalive: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A lock this host holds: its create_revision (the fence of shared writes)
/// and the lease it sits on (a paid call needs that very lease alive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockHeld {
    pub rev: i64,
    pub lease: i64,
}

impl Drop for EtcdFleet {
    /// Stops the keepalive and revokes the lease in the background (Drop must
    /// not block): this client's locks go now, or at the latest with the TTL.
    fn drop(&mut self) {
        let task = self
            .keepalive
            .get_mut()
            .map_or_else(|p| p.into_inner().take(), Option::take);
        if let Some(task) = task {
            task.abort();
        }
        let id = self.lease.lock().map_or(None, |mut s| s.id.take());
        if let (Some(id), Ok(rt)) = (id, tokio::runtime::Handle::try_current()) {
            let mut client = self.client.clone();
            rt.spawn(async move {
                let _ = tokio::time::timeout(REQUEST_TIMEOUT, client.lease_revoke(id)).await;
            });
        }
    }
}

impl std::fmt::Debug for EtcdFleet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdFleet")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.layout.prefix())
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// The value and revisions of a key, or revision 0 for a missing one.
#[derive(Debug, Clone, Default)]
pub struct Versioned {
    pub value: Option<Vec<u8>>,
    pub mod_revision: i64,
    pub create_revision: i64,
}

impl EtcdFleet {
    /// A client for `spec`'s members. The connection is made lazily: a member
    /// down now is no error here.
    pub async fn connect(spec: &FleetSpec) -> Result<EtcdFleet, FleetError> {
        let endpoints = spec.endpoints.join(",");
        let fail = |detail: String| FleetError::Etcd {
            endpoints: endpoints.clone(),
            detail,
        };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(5), REQUEST_TIMEOUT);
        if spec.endpoints.iter().any(|e| e.starts_with("https://")) {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &spec.ca_file {
                let pem = std::fs::read(ca).map_err(|e| fail(format!("{}: {e}", ca.display())))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            if let Some((cert, key)) = &spec.client_cert {
                let c =
                    std::fs::read(cert).map_err(|e| fail(format!("{}: {e}", cert.display())))?;
                let k = crate::secret::read_secret_text(key)
                    .map_err(|e| fail(format!("{}: {e}", key.display())))?;
                tls = tls.identity(Identity::from_pem(c, k.as_bytes()));
            }
            options = options.with_tls(tls);
        }
        let client = Client::connect(&spec.endpoints, Some(options))
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(EtcdFleet {
            client,
            layout: Layout::new(&spec.prefix),
            host: spec.host_name.clone(),
            ttl: spec.lease_ttl,
            sealing_key: spec.sealing_key.clone(),
            endpoints,
            lease: Arc::default(),
            keepalive: Mutex::default(),
        })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn sealing_key(&self) -> &SealingKey {
        &self.sealing_key
    }

    fn err(&self, e: etcd_client::Error) -> FleetError {
        FleetError::Etcd {
            endpoints: self.endpoints.clone(),
            detail: e.to_string(),
        }
    }

    /// Calls `f` with a client, again (up to [`ATTEMPTS`] in all) while etcd
    /// answers "unavailable": the balancer then picks another member, so a member
    /// that is down or an election costs a retry, not an error.
    async fn retrying<T, F, Fut>(&self, f: F) -> Result<T, FleetError>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match f(self.client.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < ATTEMPTS && is_unavailable(&e) => {
                    tokio::time::sleep(Duration::from_millis(100 << (attempt - 1))).await;
                }
                Err(e) => return Err(self.err(e)),
            }
        }
    }

    async fn txn(&self, txn: Txn) -> Result<etcd_client::TxnResponse, FleetError> {
        self.retrying(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    async fn range(
        &self,
        key: &str,
        options: Option<GetOptions>,
    ) -> Result<etcd_client::GetResponse, FleetError> {
        self.retrying(|mut c| {
            let options = options.clone();
            async move { c.get(key, options).await }
        })
        .await
    }

    /// One key.
    pub async fn get(&self, key: &str) -> Result<Versioned, FleetError> {
        let r = self.range(key, None).await?;
        Ok(r.kvs()
            .first()
            .map_or_else(Versioned::default, |kv| Versioned {
                value: Some(kv.value().to_vec()),
                mod_revision: kv.mod_revision(),
                create_revision: kv.create_revision(),
            }))
    }

    /// Every key under `prefix` with its value.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, FleetError> {
        let r = self
            .range(prefix, Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(r.kvs()
            .iter()
            .map(|kv| {
                (
                    String::from_utf8_lossy(kv.key()).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect())
    }

    /// Makes sure this host's sealing key is the fleet's: the first host seals a
    /// check value, every other one must open it.
    pub async fn check_sealing_key(&self) -> Result<(), FleetError> {
        let key = self.layout.sealing_check();
        let (cert, version) = layout::CHECK_BINDING;
        let sealed = self.sealing_key.seal(cert, version, layout::CHECK_TEXT)?;
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), sealed, None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let r = self.txn(txn).await?;
        if r.succeeded() {
            info!(key = %key, "this host sealed the fleet's sealing-key check value");
            return Ok(());
        }
        let stored = first_value(&r.op_responses()).unwrap_or_default();
        let text = String::from_utf8_lossy(&stored);
        match self.sealing_key.open(cert, version, &text) {
            Ok(plain) if plain == layout::CHECK_TEXT => Ok(()),
            _ => Err(FleetError::WrongSealingKey { key }),
        }
    }

    /// The lease to attach locks to: the current one while etcd confirms it,
    /// else a new one with its keepalive task.
    pub async fn lease(&self) -> Result<i64, FleetError> {
        if let Some(id) = self.live_lease() {
            return Ok(id);
        }
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX);
        let grant = self
            .retrying(|mut c| async move { c.lease_grant(ttl, None).await })
            .await?;
        let id = grant.id();
        let (mut keeper, mut stream) = self
            .retrying(|mut c| async move { c.lease_keep_alive(id).await })
            .await?;
        {
            let mut s = self
                .lease
                .lock()
                .expect("the lease state is never poisoned");
            s.id = Some(id);
            s.confirmed = Some(Instant::now());
        }
        let state = self.lease.clone();
        let every = self.ttl / 3;
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let answer = match keeper.keep_alive().await {
                    Ok(()) => tokio::time::timeout(REQUEST_TIMEOUT, stream.message()).await,
                    Err(e) => Ok(Err(e)),
                };
                let mut s = state.lock().expect("the lease state is never poisoned");
                if s.id != Some(id) {
                    return;
                }
                match answer {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => s.confirmed = Some(Instant::now()),
                    // No answer in time: the lease is not confirmed; try again.
                    Err(_) => warn!(lease = id, "no answer to the fleet lease's keepalive"),
                    // Expired (TTL 0), or the stream broke: the lease is gone and
                    // the next lock asks for a new one.
                    Ok(other) => {
                        warn!(lease = id, error = ?other.err(), "the fleet lease ended");
                        s.id = None;
                        s.confirmed = None;
                        return;
                    }
                }
            }
        });
        let old = self
            .keepalive
            .lock()
            .expect("the keepalive slot is never poisoned")
            .replace(task);
        // The previous task keeps a lease that ended (it returned already) or
        // one no longer used.
        if let Some(old) = old {
            old.abort();
        }
        Ok(id)
    }

    /// The lease while its last confirmation is recent enough to trust it for a
    /// paid call (half the TTL: a keepalive is sent every third).
    fn live_lease(&self) -> Option<i64> {
        let s = self
            .lease
            .lock()
            .expect("the lease state is never poisoned");
        let fresh = s.confirmed.is_some_and(|t| t.elapsed() < self.ttl / 2);
        s.id.filter(|_| fresh)
    }

    /// Fails unless `lease` (the one `cert`'s lock sits on) is still our lease
    /// and etcd confirmed it within half its TTL: a newer lease of ours does not
    /// vouch for a lock on one that ended (that lock may be another host's now).
    pub fn lease_alive(&self, cert: &str, lease: i64) -> Result<(), FleetError> {
        if self.live_lease() == Some(lease) {
            return Ok(());
        }
        let s = self
            .lease
            .lock()
            .expect("the lease state is never poisoned");
        // Another lease now: the one the lock sat on ended for sure. No lease
        // (the keepalive broke): not known, as with an old confirmation.
        if s.id.is_some_and(|id| id != lease) {
            return Err(FleetError::LostLock {
                cert: cert.to_owned(),
                holder: "nobody known (the lease it sat on ended)".to_owned(),
            });
        }
        Err(FleetError::LeaseUncertain {
            cert: cert.to_owned(),
            age: s.confirmed.map_or_else(
                || "never".to_owned(),
                |t| {
                    humantime::format_duration(Duration::from_secs(t.elapsed().as_secs()))
                        .to_string()
                },
            ),
            ttl: humantime::format_duration(self.ttl).to_string(),
        })
    }

    /// Takes `cert`'s lock on our lease: `Ok` with its revision and lease when
    /// ours, or who holds it.
    #[allow(
        clippy::disallowed_methods,
        reason = "`since` only informs `status`; nothing is measured against it"
    )]
    pub async fn try_lock(&self, cert: &str) -> Result<Result<LockHeld, LockRecord>, FleetError> {
        let lease = self.lease().await?;
        let key = self.layout.lock(cert);
        let record = LockRecord {
            host: self.host.clone(),
            since: chrono::Utc::now().to_rfc3339(),
        };
        let value = serde_json::to_vec(&record).expect("a lock record serializes");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(
                    key.clone(),
                    value,
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::get(key.clone(), None),
            ])
            .or_else([TxnOp::get(key.clone(), None)]);
        let r = self.txn(txn).await?;
        let kv = first_kv(&r.op_responses());
        if r.succeeded() {
            let (_, rev) = kv.ok_or_else(|| self.bad(&key, "the lock just written is missing"))?;
            return Ok(Ok(LockHeld { rev, lease }));
        }
        // A retried request whose first try went through finds our own lock.
        if let Some(rev) = lock_on_lease(&r.op_responses(), lease) {
            return Ok(Ok(LockHeld { rev, lease }));
        }
        let holder = kv
            .and_then(|(v, _)| serde_json::from_slice::<LockRecord>(&v).ok())
            .unwrap_or(LockRecord {
                host: "(unknown)".into(),
                since: String::new(),
            });
        Ok(Err(holder))
    }

    /// Releases `cert`'s lock if it is still the one taken at `rev`.
    pub async fn unlock(&self, cert: &str, rev: i64) -> Result<(), FleetError> {
        let key = self.layout.lock(cert);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, rev)])
            .and_then([TxnOp::delete(key, None)]);
        self.txn(txn).await?;
        Ok(())
    }

    /// Who holds `cert`'s lock now, if anyone.
    pub async fn lock_holder(&self, cert: &str) -> Result<Option<LockRecord>, FleetError> {
        let v = self.get(&self.layout.lock(cert)).await?;
        Ok(v.value.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// Writes `puts` (the journal first) only while `cert`'s lock is still the one
    /// taken at `lock_rev` and the journal's mod_revision is still `journal_rev`;
    /// the journal's new mod_revision.
    pub async fn fenced_put(
        &self,
        cert: &str,
        lock_rev: i64,
        journal_rev: i64,
        puts: Vec<(String, Vec<u8>)>,
    ) -> Result<i64, FleetError> {
        let lock = self.layout.lock(cert);
        let journal = self.layout.journal(cert);
        let ops: Vec<TxnOp> = puts
            .into_iter()
            .map(|(k, v)| TxnOp::put(k, v, None))
            .collect();
        let txn = Txn::new()
            .when([
                Compare::create_revision(lock.clone(), CompareOp::Equal, lock_rev),
                Compare::mod_revision(journal, CompareOp::Equal, journal_rev),
            ])
            .and_then(ops)
            .or_else([TxnOp::get(lock.clone(), None)]);
        let r = self.txn(txn).await?;
        if r.succeeded() {
            return r
                .header()
                .map(|h| h.revision())
                .ok_or_else(|| self.bad(&lock, "the answer has no revision"));
        }
        match first_kv(&r.op_responses()) {
            Some((_, rev)) if rev == lock_rev => Err(FleetError::Conflict {
                cert: cert.to_owned(),
            }),
            other => Err(FleetError::LostLock {
                cert: cert.to_owned(),
                holder: other
                    .and_then(|(v, _)| serde_json::from_slice::<LockRecord>(&v).ok())
                    .map_or_else(|| "nobody".to_owned(), |l| l.host),
            }),
        }
    }

    /// Deletes the sealed keys of `cert`'s attempts but `keep` (the attempt in
    /// flight) while the journal is still at `journal_rev`: a new attempt's key is
    /// written with the journal, so it is never taken for a finished one. How
    /// many went.
    pub async fn prune_attempt_keys(
        &self,
        cert: &str,
        journal_rev: i64,
        keep: Option<&str>,
    ) -> Result<usize, FleetError> {
        let keep = keep.map(|a| self.layout.attempt_key(cert, a));
        let listed = self
            .range(
                &self.layout.attempt_keys(cert),
                Some(GetOptions::new().with_prefix().with_keys_only()),
            )
            .await?;
        let gone: Vec<TxnOp> = listed
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .filter(|k| keep.as_deref() != Some(k.as_str()))
            .map(|k| TxnOp::delete(k, None))
            .collect();
        if gone.is_empty() {
            return Ok(0);
        }
        let n = gone.len();
        let journal = self.layout.journal(cert);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                journal,
                CompareOp::Equal,
                journal_rev,
            )])
            .and_then(gone);
        Ok(if self.txn(txn).await?.succeeded() {
            n
        } else {
            0
        })
    }

    /// The issued material of `cert`, if any.
    pub async fn issued(&self, cert: &str) -> Result<Option<IssuedRecord>, FleetError> {
        let key = self.layout.issued(cert);
        let v = self.get(&key).await?;
        v.value
            .map(|v| serde_json::from_slice(&v).map_err(|e| self.bad(&key, &e.to_string())))
            .transpose()
    }

    /// Reports the version this host installed.
    pub async fn report_installed(&self, cert: &str, r: &HostRecord) -> Result<(), FleetError> {
        let value = serde_json::to_vec(r).expect("a host record serializes");
        let txn = Txn::new().and_then([TxnOp::put(
            self.layout.host_cert(&self.host, cert),
            value,
            None,
        )]);
        self.txn(txn).await?;
        Ok(())
    }

    /// A watch on every certificate's keys (the daemon installs what is issued).
    pub async fn watch_certs(&self) -> Result<WatchStream, FleetError> {
        self.client
            .watch_client()
            .watch(self.layout.certs(), Some(WatchOptions::new().with_prefix()))
            .await
            .map_err(|e| self.err(e))
    }

    fn bad(&self, key: &str, detail: &str) -> FleetError {
        FleetError::BadRecord {
            key: key.to_owned(),
            detail: detail.to_owned(),
        }
    }
}

/// The value and create_revision of the first key a transaction's gets found.
fn first_kv(ops: &[TxnOpResponse]) -> Option<(Vec<u8>, i64)> {
    ops.iter().find_map(|op| match op {
        TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.create_revision())),
        _ => None,
    })
}

/// The create_revision of the first key a transaction's gets found, when it is
/// attached to `lease`.
fn lock_on_lease(ops: &[TxnOpResponse], lease: i64) -> Option<i64> {
    ops.iter().find_map(|op| match op {
        TxnOpResponse::Get(g) => g
            .kvs()
            .first()
            .filter(|kv| kv.lease() == lease)
            .map(|kv| kv.create_revision()),
        _ => None,
    })
}

fn first_value(ops: &[TxnOpResponse]) -> Option<Vec<u8>> {
    first_kv(ops).map(|(v, _)| v)
}

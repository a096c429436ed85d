//! Fleets (issue 13): hosts that share certificates through etcd make one paid
//! call per certificate and install the same certificate and key. The real
//! binary, the simulator and real throwaway etcd members.
#![cfg(feature = "fleet")]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::etcd::EtcdCluster;
use common::{TestEnv, bin_command, show};

const ONE_ORDER: &str = "orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 1 }\n";

/// Host `i` of a fleet: its own state and output directories, the shared
/// simulator and etcd.
struct Host {
    config: PathBuf,
    out: PathBuf,
}

/// Writes a sealing key file (mode 0600) holding `byte` 32 times.
fn sealing_key(dir: &Path, name: &str, byte: u8) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, [byte; 32]).expect("write key");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    p
}

/// `n` hosts of the fleet on `env`'s simulator, each with `key` as its sealing key.
fn hosts(env: &TestEnv, etcd: &EtcdCluster, keys: &[PathBuf]) -> Vec<Host> {
    let d = env.dir().display().to_string();
    let base = env.config_text();
    keys.iter()
        .enumerate()
        .map(|(i, key)| {
            let root = env.dir().join(format!("host{i}"));
            std::fs::create_dir_all(&root).expect("host dir");
            let r = root.display().to_string();
            let text = base
                .replace(&format!("{d}/state"), &format!("{r}/state"))
                .replace(&format!("{d}/out/"), &format!("{r}/out/"))
                .replace(
                    "certificates:\n",
                    &format!(
                        "fleet:\n  etcd: {{ endpoints: {}, prefix: /cas-renewd/test, lease_ttl: 5s }}\n  sealing_key_file: {}\n  host_name: host{i}\ncertificates:\n",
                        etcd.endpoints_yaml(),
                        key.display()
                    ),
                );
            let config = root.join("config.yaml");
            std::fs::write(&config, text).expect("config");
            Host {
                config,
                out: root.join("out"),
            }
        })
        .collect()
}

/// `args` on every host at once; their outputs, in host order.
async fn all_at_once(hosts: &[Host], args: &[&str]) -> Vec<Output> {
    let tasks: Vec<_> = hosts
        .iter()
        .map(|h| {
            let mut c = bin_command(&h.config, args, Some("info"));
            tokio::task::spawn_blocking(move || c.output().expect("binary runs"))
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("join"));
    }
    out
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Renew calls per order, as the simulator counted them.
fn renew_calls(env: &TestEnv) -> Vec<(String, u64)> {
    env.renew_calls()
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        })
        .unwrap_or_default()
}

async fn fleet_env() -> TestEnv {
    TestEnv::builder(ONE_ORDER)
        .cert(common::Cert::new("www", "www.example.com"))
        .start()
        .await
}

/// `n` hosts with the same sealing key on a fresh simulator with one due order.
async fn same_key_fleet(etcd: &EtcdCluster, n: usize) -> (TestEnv, Vec<Host>) {
    let env = fleet_env().await;
    let keys: Vec<PathBuf> = (0..n)
        .map(|i| sealing_key(env.dir(), &format!("k{i}"), 7))
        .collect();
    let hosts = hosts(&env, etcd, &keys);
    (env, hosts)
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hosts_started_at_once_make_one_renew_call_and_install_the_same_files() {
    let Some(etcd) = EtcdCluster::single() else {
        return;
    };
    let (env, hosts) = same_key_fleet(&etcd, 3).await;
    let outs = all_at_once(&hosts, &["once"]).await;
    for o in &outs {
        assert!(o.status.success(), "{}", show(o));
    }
    let calls = renew_calls(&env);
    assert_eq!(calls.len(), 1, "renew calls per order: {calls:?}");
    assert_eq!(calls[0].1, 1, "renew calls per order: {calls:?}");
    let cert0 = read(&hosts[0].out.join("www/cert.pem"));
    let key0 = read(&hosts[0].out.join("www/privkey.pem"));
    for h in &hosts[1..] {
        assert_eq!(read(&h.out.join("www/cert.pem")), cert0, "cert.pem differs");
        assert_eq!(
            read(&h.out.join("www/privkey.pem")),
            key0,
            "privkey.pem differs"
        );
    }
    let leaf = cas_renewd::pki::read_leaf(&String::from_utf8_lossy(&cert0)).expect("leaf");
    let key = cas_renewd::pki::Key::from_pem(&String::from_utf8_lossy(&key0)).expect("key");
    assert_eq!(
        leaf.spki_sha256,
        key.spki_sha256(),
        "the key is the certificate's"
    );
    assert!(
        (leaf.not_after - chrono::Utc::now().timestamp()) / 86_400 > 300,
        "the renewed certificate is installed"
    );
    // A second round changes nothing and pays nothing.
    let outs = all_at_once(&hosts, &["once"]).await;
    for o in &outs {
        assert!(o.status.success(), "{}", show(o));
    }
    assert_eq!(renew_calls(&env), calls);
    for h in &hosts {
        assert_eq!(read(&h.out.join("www/cert.pem")), cert0);
    }
    let status = all_at_once(&hosts[..1], &["status"]).await;
    let text = String::from_utf8_lossy(&status[0].stdout);
    assert!(
        text.contains("fleet: lock free; issued v1; installed: host0 v1, host1 v1, host2 v1"),
        "{}",
        show(&status[0])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_with_another_sealing_key_installs_nothing_and_loses_nothing() {
    let Some(etcd) = EtcdCluster::single() else {
        return;
    };
    let env = fleet_env().await;
    let keys = [
        sealing_key(env.dir(), "k0", 7),
        sealing_key(env.dir(), "k1", 7),
        sealing_key(env.dir(), "wrong", 8),
    ];
    let hosts = hosts(&env, &etcd, &keys);
    let first = all_at_once(&hosts[..1], &["once"]).await;
    assert!(first[0].status.success(), "{}", show(&first[0]));
    let calls = renew_calls(&env);
    let wrong = all_at_once(&hosts[2..], &["once"]).await;
    let o = &wrong[0];
    assert!(!o.status.success(), "{}", show(o));
    let text = show(o);
    assert!(
        text.contains("sealing_key_file is not the fleet's"),
        "a clear error: {text}"
    );
    assert!(
        !hosts[2].out.join("www/cert.pem").exists(),
        "nothing installed"
    );
    assert!(
        !hosts[2].out.join("www/privkey.pem").exists(),
        "nothing installed"
    );
    assert_eq!(renew_calls(&env), calls, "nothing paid");
    // The fleet's data is intact: a host with the right key installs it.
    let right = all_at_once(&hosts[1..2], &["once"]).await;
    assert!(right[0].status.success(), "{}", show(&right[0]));
    assert_eq!(
        read(&hosts[1].out.join("www/privkey.pem")),
        read(&hosts[0].out.join("www/privkey.pem"))
    );
    assert_eq!(renew_calls(&env), calls);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_etcd_down_no_paid_call_is_made_and_the_next_pass_converges() {
    let Some(mut etcd) = EtcdCluster::single() else {
        return;
    };
    let (env, hosts) = same_key_fleet(&etcd, 2).await;
    etcd.stop_all();
    let down = all_at_once(&hosts, &["once"]).await;
    for o in &down {
        assert!(!o.status.success(), "{}", show(o));
        assert!(show(o).contains("etcd ("), "a clear error: {}", show(o));
    }
    assert!(
        renew_calls(&env).is_empty(),
        "no paid call: {:?}",
        renew_calls(&env)
    );
    etcd.start_all();
    let up = all_at_once(&hosts, &["once"]).await;
    for o in &up {
        assert!(o.status.success(), "{}", show(o));
    }
    let calls = renew_calls(&env);
    assert_eq!(calls.iter().map(|(_, n)| n).sum::<u64>(), 1, "{calls:?}");
    assert_eq!(
        read(&hosts[0].out.join("www/cert.pem")),
        read(&hosts[1].out.join("www/cert.pem"))
    );
}

/// The time stamp of the first log line holding `needle`.
fn log_time(log: &str, needle: &str) -> chrono::DateTime<chrono::Utc> {
    let line = log
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"));
    let stamp = line.split_whitespace().next().expect("a time stamp");
    chrono::DateTime::parse_from_rfc3339(stamp)
        .unwrap_or_else(|e| panic!("{stamp}: {e}"))
        .with_timezone(&chrono::Utc)
}

/// Adds top-level YAML to a host's configuration.
fn add_to_config(h: &Host, yaml: &str) {
    let text = std::fs::read_to_string(&h.config).expect("config");
    std::fs::write(
        &h.config,
        text.replace("fleet:\n", &format!("{yaml}fleet:\n")),
    )
    .expect("config");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_daemon_installs_what_another_host_issued_within_seconds() {
    let Some(etcd) = EtcdCluster::single() else {
        return;
    };
    let (env, hosts) = same_key_fleet(&etcd, 2).await;
    add_to_config(
        &hosts[1],
        &format!(
            "schedule: {{ cron: \"0 17 3 1 1 *\", jitter: 0s, run_at_start: false }}\nmetrics: {{ listen: \"127.0.0.1:{}\" }}\n",
            common::free_port()
        ),
    );
    let mut daemon = common::DaemonProcess::start(
        bin_command(&hosts[1].config, &["run"], Some("info")),
        env.dir().join("host1.log"),
    );
    // The watch's first pass (no pass at start) installs what the fleet has:
    // nothing yet; it renews nothing.
    daemon.wait_log("pass result");
    assert!(renew_calls(&env).is_empty(), "{}", daemon.log());
    assert!(!hosts[1].out.join("www/cert.pem").exists());
    let renewed = all_at_once(&hosts[..1], &["once"]).await;
    assert!(renewed[0].status.success(), "{}", show(&renewed[0]));
    assert_eq!(renew_calls(&env).len(), 1);
    let issued = std::time::Instant::now();
    let want = read(&hosts[0].out.join("www/cert.pem"));
    let cert1 = hosts[1].out.join("www/cert.pem");
    while std::fs::read(&cert1).ok().as_ref() != Some(&want) {
        assert!(
            issued.elapsed() < std::time::Duration::from_secs(30),
            "host1 did not install the new certificate:\n{}",
            daemon.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let published = log_time(
        &String::from_utf8_lossy(&renewed[0].stderr),
        "publishing the issued certificate",
    );
    let installed = log_time(
        &daemon.wait_log("installed the fleet's certificate"),
        "installed the fleet's certificate",
    );
    eprintln!(
        "published by host0 to installed by the watching host1: {} ms",
        (installed - published).num_milliseconds()
    );
    assert_eq!(
        read(&hosts[1].out.join("www/privkey.pem")),
        read(&hosts[0].out.join("www/privkey.pem"))
    );
    assert_eq!(renew_calls(&env).len(), 1, "the watching host paid nothing");
    daemon.stop();
}

/// A host killed at each step of a renewal (its lease then expires): the next
/// host carries the same attempt on, with the same key and order, and never
/// orders again; every host ends with the same files.
#[tokio::test(flavor = "multi_thread")]
async fn a_host_killed_mid_renewal_is_taken_over_with_the_same_key_and_order() {
    for point in [
        "after-key-ready",
        "after-renew-call",
        "after-order-created",
        "after-issued",
        "after-install-files",
    ] {
        let Some(etcd) = EtcdCluster::single() else {
            return;
        };
        let (env, hosts) = same_key_fleet(&etcd, 2).await;
        let mut c = bin_command(&hosts[0].config, &["once"], Some("info"));
        c.env("CAS_RENEWD_CRASH_AT", point);
        let crashed = tokio::task::spawn_blocking(move || c.output().expect("runs"))
            .await
            .expect("join");
        assert!(
            String::from_utf8_lossy(&crashed.stderr).contains(&format!("crash point {point}")),
            "{point}: {}",
            show(&crashed)
        );
        let paid_before = renew_calls(&env);
        let taken = all_at_once(&hosts[1..], &["once"]).await;
        assert!(taken[0].status.success(), "{point}: {}", show(&taken[0]));
        let again = all_at_once(&hosts[..1], &["once"]).await;
        assert!(again[0].status.success(), "{point}: {}", show(&again[0]));
        let calls = renew_calls(&env);
        assert_eq!(calls.len(), 1, "{point}: {calls:?}");
        assert_eq!(calls[0].1, 1, "{point}: one renew call: {calls:?}");
        // Before the paid call (the key made; the first install of the order's
        // certificate, whose install step comes first) the taking host pays.
        if !["after-key-ready", "after-install-files"].contains(&point) {
            assert_eq!(calls, paid_before, "{point}: the taking host paid nothing");
        }
        assert_eq!(
            read(&hosts[0].out.join("www/cert.pem")),
            read(&hosts[1].out.join("www/cert.pem")),
            "{point}"
        );
        assert_eq!(
            read(&hosts[0].out.join("www/privkey.pem")),
            read(&hosts[1].out.join("www/privkey.pem")),
            "{point}"
        );
        let leaf = cas_renewd::pki::read_leaf(&String::from_utf8_lossy(&read(
            &hosts[1].out.join("www/cert.pem"),
        )))
        .expect("leaf");
        assert!(
            (leaf.not_after - chrono::Utc::now().timestamp()) / 86_400 > 300,
            "{point}: renewed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_one_member_of_three_killed_the_fleet_goes_on() {
    let Some(mut etcd) = EtcdCluster::three() else {
        return;
    };
    let (env, hosts) = same_key_fleet(&etcd, 3).await;
    etcd.kill_member(0);
    let outs = all_at_once(&hosts, &["once"]).await;
    for o in &outs {
        assert!(o.status.success(), "{}", show(o));
    }
    let calls = renew_calls(&env);
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].1, 1, "{calls:?}");
    let key0 = read(&hosts[0].out.join("www/privkey.pem"));
    for h in &hosts[1..] {
        assert_eq!(read(&h.out.join("www/privkey.pem")), key0);
    }
}

/// The library's etcd client for host `host` of a fleet on `etcd`.
async fn client(
    etcd: &EtcdCluster,
    prefix: &str,
    host: &str,
) -> cas_renewd::fleet::etcd::EtcdFleet {
    let spec = cas_renewd::fleet::FleetSpec {
        endpoints: etcd.endpoints(),
        prefix: prefix.into(),
        ca_file: None,
        client_cert: None,
        lease_ttl: std::time::Duration::from_secs(5),
        sealing_key: cas_renewd::fleet::SealingKey::from_bytes([7; 32]),
        host_name: host.into(),
    };
    cas_renewd::fleet::etcd::EtcdFleet::connect(&spec)
        .await
        .expect("connect")
}

/// The fence: a write needs the lock taken at its revision and the journal as
/// last read; a lost lock or a journal written meanwhile fails the write; a
/// lease etcd stopped confirming stops paid calls.
#[tokio::test(flavor = "multi_thread")]
async fn shared_writes_are_fenced_by_the_lock_and_the_journal_revision() {
    use cas_renewd::fleet::FleetError;
    let Some(mut etcd) = EtcdCluster::single() else {
        return;
    };
    let a = client(&etcd, "/cas-renewd/fence", "a").await;
    let b = client(&etcd, "/cas-renewd/fence", "b").await;
    let journal = a.layout().journal("www");
    let put = |v: &str| vec![(journal.clone(), v.as_bytes().to_vec())];
    let rev_a = a.try_lock("www").await.expect("etcd").expect("free");
    let lease_a = rev_a.lease;
    let rev_a = rev_a.rev;
    let holder = b.try_lock("www").await.expect("etcd").expect_err("held");
    assert_eq!(holder.host, "a");
    assert!(matches!(
        b.fenced_put("www", rev_a + 1, 0, put("b")).await,
        Err(FleetError::LostLock { .. })
    ));
    let j1 = a
        .fenced_put("www", rev_a, 0, put("a1"))
        .await
        .expect("ours");
    assert!(
        matches!(
            a.fenced_put("www", rev_a, 0, put("stale")).await,
            Err(FleetError::Conflict { .. })
        ),
        "a write from a stale read"
    );
    a.lease_alive("www", lease_a).expect("a fresh lease");
    // The lock moves to b (a's was released, as when its lease expires).
    a.unlock("www", rev_a).await.expect("unlock");
    let held_b = b.try_lock("www").await.expect("etcd").expect("free again");
    let rev_b = held_b.rev;
    match a.fenced_put("www", rev_a, j1, put("a2")).await {
        Err(FleetError::LostLock { holder, .. }) => assert_eq!(holder, "b"),
        other => panic!("a wrote without the lock: {other:?}"),
    }
    b.fenced_put("www", rev_b, j1, put("b1"))
        .await
        .expect("b's turn");
    assert_eq!(
        a.get(&journal).await.expect("get").value.as_deref(),
        Some(&b"b1"[..])
    );
    // etcd gone: within half the TTL the lease is no longer trusted for a paid call.
    etcd.stop_all();
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert!(matches!(
        b.lease_alive("www", held_b.lease),
        Err(FleetError::LeaseUncertain { .. })
    ));
}

/// The issued chain in etcd is bound to its sealed key: a chain changed there
/// does not open, nothing is installed and nothing is paid.
#[tokio::test(flavor = "multi_thread")]
async fn a_chain_changed_in_etcd_is_refused() {
    let Some(etcd) = EtcdCluster::single() else {
        return;
    };
    let (env, hosts) = same_key_fleet(&etcd, 2).await;
    let first = all_at_once(&hosts[..1], &["once"]).await;
    assert!(first[0].status.success(), "{}", show(&first[0]));
    let calls = renew_calls(&env);
    let c = client(&etcd, "/cas-renewd/test", "intruder").await;
    let issued_key = c.layout().issued("www");
    let journal_key = c.layout().journal("www");
    let mut issued: serde_json::Value = serde_json::from_slice(
        &c.get(&issued_key)
            .await
            .expect("get")
            .value
            .expect("issued"),
    )
    .expect("json");
    let chain = issued["fullchain_pem"].as_str().expect("chain").to_owned();
    issued["fullchain_pem"] = format!("{chain}\n").into();
    let journal = c.get(&journal_key).await.expect("get");
    let lock = c.try_lock("www").await.expect("etcd").expect("free").rev;
    c.fenced_put(
        "www",
        lock,
        journal.mod_revision,
        vec![
            (journal_key, journal.value.expect("journal")),
            (issued_key, serde_json::to_vec(&issued).expect("json")),
        ],
    )
    .await
    .expect("tampered");
    c.unlock("www", lock).await.expect("unlock");
    let o = &all_at_once(&hosts[1..], &["once"]).await[0];
    assert!(!o.status.success(), "{}", show(o));
    assert!(show(o).contains("does not open"), "{}", show(o));
    assert!(
        !hosts[1].out.join("www/cert.pem").exists(),
        "nothing installed"
    );
    assert_eq!(renew_calls(&env), calls, "nothing paid");
}

/// The lease the lock of `cert` under `prefix` sits on, read straight from etcd.
async fn lock_lease(etcd: &EtcdCluster, key: &str) -> i64 {
    let mut c = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("connect");
    let r = c.get(key, None).await.expect("get");
    r.kvs().first().expect("the lock").lease()
}

/// A paid call is guarded by the lease the certificate's lock sits on, not by
/// whatever lease the process holds now: once that lease ended, a new lease
/// granted for another certificate's lock does not vouch for this one.
#[tokio::test(flavor = "multi_thread")]
async fn a_new_lease_does_not_vouch_for_a_lock_on_an_ended_one() {
    let Some(etcd) = EtcdCluster::single() else {
        return;
    };
    let a = client(&etcd, "/cas-renewd/lease", "a").await;
    let held = a.try_lock("www").await.expect("etcd").expect("free");
    let l1 = lock_lease(&etcd, &a.layout().lock("www")).await;
    let mut raw = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("connect");
    raw.lease_revoke(l1).await.expect("revoke");
    // The keepalive (every third of the 5 s TTL) sees the lease gone.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    a.try_lock("api").await.expect("etcd").expect("free");
    let l2 = lock_lease(&etcd, &a.layout().lock("api")).await;
    assert_ne!(l1, l2, "a new lease for the new lock");
    assert!(
        matches!(
            a.lease_alive("www", held.lease),
            Err(cas_renewd::fleet::FleetError::LostLock { .. })
        ),
        "the lock of www sat on a lease that ended"
    );
    a.lease_alive("api", l2).expect("api's lease is fresh");
}

/// A client dropped (the daemon's store replaced on reload) stops keeping its
/// lease alive: its locks go within the TTL instead of never.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_client_lets_its_locks_go() {
    let Some(etcd) = EtcdCluster::single() else {
        return;
    };
    let a = client(&etcd, "/cas-renewd/drop", "a").await;
    let b = client(&etcd, "/cas-renewd/drop", "b").await;
    a.try_lock("www").await.expect("etcd").expect("free");
    drop(a);
    // TTL 5 s: the lock must be free by then (plus a margin for etcd's expiry).
    let until = std::time::Instant::now() + std::time::Duration::from_secs(8);
    loop {
        match b.try_lock("www").await.expect("etcd") {
            Ok(_) => break,
            Err(holder) => assert!(
                std::time::Instant::now() < until,
                "the dropped client's lock is still held by {}",
                holder.host
            ),
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

/// The sealed keys of finished attempts leave etcd; the key of the attempt in
/// flight stays, and nothing is deleted once the journal moved on.
#[tokio::test(flavor = "multi_thread")]
async fn the_sealed_keys_of_finished_attempts_are_pruned() {
    let Some(etcd) = EtcdCluster::single() else {
        return;
    };
    let a = client(&etcd, "/cas-renewd/prune", "a").await;
    let l = a.layout().clone();
    let held = a.try_lock("www").await.expect("etcd").expect("free");
    let puts = vec![
        (l.journal("www"), b"j1".to_vec()),
        (l.attempt_key("www", "old"), b"sealed-old".to_vec()),
        (l.attempt_key("www", "cur"), b"sealed-cur".to_vec()),
    ];
    let j1 = a.fenced_put("www", held.rev, 0, puts).await.expect("ours");
    // A journal read before it moved on deletes nothing.
    let j2 = a
        .fenced_put(
            "www",
            held.rev,
            j1,
            vec![(l.journal("www"), b"j2".to_vec())],
        )
        .await
        .expect("ours");
    assert_eq!(
        a.prune_attempt_keys("www", j1, Some("cur"))
            .await
            .expect("etcd"),
        0
    );
    assert_eq!(
        a.prune_attempt_keys("www", j2, Some("cur"))
            .await
            .expect("etcd"),
        1
    );
    let left = a.list(&l.attempt_keys("www")).await.expect("list");
    let names: Vec<&str> = left.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, [l.attempt_key("www", "cur")]);
    assert_eq!(
        a.prune_attempt_keys("www", j2, None).await.expect("etcd"),
        1
    );
    assert!(
        a.list(&l.attempt_keys("www"))
            .await
            .expect("list")
            .is_empty()
    );
}

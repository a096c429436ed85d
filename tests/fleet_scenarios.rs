//! Fleet scenarios at scale (issue 13): three real daemons per test against one
//! simulator and real etcd members on loopback ports. 20 certificates started at
//! the same instant, 30 SIGKILLs of lock holders, etcd stopped during a pass, a
//! lost member of a 3-member cluster, and hosts whose clocks are 10 minutes off.
//! Every test checks one paid renew call per order and byte-identical matching
//! pairs on every host, and prints a `figures:` line for the README. The harness
//! (hosts, the fleet, what is read back) is in `fleet_scenarios/harness.rs`.
#![cfg(feature = "fleet")]

mod common;
#[path = "fleet_scenarios/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::etcd::EtcdCluster;
use harness::{Fleet, PREFIX, libfaketime, log_clock_skew};
use rand::{Rng, SeedableRng};

#[tokio::test(flavor = "multi_thread")]
async fn twenty_certificates_on_three_hosts_started_together_renew_once_each() {
    let Some(etcd) = EtcdCluster::single() else {
        return;
    };
    let mut f = Fleet::new(20, 3, 3, etcd.endpoints()).await;
    let started = Instant::now();
    f.start_all();
    f.wait_converged(Duration::from_secs(90)).await;
    let took = started.elapsed();
    let calls = f.renew_calls();
    println!(
        "figures: fleet 3 hosts x 20 certificates started together: {} renew calls for {} orders (max {} per order); all hosts converged in {:.1} s; first to last host install of a version: {:.2} s at most",
        f.renew_total(),
        calls.len(),
        calls.values().max().copied().unwrap_or(0),
        took.as_secs_f64(),
        f.install_spread().as_secs_f64()
    );
    f.assert_one_call_per_order();
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_sigkills_of_lock_holders_spend_once_and_converge() {
    let Some(etcd) = EtcdCluster::single() else {
        return;
    };
    // Slow issuance (25 polls) keeps renewals, and so lock holders, in flight
    // while the kills land.
    let mut f = Fleet::new(12, 25, 3, etcd.endpoints()).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let started = Instant::now();
    f.start_all();
    let (mut kills, mut looks) = (0, 0);
    while kills < 30 && f.converged().is_err() {
        looks += 1;
        assert!(looks < 1000, "30 kills should not take {looks} looks");
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..700))).await;
        let holders = f.lock_holders().await;
        if holders.is_empty() {
            continue;
        }
        let victim = &holders[rng.random_range(0..holders.len())];
        let i = f
            .host_index(victim)
            .expect("a lock holder is one of our hosts");
        f.hosts[i].kill();
        kills += 1;
        // Back after a moment, as systemd's Restart= would bring it.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
        f.hosts[i].start();
    }
    f.wait_converged(Duration::from_secs(120)).await;
    println!(
        "figures: fleet SIGKILL campaign: {kills} lock holders killed at random moments (seed 13) over 12 certificates on 3 hosts, {:.1} s to convergence; {} renew calls for {} orders; {} certificate(s) went through an unclear intent; every host byte-identical",
        started.elapsed().as_secs_f64(),
        f.renew_total(),
        f.renew_calls().len(),
        f.unclear_certs()
    );
    assert_eq!(kills, 30, "the renewals ended before 30 kills could land");
    f.assert_one_call_per_order();
}

#[tokio::test(flavor = "multi_thread")]
async fn etcd_stopped_during_a_pass_pays_nothing_until_it_returns() {
    let Some(mut etcd) = EtcdCluster::single() else {
        return;
    };
    let mut f = Fleet::new(6, 15, 3, etcd.endpoints()).await;
    // Stop etcd once the pass is spending: some orders renewed, not all.
    f.start_all_until_spending().await;
    etcd.stop_all();
    // A call whose journal write reached etcd just before the stop may still be
    // on the wire; after that, nothing.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let at_stop = f.renew_total();
    // Longer than the lease: a host that still believed its lease alive has
    // had time to find out.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let while_down = f.renew_total() - at_stop;
    etcd.start_all();
    let back = Instant::now();
    f.wait_converged(Duration::from_secs(90)).await;
    println!(
        "figures: fleet etcd stopped during a pass: {at_stop} of 6 orders renewed when it stopped, {while_down} renew calls in the 8 s it was down, converged {:.1} s after it returned; {} renew calls for {} orders; {} certificate(s) left unclear by a lost etcd answer (settled after unclear_retry_after)",
        back.elapsed().as_secs_f64(),
        f.renew_total(),
        f.renew_calls().len(),
        f.unclear_certs()
    );
    assert!(
        at_stop < 6,
        "the pass had finished before etcd stopped: no test"
    );
    assert_eq!(while_down, 0, "paid calls while etcd was down");
    f.assert_one_call_per_order();
}

#[tokio::test(flavor = "multi_thread")]
async fn one_member_of_three_lost_work_goes_on() {
    let Some(mut cluster) = EtcdCluster::three() else {
        return;
    };
    let mut f = Fleet::new(6, 10, 3, cluster.endpoints()).await;
    f.start_all_until_spending().await;
    // The leader: its loss also means an election while the hosts work.
    let victim = leader(&cluster).await;
    cluster.kill_member(victim);
    let at_kill = f.renew_total();
    let started = Instant::now();
    f.wait_converged(Duration::from_secs(90)).await;
    println!(
        "figures: fleet 3-member etcd, member {victim} (the leader) killed with {at_kill} of 6 orders renewed: converged {:.1} s later; {} renew calls for {} orders",
        started.elapsed().as_secs_f64(),
        f.renew_total(),
        f.renew_calls().len()
    );
    f.assert_one_call_per_order();
}

/// The member the cluster has elected leader (as its own status says); member 0
/// when none says so.
async fn leader(cluster: &EtcdCluster) -> usize {
    for (i, e) in cluster.endpoints().iter().enumerate() {
        let Ok(mut c) = etcd_client::Client::connect([e.as_str()], None).await else {
            continue;
        };
        if let Ok(s) = c.status().await
            && s.header().is_some_and(|h| h.member_id() == s.leader())
        {
            return i;
        }
    }
    0
}

#[tokio::test(flavor = "multi_thread")]
async fn hosts_ten_minutes_off_still_pay_once() {
    let Some(faketime) = libfaketime() else {
        return;
    };
    let Some(etcd) = EtcdCluster::single() else {
        return;
    };
    let mut f = Fleet::new(4, 3, 3, etcd.endpoints()).await;
    // h1 10 minutes ahead, h2 10 minutes behind (the simulator, like CAS, accepts
    // a signature timestamp up to 15 minutes off); monotonic time stays true, as
    // a wrong wall clock leaves it.
    for (i, offset) in [(1, "+10m"), (2, "-10m")] {
        f.hosts[i].env = vec![
            ("LD_PRELOAD".into(), faketime.display().to_string()),
            ("FAKETIME".into(), offset.into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
        ];
    }
    let started = Instant::now();
    f.start_all();
    f.wait_converged(Duration::from_secs(90)).await;
    println!(
        "figures: fleet with clocks +10 min and -10 min on two of 3 hosts: {} renew calls for {} orders, converged in {:.1} s",
        f.renew_total(),
        f.renew_calls().len(),
        started.elapsed().as_secs_f64()
    );
    f.assert_one_call_per_order();
    // The skew took hold: each host's log lines carry its own clock.
    for (i, want) in [(1, 600), (2, -600)] {
        let skew = log_clock_skew(&f.hosts[i].logs());
        assert!(
            (skew - want).abs() < 120,
            "{}: log clock {skew} s off",
            f.hosts[i].name
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_checks_etcd_the_lease_and_the_sealing_key() {
    let Some(mut etcd) = EtcdCluster::single() else {
        return;
    };
    let mut f = Fleet::new(1, 1, 2, etcd.endpoints()).await;
    f.give_own_key(1);
    let status = |d: &BTreeMap<String, (String, String)>, check: &str| {
        d.get(check)
            .unwrap_or_else(|| panic!("no {check} check in {d:?}"))
            .clone()
    };
    // Nothing in etcd yet: every host's key is fine until one seals the check.
    let d = f.doctor(0).await;
    assert_eq!(status(&d, "etcd").0, "ok", "{d:?}");
    assert_eq!(status(&d, "fleet lease").0, "ok", "{d:?}");
    assert_eq!(status(&d, "sealing key").0, "ok", "{d:?}");
    // The check value as the first daemon seals it, with the fleet's key.
    let bytes: [u8; 32] = std::fs::read(f.env.path("fleet.key"))
        .expect("key")
        .try_into()
        .expect("32 bytes");
    let (cert, version) = cas_renewd::fleet::layout::CHECK_BINDING;
    let sealed = cas_renewd::fleet::SealingKey::from_bytes(bytes)
        .seal(cert, version, cas_renewd::fleet::layout::CHECK_TEXT)
        .expect("seal");
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("etcd client");
    client
        .put(format!("{PREFIX}/sealing-check"), sealed, None)
        .await
        .expect("put");
    let d = f.doctor(0).await;
    assert_eq!(status(&d, "sealing key").0, "ok", "{d:?}");
    assert!(status(&d, "sealing key").1.contains("the fleet's"), "{d:?}");
    let d = f.doctor(1).await;
    let (st, msg) = status(&d, "sealing key");
    assert_eq!(st, "fail", "{d:?}");
    assert!(msg.contains("not the key the other hosts use"), "{msg}");
    etcd.stop_all();
    let d = f.doctor(0).await;
    assert_eq!(status(&d, "etcd").0, "fail", "{d:?}");
    assert!(
        !d.contains_key("fleet lease"),
        "skipped without etcd: {d:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "fails: after the loss the paying host's lock and shared journal are gone, another host adopts the order without its key, the paying host's next load takes that shared phase over its own attempt, and every host ends blocked (renewed elsewhere, key not available) although the key is in the paying host's state_dir; still one paid call"]
async fn etcd_data_lost_during_a_pass_spends_once_and_converges() {
    let Some(mut etcd) = EtcdCluster::single() else {
        return;
    };
    let mut f = Fleet::new(6, 15, 3, etcd.endpoints()).await;
    f.start_all_until_spending().await;
    // Every shared journal, sealed key and lock gone, as after losing every
    // member without a snapshot: a new, empty cluster on the same addresses.
    etcd.stop_all();
    let at_loss = f.renew_total();
    std::fs::remove_dir_all(&etcd.members[0].data_dir).expect("wipe etcd data");
    etcd.start_all();
    let back = Instant::now();
    f.wait_converged(Duration::from_secs(90)).await;
    println!(
        "figures: fleet etcd data lost during a pass ({at_loss} of 6 orders renewed then): converged {:.1} s after an empty etcd came up; {} renew calls for {} orders",
        back.elapsed().as_secs_f64(),
        f.renew_total(),
        f.renew_calls().len()
    );
    f.assert_one_call_per_order();
}

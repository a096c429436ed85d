//! Notifications end to end: the real binary against the simulator and local
//! receivers (webhook and robots checking their documented signatures, an SMTP
//! sink with STARTTLS under a test CA): `notify --test` per channel, a renewal and
//! a blocked certificate told once a day, retries, and no secret in any message.

mod common;
#[path = "common/receivers.rs"]
mod receivers;

use std::os::unix::fs::PermissionsExt as _;

use common::{Cert, SECRET, TestEnv, show};
use receivers::{Expect, Robots, SmtpSink};

const SMTP_PASSWORD: &str = "smtp-password-0123456789";

fn write_secret(w: &TestEnv, name: &str, value: &str) {
    let p = w.path(name);
    std::fs::write(&p, format!("{value}\n")).expect("write secret");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// The `notify:` section for every channel type at `robots` and `smtp`; secrets
/// and robot URLs in files under `{d}` (see [`write_files`]).
fn all_channels(robots: &Robots, smtp_port: u16, starttls: bool) -> String {
    format!(
        "notify:\n\
         \x20 - {{ type: webhook, url: \"{}\", secret_file: {{d}}/webhook.secret }}\n\
         \x20 - {{ type: dingtalk, url_file: {{d}}/dingtalk.url, secret_file: {{d}}/dingtalk.secret }}\n\
         \x20 - {{ type: feishu, url_file: {{d}}/feishu.url, secret_file: {{d}}/feishu.secret }}\n\
         \x20 - {{ type: wecom, url_file: {{d}}/wecom.url }}\n\
         \x20 - {{ type: smtp, host: 127.0.0.1, port: {smtp_port}, tls: {}, from: \"cas-renewd <ops@example.com>\", to: [admin@example.com], username: ops, password_file: {{d}}/smtp.password, ca_file: {{d}}/ca.pem }}\n",
        robots.url("/webhook"),
        if starttls { "starttls" } else { "none" },
    )
}

/// The files `all_channels` names, with `e`'s secrets (which may differ from
/// what the receivers expect).
fn write_files(w: &TestEnv, robots: &Robots, e: &Expect, ca_pem: &str) {
    write_secret(w, "webhook.secret", &e.webhook_secret);
    write_secret(
        w,
        "dingtalk.url",
        &format!(
            "{}?access_token={}",
            robots.url("/dingtalk/robot/send"),
            e.ding_token
        ),
    );
    write_secret(w, "dingtalk.secret", &e.ding_secret);
    write_secret(
        w,
        "feishu.url",
        &robots.url(&format!("/feishu/open-apis/bot/v2/hook/{}", e.feishu_hook)),
    );
    write_secret(w, "feishu.secret", &e.feishu_secret);
    write_secret(
        w,
        "wecom.url",
        &format!(
            "{}?key={}",
            robots.url("/wecom/cgi-bin/webhook/send"),
            e.wecom_key
        ),
    );
    write_secret(w, "smtp.password", SMTP_PASSWORD);
    std::fs::write(w.path("ca.pem"), ca_pem).expect("ca");
}

#[tokio::test(flavor = "multi_thread")]
async fn notify_test_reaches_every_channel_with_valid_signatures_and_starttls() {
    let robots = Robots::start(Expect::default()).await;
    let smtp = SmtpSink::start(true).await;
    let w = TestEnv::builder("orders: []\n")
        .extra(&all_channels(&robots, smtp.port, true))
        .cert(Cert::new("www", "www.example.com"))
        .start()
        .await;
    write_files(&w, &robots, &Expect::default(), &smtp.ca_pem);
    let o = w.run(&["notify", "--test"]).await;
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for line in [
        "webhook-1 (webhook): ok",
        "dingtalk-2 (dingtalk): ok",
        "feishu-3 (feishu): ok",
        "wecom-4 (wecom): ok",
        "smtp-5 (smtp): ok",
    ] {
        assert!(out.contains(line), "{line} missing:\n{}", show(&o));
    }
    let got = robots.received();
    let robots_seen: Vec<&str> = got.iter().map(|r| r.robot).collect();
    assert_eq!(robots_seen, ["webhook", "dingtalk", "feishu", "wecom"]);
    for r in &got {
        assert_eq!(r.verdict, Ok(()), "{}: {}", r.robot, r.raw);
    }
    let hook = &got[0].body;
    for field in ["event", "cert", "domain", "message", "not_after", "time"] {
        assert!(
            hook.get(field).is_some(),
            "webhook body lacks {field}: {hook}"
        );
    }
    assert_eq!(hook["event"], "test");
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let m = &mails[0];
    assert!(m.tls, "the message went over STARTTLS");
    assert_eq!(
        m.auth.as_deref(),
        Some(format!("\0ops\0{SMTP_PASSWORD}").as_str())
    );
    assert_eq!(m.to, ["<admin@example.com>"]);
    assert!(m.data.contains("Subject: cas-renewd: test"), "{}", m.data);
    // Nothing of the channels' secrets in the output or the log.
    let all = format!("{}{}", out, String::from_utf8_lossy(&o.stderr));
    let e = Expect::default();
    for s in [
        &e.ding_token,
        &e.ding_secret,
        &e.feishu_hook,
        &e.feishu_secret,
        &e.wecom_key,
        &e.webhook_secret,
    ] {
        assert!(!all.contains(s.as_str()), "{s} leaked:\n{all}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_secrets_and_a_relay_without_starttls_fail_per_channel() {
    let robots = Robots::start(Expect::default()).await;
    // A relay that does not offer STARTTLS: cas-renewd must not fall back to plain text.
    let smtp = SmtpSink::start(false).await;
    let w = TestEnv::builder("orders: []\n")
        .extra(&all_channels(&robots, smtp.port, true))
        .cert(Cert::new("www", "www.example.com"))
        .start()
        .await;
    let wrong = Expect {
        ding_secret: "SECwrong-secret-000000".into(),
        feishu_secret: "feishu-wrong-000000".into(),
        ..Expect::default()
    };
    write_files(&w, &robots, &wrong, &smtp.ca_pem);
    let o = w.run(&["notify", "--test"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("webhook-1 (webhook): ok"), "{out}");
    assert!(out.contains("wecom-4 (wecom): ok"), "{out}");
    assert!(
        out.contains("dingtalk-2 (dingtalk): FAILED: the receiver refused the message: ")
            && out.contains("sign not match"),
        "{out}"
    );
    assert!(
        out.contains("feishu-3 (feishu): FAILED: ") && out.contains("sign match fail"),
        "{out}"
    );
    assert!(out.contains("smtp-5 (smtp): FAILED: "), "{out}");
    assert!(smtp.mails().is_empty(), "no mail in clear text");
    // The robots refused each attempt: the message was retried, then given up.
    let ding = robots
        .received()
        .iter()
        .filter(|r| r.robot == "dingtalk")
        .count();
    assert_eq!(ding, 4, "four attempts");
    assert!(
        !out.contains("SECwrong-secret") && !out.contains("ding-token"),
        "{out}"
    );
}

const ORDERS: &str = "orders:\n  - { domain: www.example.com, expires_in: 20d }\nissuance: { polls_before_issued: 1 }\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_renewal_and_a_block_are_told_once_a_day_without_secrets_or_keys() {
    let robots = Robots::start(Expect::default()).await;
    // The first delivery fails: it is retried with backoff.
    robots.fail_webhook(1);
    let w = TestEnv::builder(ORDERS)
        .extra(&format!(
            "notify:\n  - {{ type: webhook, url: \"{}\", secret_file: {{d}}/webhook.secret }}\n",
            robots.url("/webhook")
        ))
        .certs([
            Cert::new("www", "www.example.com"),
            Cert::new("gone", "gone.example.com"),
        ])
        .start()
        .await;
    write_secret(&w, "webhook.secret", &Expect::default().webhook_secret);
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "gone is blocked: {}", show(&o));
    let got = robots.received();
    let events: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            (
                r.body["event"].as_str().unwrap_or("").to_owned(),
                r.body["cert"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        events,
        [
            ("renewed".to_owned(), "www".to_owned()),
            ("renewed".to_owned(), "www".to_owned()),
            ("blocked".to_owned(), "gone".to_owned()),
        ],
        "one retry after the 500, then the block: {got:#?}"
    );
    assert!(got.iter().all(|r| r.verdict.is_ok()), "{got:#?}");
    let renewed = &got[1].body;
    assert_eq!(renewed["domain"], "www.example.com");
    let not_after = renewed["not_after"].as_str().expect("not_after is set");
    assert!(
        chrono::DateTime::parse_from_rfc3339(not_after).is_ok(),
        "{not_after}"
    );
    assert!(chrono::DateTime::parse_from_rfc3339(renewed["time"].as_str().expect("time")).is_ok());
    let blocked = &got[2].body;
    assert!(blocked["not_after"].is_null(), "{blocked}");
    assert!(
        blocked["message"]
            .as_str()
            .is_some_and(|m| m.contains("no order for gone.example.com")),
        "{blocked}"
    );
    // A second pass the same day: gone is still blocked, but nobody is told twice.
    let o = w.once().await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert_eq!(robots.received().len(), 3, "{:#?}", robots.received());
    assert!(w.path("state/notify-sent.json").exists());
    // No message holds the AccessKey secret, the webhook secret or the private key.
    let key = std::fs::read_to_string(w.path("out/www/privkey.pem")).expect("privkey.pem");
    let key_body: Vec<&str> = key.lines().filter(|l| !l.starts_with("-----")).collect();
    for r in robots.received() {
        assert!(!r.raw.contains(SECRET), "{}", r.raw);
        assert!(
            !r.raw.contains(&Expect::default().webhook_secret),
            "{}",
            r.raw
        );
        assert!(!r.raw.contains("PRIVATE KEY"), "{}", r.raw);
        for l in &key_body {
            assert!(!r.raw.contains(l), "a line of the private key in {}", r.raw);
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn quota_low_is_told_when_a_plan_runs_low() {
    // A free certificate re-applied for: DescribePackageState reports the yearly
    // free quota before the paid call.
    let robots = Robots::start(Expect::default()).await;
    let w = TestEnv::builder(
        "orders:\n  - { domain: www.example.com, expires_in: 20d, product_code: digicert-free-1-free }\nissuance: { polls_before_issued: 1, validation: dns }\n",
    )
    .extra(&format!(
        "notify:\n  - {{ type: webhook, url: \"{}\", secret_file: {{d}}/webhook.secret, events: [quota_low], quota_low_at: 20 }}\n",
        robots.url("/webhook")
    ))
    .cert(Cert::new("www", "www.example.com").extra(", renewal: { mode: reapply }, validation: { method: dns }"))
    .start()
    .await;
    write_secret(&w, "webhook.secret", &Expect::default().webhook_secret);
    let o = w.once().await;
    let got = robots.received();
    assert_eq!(got.len(), 1, "{got:#?}\n{}", show(&o));
    let b = &got[0].body;
    assert_eq!(b["event"], "quota_low");
    assert_eq!(b["cert"], "www");
    assert_eq!(b["domain"], "www.example.com");
    assert_eq!(b["product_code"], "digicert-free-1-free");
    // The free quota: 20 a year, none used yet, and the channel's threshold is 20.
    assert_eq!(b["units_left"], 20);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_tells_of_its_renewal_and_keeps_its_metrics() {
    let robots = Robots::start(Expect::default()).await;
    let w = TestEnv::builder(ORDERS)
        .extra(&format!(
            "schedule: {{ cron: \"0 17 3 * * *\", jitter: 0s, run_at_start: true }}\nnotify:\n  - {{ type: webhook, url: \"{}\", secret_file: {{d}}/webhook.secret, events: [renewed, failed] }}\n",
            robots.url("/webhook")
        ))
        .cert(Cert::new("www", "www.example.com"))
        .metrics()
        .start()
        .await;
    write_secret(&w, "webhook.secret", &Expect::default().webhook_secret);
    let mut child = common::DaemonProcess::spawn(&w, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while robots.received().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no notification within 30 s:\n{}",
            child.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let got = robots.received();
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!(
        (got[0].body["event"].as_str(), got[0].body["cert"].as_str()),
        (Some("renewed"), Some("www"))
    );
    assert_eq!(got[0].verdict, Ok(()));
    // The metrics behind the notifying observer still count the paid call.
    let m = child.scrape().await;
    assert!(
        m.contains("cas_renewd_renew_orders_total{cert=\"www\"} 1"),
        "{m}"
    );
    assert!(child.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_certificate_expiring_without_a_renewal_on_the_way_is_told() {
    let robots = Robots::start(Expect::default()).await;
    // A free certificate CAS does not renew, five days from expiry, no `reapply`.
    let w = TestEnv::builder(
        "orders:\n  - { domain: www.example.com, expires_in: 5d, product_code: digicert-free-1-free }\n",
    )
    .extra(&format!(
        "notify:\n  - {{ type: webhook, url: \"{}\", secret_file: {{d}}/webhook.secret, expiring_within: 7d }}\n  - {{ type: webhook, name: late, url: \"{}\", secret_file: {{d}}/webhook.secret, events: [expiring], expiring_within: 2d }}\n",
        robots.url("/webhook"),
        robots.url("/webhook")
    ))
    .cert(Cert::new("www", "www.example.com"))
    .start()
    .await;
    write_secret(&w, "webhook.secret", &Expect::default().webhook_secret);
    // The pass installs the issued certificate, then finds it due and blocked; a
    // second pass the same day tells nobody again.
    let first = w.once().await;
    let second = w.once().await;
    let events: Vec<String> = robots
        .received()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r.body["event"].as_str().unwrap_or(""),
                r.body["cert"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        events,
        ["blocked www", "expiring www"],
        "the 2-day channel stays quiet:\n{}\n{}",
        show(&first),
        show(&second)
    );
    let expiring = &robots.received()[1].body;
    let left = expiring["seconds_left"].as_i64().expect("seconds_left");
    assert!((4 * 86_400..=5 * 86_400).contains(&left), "{expiring}");
    assert!(
        expiring["message"]
            .as_str()
            .is_some_and(|m| m.contains("did not renew it")),
        "{expiring}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_relay_without_tls_gets_the_mail_when_configured_so() {
    let smtp = SmtpSink::start(false).await;
    let w = TestEnv::builder("orders: []\n")
        .extra(&format!(
            "notify:\n  - {{ type: smtp, name: relay, host: 127.0.0.1, port: {}, tls: none, from: ops@example.com, to: [a@example.com, b@example.com] }}\n",
            smtp.port
        ))
        .cert(Cert::new("www", "www.example.com"))
        .start()
        .await;
    let o = w.run(&["notify", "--test"]).await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("relay (smtp): ok"),
        "{}",
        show(&o)
    );
    let mails = smtp.mails();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert!(!mails[0].tls && mails[0].auth.is_none());
    assert_eq!(mails[0].to, ["<a@example.com>", "<b@example.com>"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_notification_being_retried_goes_out_before_the_daemon_stops() {
    let robots = Robots::start(Expect::default()).await;
    // Two failures: the message is sent at once, then retried after 0.5 s and 1 s.
    robots.fail_webhook(2);
    let w = TestEnv::builder(ORDERS)
        .extra(&format!(
            "schedule: {{ cron: \"0 17 3 * * *\", jitter: 0s, run_at_start: true }}\nnotify:\n  - {{ type: webhook, url: \"{}\", secret_file: {{d}}/webhook.secret, events: [renewed] }}\n",
            robots.url("/webhook")
        ))
        .cert(Cert::new("www", "www.example.com"))
        .start()
        .await;
    write_secret(&w, "webhook.secret", &Expect::default().webhook_secret);
    let mut child = common::DaemonProcess::spawn(&w, &[]);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while robots.received().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no notification within 30 s:\n{}",
            child.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // SIGTERM while the first attempt has failed and the retries are still ahead.
    assert!(child.stop().success(), "{}", child.log());
    let got = robots.received();
    assert_eq!(
        got.len(),
        3,
        "the retries must go out before the daemon exits:\n{}",
        child.log()
    );
    assert_eq!(got[2].body["event"].as_str(), Some("renewed"));
}

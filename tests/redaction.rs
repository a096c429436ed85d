//! Secrets never reach the logs. Its own test binary: tracing caches which log
//! lines are enabled process-wide, so a thread-local subscriber is only reliable
//! when no other test runs beside it.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Fake, Reply, cas_for, throttled};

/// Captures every log line written while the test runs.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn logs_carry_request_ids_but_never_secrets_or_signatures() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let fake = rt.block_on(Fake::start());
    fake.script(
        "DescribeCertificateState",
        [
            throttled(),
            Reply::json(
                200,
                r#"{"RequestId":"OK-LOG","Type":"certificate","Certificate":"c","PrivateKey":"-----BEGIN PRIVATE KEY-----PRIVATEKEYBODY"}"#,
            ),
        ],
    );
    let c = cas_for(
        &fake,
        common::ACCESS_KEY_SECRET,
        Some("sts-token-secret-value"),
        3,
        Duration::from_secs(5),
    );
    let resp = rt.block_on(c.describe_certificate_state(5)).expect("ok");
    let wrong = cas_for(&fake, "wrong-secret-value", None, 1, Duration::from_secs(5));
    let _ = rt.block_on(wrong.describe_certificate_state(5));
    let logs = String::from_utf8(capture.0.lock().expect("lock").clone()).expect("utf8");
    assert!(logs.contains("OK-LOG"), "request id logged:\n{logs}");
    assert!(logs.contains("DescribeCertificateState"));
    assert!(
        logs.contains("signature mismatch"),
        "debug line for SignatureDoesNotMatch:\n{logs}"
    );
    let mut secrets = vec![
        common::ACCESS_KEY_SECRET.to_owned(),
        "wrong-secret-value".to_owned(),
        "sts-token-secret-value".to_owned(),
        "PRIVATEKEYBODY".to_owned(),
    ];
    for r in fake.received() {
        let auth = &r.headers["authorization"];
        secrets.push(
            auth.rsplit("Signature=")
                .next()
                .expect("signature")
                .to_owned(),
        );
    }
    for s in &secrets {
        assert!(
            !logs.contains(s.as_str()),
            "{s:?} leaked into logs:\n{logs}"
        );
    }
    assert!(!format!("{resp:?}").contains("PRIVATEKEYBODY"));
}

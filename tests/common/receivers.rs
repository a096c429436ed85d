//! Local receivers for the notification tests, on 127.0.0.1: one HTTP server
//! playing the generic webhook and the DingTalk, Feishu/Lark and WeCom robots,
//! each checking its signature the way the vendor documents it (computed here
//! independently of cas-renewd's code), and a small SMTP sink with STARTTLS under
//! a test CA.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use aws_lc_rs::hmac;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncRead, AsyncWrite, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;

/// What the robots expect; a test may configure cas-renewd with other values.
#[derive(Clone, Debug)]
pub struct Expect {
    pub webhook_secret: String,
    pub ding_token: String,
    pub ding_secret: String,
    pub feishu_hook: String,
    pub feishu_secret: String,
    pub wecom_key: String,
}

impl Default for Expect {
    fn default() -> Self {
        Expect {
            webhook_secret: "whsec-0123456789abcdef".into(),
            ding_token: "ding-token-0123456789".into(),
            ding_secret: "SECding0123456789abcdef".into(),
            feishu_hook: "feishu-hook-0123456789".into(),
            feishu_secret: "feishu-secret-0123456789".into(),
            wecom_key: "wecom-key-0123456789".into(),
        }
    }
}

/// One request a robot received and whether its signature checked.
#[derive(Clone, Debug)]
pub struct Received {
    pub robot: &'static str,
    pub raw: String,
    pub body: Value,
    pub verdict: Result<(), String>,
}

#[derive(Default)]
struct Inner {
    seen: Vec<Received>,
    /// The webhook answers 500 this many more times.
    webhook_failures: u32,
}

#[derive(Clone)]
struct Shared {
    expect: Expect,
    inner: Arc<Mutex<Inner>>,
}

pub struct Robots {
    pub addr: SocketAddr,
    shared: Shared,
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), msg)
        .as_ref()
        .to_vec()
}

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// Both vendors refuse a timestamp more than an hour away from their clock.
fn within_an_hour(ts: i64, now: i64) -> Result<(), String> {
    if (now - ts).abs() <= 3600 {
        Ok(())
    } else {
        Err(format!("timestamp {ts} is not within an hour of {now}"))
    }
}

impl Robots {
    pub async fn start(expect: Expect) -> Robots {
        let shared = Shared {
            expect,
            inner: Arc::default(),
        };
        let app = Router::new()
            .route("/webhook", post(webhook))
            .route("/dingtalk/robot/send", post(dingtalk))
            .route("/feishu/open-apis/bot/v2/hook/{id}", post(feishu))
            .route("/wecom/cgi-bin/webhook/send", post(wecom))
            .with_state(shared.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Robots { addr, shared }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.inner.lock().expect("lock").seen.clone()
    }

    /// The webhook answers 500 to the next `n` requests.
    pub fn fail_webhook(&self, n: u32) {
        self.shared.inner.lock().expect("lock").webhook_failures = n;
    }
}

/// A JSON answer (axum's `json` feature is off in this workspace).
type Answer = ([(axum::http::header::HeaderName, &'static str); 1], String);

fn answer_json(v: &Value) -> Answer {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
}

fn record(s: &Shared, robot: &'static str, raw: &Bytes, verdict: Result<(), String>) {
    let text = String::from_utf8_lossy(raw).into_owned();
    s.inner.lock().expect("lock").seen.push(Received {
        robot,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        raw: text,
        verdict,
    });
}

async fn webhook(State(s): State<Shared>, headers: HeaderMap, raw: Bytes) -> StatusCode {
    let want = hex::encode(hmac_sha256(s.expect.webhook_secret.as_bytes(), &raw));
    let got = headers
        .get("x-cas-renewd-signature")
        .and_then(|v| v.to_str().ok());
    let verdict = match got {
        Some(g) if g == want => Ok(()),
        other => Err(format!("signature {other:?}, want {want}")),
    };
    let ok = verdict.is_ok();
    record(&s, "webhook", &raw, verdict);
    let mut inner = s.inner.lock().expect("lock");
    if inner.webhook_failures > 0 {
        inner.webhook_failures -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if ok {
        StatusCode::OK
    } else {
        StatusCode::UNAUTHORIZED
    }
}

/// <https://open.dingtalk.com/document/robots/customize-robot-security-settings>:
/// `sign` = Base64(HMAC-SHA256(key = secret, "timestamp\nsecret")), ms timestamp.
async fn dingtalk(
    State(s): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    raw: Bytes,
) -> Answer {
    let e = &s.expect;
    let verdict = (|| {
        if q.get("access_token") != Some(&e.ding_token) {
            return Err("wrong access_token".to_owned());
        }
        let ts: i64 = q
            .get("timestamp")
            .and_then(|t| t.parse().ok())
            .ok_or("no timestamp")?;
        within_an_hour(ts / 1000, chrono::Utc::now().timestamp())?;
        let want = b64(&hmac_sha256(
            e.ding_secret.as_bytes(),
            format!("{ts}\n{}", e.ding_secret).as_bytes(),
        ));
        if q.get("sign") != Some(&want) {
            return Err("sign not match".to_owned());
        }
        let body: Value = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
        match (body["msgtype"].as_str(), body["text"]["content"].as_str()) {
            (Some("text"), Some(c)) if !c.is_empty() => Ok(()),
            _ => Err(format!("not a text message: {body}")),
        }
    })();
    let answer = match &verdict {
        Ok(()) => json!({"errcode": 0, "errmsg": "ok"}),
        Err(m) => json!({"errcode": 310000, "errmsg": m}),
    };
    record(&s, "dingtalk", &raw, verdict);
    answer_json(&answer)
}

/// <https://open.feishu.cn/document/client-docs/bot-v3/add-custom-bot>: `sign` =
/// Base64(HMAC-SHA256(key = "timestamp\nsecret", "")), seconds, in the body.
async fn feishu(State(s): State<Shared>, Path(id): Path<String>, raw: Bytes) -> Answer {
    let e = &s.expect;
    let verdict = (|| {
        if id != e.feishu_hook {
            return Err("unknown hook".to_owned());
        }
        let body: Value = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
        let ts: i64 = body["timestamp"]
            .as_str()
            .and_then(|t| t.parse().ok())
            .ok_or("no timestamp")?;
        within_an_hour(ts, chrono::Utc::now().timestamp())?;
        let want = b64(&hmac_sha256(
            format!("{ts}\n{}", e.feishu_secret).as_bytes(),
            b"",
        ));
        if body["sign"].as_str() != Some(want.as_str()) {
            return Err("sign match fail".to_owned());
        }
        match (body["msg_type"].as_str(), body["content"]["text"].as_str()) {
            (Some("text"), Some(t)) if !t.is_empty() => Ok(()),
            _ => Err(format!("not a text message: {body}")),
        }
    })();
    let answer = match &verdict {
        Ok(()) => json!({"code": 0, "msg": "success", "data": {}}),
        Err(m) => json!({"code": 19021, "msg": m}),
    };
    record(&s, "feishu", &raw, verdict);
    answer_json(&answer)
}

/// <https://developer.work.weixin.qq.com/document/path/91770>: the key in the URL;
/// `text.content` at most 2048 bytes.
async fn wecom(
    State(s): State<Shared>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    raw: Bytes,
) -> Answer {
    let verdict = (|| {
        if q.get("key") != Some(&s.expect.wecom_key) {
            return Err("invalid webhook url".to_owned());
        }
        let body: Value = serde_json::from_slice(&raw).map_err(|e| e.to_string())?;
        match (body["msgtype"].as_str(), body["text"]["content"].as_str()) {
            (Some("text"), Some(c)) if !c.is_empty() && c.len() <= 2048 => Ok(()),
            _ => Err(format!("not a valid text message: {body}")),
        }
    })();
    let answer = match &verdict {
        Ok(()) => json!({"errcode": 0, "errmsg": "ok"}),
        Err(m) => json!({"errcode": 93000, "errmsg": m}),
    };
    record(&s, "wecom", &raw, verdict);
    answer_json(&answer)
}

/// One message the SMTP sink accepted.
#[derive(Clone, Debug)]
pub struct Mail {
    /// Whether the message came after STARTTLS.
    pub tls: bool,
    /// The `AUTH PLAIN` credentials, decoded (`\0user\0password`).
    pub auth: Option<String>,
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

pub struct SmtpSink {
    pub port: u16,
    /// The test CA's certificate (PEM), for `ca_file`.
    pub ca_pem: String,
    mails: Arc<Mutex<Vec<Mail>>>,
}

impl SmtpSink {
    /// A sink on 127.0.0.1 that offers STARTTLS (`starttls`) or nothing but plain SMTP.
    pub async fn start(starttls: bool) -> SmtpSink {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let (ca_pem, acceptor) = test_tls();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mails: Arc<Mutex<Vec<Mail>>> = Arc::default();
        let m = mails.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let m = m.clone();
                let acceptor = starttls.then(|| acceptor.clone());
                tokio::spawn(async move {
                    if let Ok(Some(plain)) = converse(stream, acceptor.is_some(), false, &m).await
                        && let Some(a) = acceptor
                        && let Ok(tls) = a.accept(plain).await
                    {
                        let _ = converse(tls, false, true, &m).await;
                    }
                });
            }
        });
        SmtpSink {
            port,
            ca_pem,
            mails,
        }
    }

    pub fn mails(&self) -> Vec<Mail> {
        self.mails.lock().expect("lock").clone()
    }
}

/// A test CA and a server certificate for 127.0.0.1 and localhost signed by it.
fn test_tls() -> (String, tokio_rustls::TlsAcceptor) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca cert");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .expect("params");
    let cert = params.signed_by(&key, &issuer).expect("cert");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone(), ca_cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .expect("server config");
    (
        ca_cert.pem(),
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    )
}

/// One SMTP conversation. Returns the stream when the client asked for STARTTLS
/// (the caller upgrades it and converses again).
async fn converse<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    offer_starttls: bool,
    tls: bool,
    mails: &Mutex<Vec<Mail>>,
) -> std::io::Result<Option<S>> {
    let mut io = BufReader::new(io);
    if !tls {
        io.write_all(b"220 sink ESMTP\r\n").await?;
    }
    let mut mail = Mail {
        tls,
        auth: None,
        from: String::new(),
        to: vec![],
        data: String::new(),
    };
    let mut line = String::new();
    loop {
        line.clear();
        if io.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let cmd = line.trim_end().to_owned();
        let upper = cmd.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            if offer_starttls {
                b"250-sink\r\n250 STARTTLS\r\n"
            } else {
                b"250-sink\r\n250 AUTH PLAIN\r\n"
            }
        } else if upper == "STARTTLS" && offer_starttls {
            io.write_all(b"220 go ahead\r\n").await?;
            io.flush().await?;
            return Ok(Some(io.into_inner()));
        } else if let Some(b) = cmd.strip_prefix("AUTH PLAIN ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .unwrap_or_default();
            mail.auth = Some(String::from_utf8_lossy(&decoded).into_owned());
            b"235 ok\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            mail.from = cmd[10..].to_owned();
            b"250 ok\r\n"
        } else if upper.starts_with("RCPT TO:") {
            mail.to.push(cmd[8..].to_owned());
            b"250 ok\r\n"
        } else if upper == "DATA" {
            io.write_all(b"354 go on\r\n").await?;
            loop {
                line.clear();
                if io.read_line(&mut line).await? == 0 {
                    return Ok(None);
                }
                if line.trim_end() == "." {
                    break;
                }
                mail.data.push_str(&line);
            }
            mails.lock().expect("lock").push(mail.clone());
            b"250 queued\r\n"
        } else if upper == "QUIT" {
            io.write_all(b"221 bye\r\n").await?;
            return Ok(None);
        } else if upper == "RSET" || upper == "NOOP" {
            b"250 ok\r\n"
        } else {
            b"502 not implemented\r\n"
        };
        io.write_all(reply).await?;
        io.flush().await?;
    }
}

//! A scriptable stand-in for an Alibaba Cloud RPC endpoint on 127.0.0.1, for
//! client tests. It checks every request's ACS3 signature with the library's own
//! canonicalisation and records what it received.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use cas_renewd::cas::sign;

pub const ACCESS_KEY_ID: &str = "fake-access-key-id";
pub const ACCESS_KEY_SECRET: &str = "fake-access-key-secret-0123456789";

/// One canned answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Reply {
            status,
            body: body.into().into_bytes(),
            headers: vec![("content-type".into(), "application/json".into())],
            delay: Duration::ZERO,
        }
    }

    pub fn error(status: u16, code: &str, message: &str) -> Self {
        Reply::json(
            status,
            format!(
                r#"{{"RequestId":"REQ-{code}","HostId":"cas.aliyuncs.com","Code":"{code}","Message":"{message}","Recommend":"https://api.aliyun.com/troubleshoot?q={code}"}}"#
            ),
        )
    }

    pub fn with_header(mut self, k: &str, v: &str) -> Self {
        self.headers.push((k.into(), v.into()));
        self
    }

    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = d;
        self
    }
}

#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub action: String,
    pub query: Vec<(String, String)>,
    pub headers: HashMap<String, String>,
    pub body_len: usize,
    pub signature_ok: bool,
}

impl Received {
    pub fn param(&self, k: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
    }
}

type Responder = Box<dyn Fn(&Received) -> Reply + Send + Sync>;

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    scripts: HashMap<String, VecDeque<Reply>>,
    fallback: Option<Responder>,
}

#[derive(Clone)]
pub struct Fake {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl Fake {
    pub async fn start() -> Fake {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Fake { addr, inner }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A handle naming another server (the simulator), for [`cas_for`].
    pub fn at(url: String) -> Fake {
        let addr = url
            .trim_start_matches("http://")
            .parse()
            .expect("socket address");
        Fake {
            addr,
            inner: Arc::new(Mutex::new(Inner::default())),
        }
    }

    /// Queue answers for `action`, used in order before the fallback.
    pub fn script(&self, action: &str, replies: impl IntoIterator<Item = Reply>) {
        let mut g = self.inner.lock().expect("lock");
        g.scripts.entry(action.into()).or_default().extend(replies);
    }

    /// Answer every request not covered by a script.
    pub fn fallback(&self, f: impl Fn(&Received) -> Reply + Send + Sync + 'static) {
        self.inner.lock().expect("lock").fallback = Some(Box::new(f));
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("lock").received.clone()
    }

    pub fn count(&self, action: &str) -> usize {
        self.received()
            .iter()
            .filter(|r| r.action == action)
            .count()
    }
}

fn verify(method: &str, query: &[(String, String)], headers: &HeaderMap) -> bool {
    let Some(auth) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(sign::parse_authorization_v3)
    else {
        return false;
    };
    if auth.access_key_id != ACCESS_KEY_ID {
        return false;
    }
    let signed: Vec<(String, String)> = auth
        .signed_headers
        .iter()
        .filter_map(|h| {
            Some((
                h.clone(),
                headers.get(h.as_str())?.to_str().ok()?.to_owned(),
            ))
        })
        .collect();
    if signed.len() != auth.signed_headers.len() {
        return false;
    }
    let payload = headers
        .get("x-acs-content-sha256")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let sig = sign::sign_v3(
        &sign::V3Input {
            method,
            path: "/",
            query,
            headers: &signed,
            payload_hash: &payload,
        },
        ACCESS_KEY_SECRET.as_bytes(),
    );
    sign::constant_time_eq(&sig.signature, &auth.signature)
}

async fn handle(State(inner): State<Arc<Mutex<Inner>>>, req: Request) -> Response {
    let method = req.method().as_str().to_owned();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                sign::percent_decode(k, false),
                sign::percent_decode(v, false),
            )
        })
        .collect();
    let headers = req.headers().clone();
    let signature_ok = verify(&method, &query, &headers);
    let body = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let received = Received {
        method,
        action: headers
            .get("x-acs-action")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        query,
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body_len: body.len(),
        signature_ok,
    };
    let reply = {
        let mut g = inner.lock().expect("lock");
        g.received.push(received.clone());
        if !signature_ok {
            Reply::error(
                400,
                "SignatureDoesNotMatch",
                "Specified signature is not matched with our calculation. server string to sign is:ACS3-HMAC-SHA256\\n0000",
            )
        } else if let Some(r) = g
            .scripts
            .get_mut(&received.action)
            .and_then(VecDeque::pop_front)
        {
            r
        } else if let Some(f) = &g.fallback {
            f(&received)
        } else {
            Reply::error(404, "InvalidAction.NotFound", "Specified api is not found")
        }
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut resp = Response::builder().status(StatusCode::from_u16(reply.status).expect("status"));
    for (k, v) in &reply.headers {
        resp = resp.header(k, v);
    }
    resp.body(Body::from(reply.body)).expect("response")
}

/// A ListUserCertificateOrder fallback serving `n` orders by page (and an
/// account without V2.0 instances: ListInstances answers an empty list).
pub fn orders_fallback(n: usize) -> impl Fn(&Received) -> Reply + Send + Sync {
    move |r: &Received| {
        if r.action == "ListInstances" {
            return Reply::json(
                200,
                r#"{"RequestId":"INSTANCES-1","TotalCount":0,"CurrentPage":1,"ShowSize":50,"InstanceList":[]}"#,
            );
        }
        if r.action != "ListUserCertificateOrder" {
            return Reply::error(404, "InvalidAction.NotFound", "Specified api is not found");
        }
        let page: usize = r
            .param("CurrentPage")
            .and_then(|p| p.parse().ok())
            .unwrap_or(1);
        let size: usize = r
            .param("ShowSize")
            .and_then(|p| p.parse().ok())
            .unwrap_or(50);
        let start = (page - 1) * size;
        let items: Vec<String> = (start..(start + size).min(n))
            .map(|i| {
                format!(
                    r#"{{"OrderId":{},"Domain":"host-{i}.example.com","Status":"ISSUED","CertEndTime":{},"InstanceId":"cas-{i}"}}"#,
                    1000 + i,
                    1_900_000_000_000i64 + i as i64 * 86_400_000
                )
            })
            .collect();
        Reply::json(
            200,
            format!(
                r#"{{"RequestId":"LIST-{page}","TotalCount":{n},"ShowSize":{size},"CurrentPage":{page},"CertificateOrderList":[{}]}}"#,
                items.join(",")
            ),
        )
    }
}

/// A CAS client pointed at `fake`, signing with `secret` (and an STS token).
pub fn cas_for(
    fake: &Fake,
    secret: &str,
    token: Option<&str>,
    max_attempts: u32,
    timeout: Duration,
) -> cas_renewd::cas::api::Cas {
    cas_with_key(fake, ACCESS_KEY_ID, secret, token, max_attempts, timeout)
}

/// Like [`cas_for`] with another AccessKey id.
pub fn cas_with_key(
    fake: &Fake,
    key_id: &str,
    secret: &str,
    token: Option<&str>,
    max_attempts: u32,
    timeout: Duration,
) -> cas_renewd::cas::api::Cas {
    use cas_renewd::cas::client::{ApiClient, ClientSettings, RateLimiter};
    use cas_renewd::cas::credentials::{Credential, CredentialsProvider};
    let creds = CredentialsProvider::fixed(Credential {
        access_key_id: key_id.into(),
        access_key_secret: cas_renewd::secret::Secret::new(secret),
        security_token: token.map(cas_renewd::secret::Secret::new),
        expiration: None,
    });
    let settings = ClientSettings {
        endpoint: reqwest::Url::parse(&fake.url()).expect("url"),
        version: "2020-04-07",
        timeout,
        max_attempts,
    };
    let client = ApiClient::new(settings, Arc::new(creds), Arc::new(RateLimiter::new(100.0)))
        .expect("client");
    cas_renewd::cas::api::Cas::new(client)
}

/// A `Throttling.User` answer with a short rate-limit hint.
pub fn throttled() -> Reply {
    Reply::error(
        400,
        "Throttling.User",
        "Request was denied due to user flow control.",
    )
    .with_header(
        "x-ratelimit-user-api",
        "Limit:10,Remain:0,TimeLeft:20,Reset:1",
    )
}

/// Options for a hand-made signed request, to provoke signature errors.
pub struct Raw<'a> {
    pub action: &'a str,
    pub version: &'a str,
    pub params: Vec<(String, String)>,
    pub key_id: &'a str,
    pub secret: &'a str,
    pub date: String,
    pub nonce: String,
}

impl<'a> Raw<'a> {
    pub fn new(action: &'a str, key_id: &'a str, secret: &'a str) -> Self {
        Raw {
            action,
            version: "2020-04-07",
            params: Vec::new(),
            key_id,
            secret,
            date: chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            nonce: format!("{:032x}", rand::random::<u128>()),
        }
    }

    pub fn param(mut self, k: &str, v: &str) -> Self {
        self.params.push((k.into(), v.into()));
        self
    }

    /// Sends the request signed with ACS3-HMAC-SHA256; returns status and JSON body.
    pub async fn send(&self, base: &str) -> (u16, serde_json::Value) {
        let url = reqwest::Url::parse(base).expect("url");
        let host = format!(
            "{}:{}",
            url.host_str().expect("host"),
            url.port().expect("port")
        );
        let headers: Vec<(String, String)> = vec![
            ("host".into(), host),
            ("x-acs-action".into(), self.action.into()),
            ("x-acs-version".into(), self.version.into()),
            ("x-acs-date".into(), self.date.clone()),
            ("x-acs-signature-nonce".into(), self.nonce.clone()),
            (
                "x-acs-content-sha256".into(),
                sign::EMPTY_PAYLOAD_SHA256.into(),
            ),
        ];
        let sig = sign::sign_v3(
            &sign::V3Input {
                method: "POST",
                path: "/",
                query: &self.params,
                headers: &headers,
                payload_hash: sign::EMPTY_PAYLOAD_SHA256,
            },
            self.secret.as_bytes(),
        );
        let mut req = reqwest::Client::new()
            .post(format!("{base}/?{}", sign::canonical_query(&self.params)))
            .header("authorization", sign::authorization_v3(self.key_id, &sig));
        for (k, v) in headers.iter().skip(1) {
            req = req.header(k, v);
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    /// Sends the request as an older SDK would: GET with an HMAC-SHA1 `Signature`.
    pub async fn send_v2(&self, base: &str) -> (u16, serde_json::Value) {
        let mut params = self.params.clone();
        for (k, v) in [
            ("AccessKeyId", self.key_id),
            ("Action", self.action),
            ("Version", self.version),
            ("Format", "JSON"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", self.nonce.as_str()),
            ("Timestamp", self.date.as_str()),
        ] {
            params.push((k.into(), v.into()));
        }
        let signature = sign::sign_v2(
            &sign::string_to_sign_v2("GET", &params),
            self.secret.as_bytes(),
        );
        params.push(("Signature".into(), signature));
        let resp = reqwest::Client::new()
            .get(format!("{base}/?{}", sign::canonical_query(&params)))
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }
}

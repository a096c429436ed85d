//! The simulator's HTTP side: parameter parsing, signature checks (ACS3 and
//! HMAC-SHA1), nonce and clock checks, rate limits, fault injection, answers in
//! Alibaba's JSON shape.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use chrono::{NaiveDateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

use super::scenario::Scenario;
use super::world::{SimError, World};
use cas_sign as sign;

/// How far a request's date may be from the wall clock, as Alibaba allows.
const MAX_SKEW: chrono::Duration = chrono::Duration::minutes(15);
/// How long a nonce is remembered.
const NONCE_TTL: Duration = Duration::from_secs(15 * 60);
const MAX_BODY: usize = 1024 * 1024;

pub const CAS_ACTIONS: [&str; 8] = [
    "ListUserCertificateOrder",
    "DescribeCertificateState",
    "RenewCertificateOrderForPackageRequest",
    "GetUserCertificateDetail",
    "CreateCertificateForPackageRequest",
    "DescribePackageState",
    "UpdateInstance",
    "ApplyCertificate",
];
pub const DNS_ACTIONS: [&str; 4] = [
    "AddDomainRecord",
    "DeleteDomainRecord",
    "DescribeDomainRecords",
    "DescribeSubDomainRecords",
];
const CAS_VERSION: &str = "2020-04-07";
const DNS_VERSION: &str = "2015-01-09";

pub struct Shared {
    pub world: Mutex<World>,
    key_id: String,
    secret: String,
    rng: Mutex<StdRng>,
    nonces: Mutex<HashMap<String, Instant>>,
    windows: Mutex<HashMap<String, (u64, u32)>>,
    limits: HashMap<String, u32>,
    default_limit: u32,
    throttle: f64,
    server_error: f64,
    timeout: f64,
    malformed: f64,
    latency: Duration,
    hold: Duration,
}

impl Shared {
    pub fn new(s: &Scenario, world: World) -> Shared {
        let mut limits: HashMap<String, u32> = s
            .rate_limits
            .iter()
            .filter(|(k, _)| k.as_str() != "default")
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        limits
            .entry("ListUserCertificateOrder".into())
            .or_insert(10);
        Shared {
            world: Mutex::new(world),
            key_id: s.access_key.id.clone(),
            secret: s.access_key.secret.clone(),
            rng: Mutex::new(StdRng::seed_from_u64(s.seed)),
            nonces: Mutex::new(HashMap::new()),
            windows: Mutex::new(HashMap::new()),
            limits,
            default_limit: s.rate_limits.get("default").copied().unwrap_or(100),
            throttle: s.faults.throttle,
            server_error: s.faults.server_error,
            timeout: s.faults.timeout,
            malformed: s.faults.malformed,
            latency: s.faults.latency.0,
            hold: s.faults.hold.0,
        }
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn roll(&self, p: f64) -> bool {
        p > 0.0
            && self
                .rng
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .random::<f64>()
                < p
    }

    fn request_id(&self) -> String {
        // Not from the seeded generator: ids differ between runs, faults do not.
        let b: [u8; 16] = rand::random();
        let h = hex::encode_upper(b);
        format!(
            "{}-{}-{}-{}-{}",
            &h[..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..]
        )
    }

    fn count_fault(&self, kind: &str) {
        *self.world().faults.entry(kind.into()).or_default() += 1;
    }
}

fn host_id(action: &str) -> &'static str {
    if DNS_ACTIONS.contains(&action) {
        "alidns.aliyuncs.com"
    } else {
        "cas.aliyuncs.com"
    }
}

fn json_response(status: u16, body: &Value, extra: &[(String, String)]) -> Response {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json;charset=utf-8");
    for (k, v) in extra {
        b = b.header(k.as_str(), v.as_str());
    }
    b.body(Body::from(body.to_string()))
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

fn error_body(e: &SimError, request_id: &str, action: &str) -> Value {
    let product = if DNS_ACTIONS.contains(&action) {
        "Alidns"
    } else {
        "cas"
    };
    json!({
        "RequestId": request_id,
        "HostId": host_id(action),
        "Code": e.code,
        "Message": e.message,
        "Recommend": format!("https://api.aliyun.com/troubleshoot?q={}&product={product}&requestId={request_id}", e.code),
    })
}

fn parse_pairs(s: &str, plus_is_space: bool) -> Vec<(String, String)> {
    s.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (
                sign::percent_decode(k, plus_is_space),
                sign::percent_decode(v, plus_is_space),
            )
        })
        .collect()
}

/// The parsed, not yet authenticated request.
struct Incoming {
    method: String,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    form: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn all_params(&self) -> HashMap<String, String> {
        self.query.iter().chain(&self.form).cloned().collect()
    }
}

/// Checks the signature, returning the action and version it covers.
fn authenticate(shared: &Shared, req: &Incoming) -> Result<(String, String), SimError> {
    let params = req.all_params();
    let (key_id, date, nonce, action, version, check): (
        String,
        String,
        String,
        String,
        String,
        SigCheck,
    ) = if let Some(auth) = req
        .header("authorization")
        .filter(|a| a.starts_with(sign::ALGORITHM_V3))
    {
        let parsed = sign::parse_authorization_v3(auth).ok_or_else(|| {
            SimError::new(
                400,
                "IncompleteSignature",
                "The request signature does not conform to Aliyun standards.",
            )
        })?;
        let get = |h: &str| {
            req.header(h)
                .map(str::to_owned)
                .ok_or_else(|| SimError::missing(h))
        };
        (
            parsed.access_key_id.clone(),
            get("x-acs-date")?,
            get("x-acs-signature-nonce")?,
            get("x-acs-action")?,
            get("x-acs-version")?,
            SigCheck::V3(parsed),
        )
    } else if let Some(sig) = params.get("Signature") {
        let get = |p: &str| params.get(p).cloned().ok_or_else(|| SimError::missing(p));
        if params.get("SignatureMethod").map(String::as_str) != Some("HMAC-SHA1") {
            return Err(SimError::invalid(
                "SignatureMethod",
                "only HMAC-SHA1 is supported",
            ));
        }
        (
            get("AccessKeyId")?,
            get("Timestamp")?,
            get("SignatureNonce")?,
            get("Action")?,
            get("Version")?,
            SigCheck::V2(sig.clone()),
        )
    } else {
        return Err(SimError::new(
            400,
            "MissingParameter",
            "The request carries no signature (no Authorization header and no Signature parameter).",
        ));
    };

    if key_id != shared.key_id {
        return Err(SimError::new(
            400,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        ));
    }
    let when = NaiveDateTime::parse_from_str(&date, "%Y-%m-%dT%H:%M:%SZ")
        .map_err(|_| {
            SimError::new(
                400,
                "InvalidTimeStamp.Format",
                format!("Specified time stamp {date:?} is not in yyyy-MM-ddTHH:mm:ssZ format."),
            )
        })?
        .and_utc();
    if (Utc::now() - when).abs() > MAX_SKEW {
        return Err(SimError::new(
            400,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        ));
    }

    let (expected, string_to_sign) = match &check {
        SigCheck::V3(auth) => {
            let payload = sign::sha256_hex(&req.body);
            if req.header("x-acs-content-sha256") != Some(payload.as_str()) {
                return Err(SimError::new(
                    400,
                    "IncompleteSignature",
                    "x-acs-content-sha256 does not match the request body.",
                ));
            }
            let mut signed = Vec::new();
            for h in &auth.signed_headers {
                let v = req
                    .headers
                    .get_all(h.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok());
                let values: Vec<&str> = v.collect();
                if values.is_empty() {
                    return Err(SimError::new(
                        400,
                        "IncompleteSignature",
                        format!("Signed header {h} is missing."),
                    ));
                }
                for value in values {
                    signed.push((h.clone(), value.to_owned()));
                }
            }
            for must in [
                "host",
                "x-acs-action",
                "x-acs-date",
                "x-acs-signature-nonce",
            ] {
                if !auth.signed_headers.iter().any(|h| h == must) {
                    return Err(SimError::new(
                        400,
                        "IncompleteSignature",
                        format!("Header {must} must be signed."),
                    ));
                }
            }
            let sig = sign::sign_v3(
                &sign::V3Input {
                    method: &req.method,
                    path: "/",
                    query: &req.query,
                    headers: &signed,
                    payload_hash: &payload,
                },
                shared.secret.as_bytes(),
            );
            let ok = sign::constant_time_eq(&sig.signature, &auth.signature);
            shared.world().remember_signature(&auth.signature);
            (ok, sig.string_to_sign)
        }
        SigCheck::V2(given) => {
            let unsigned: Vec<(String, String)> = req
                .query
                .iter()
                .chain(&req.form)
                .filter(|(k, _)| k != "Signature")
                .cloned()
                .collect();
            let sts = sign::string_to_sign_v2(&req.method, &unsigned);
            let ok = sign::constant_time_eq(&sign::sign_v2(&sts, shared.secret.as_bytes()), given);
            shared.world().remember_signature(given);
            (ok, sts)
        }
    };
    if !expected {
        shared.world().signature_failures += 1;
        return Err(SimError::new(
            403,
            "SignatureDoesNotMatch",
            format!(
                "Specified signature is not matched with our calculation. server string to sign is:{string_to_sign}"
            ),
        ));
    }

    {
        let mut nonces = shared.nonces.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if nonces.len() > 10_000 {
            nonces.retain(|_, t| now.duration_since(*t) < NONCE_TTL);
        }
        if nonces
            .get(&nonce)
            .is_some_and(|t| now.duration_since(*t) < NONCE_TTL)
        {
            return Err(SimError::new(
                400,
                "SignatureNonceUsed",
                "Specified signature nonce was used already.",
            ));
        }
        nonces.insert(nonce, now);
    }
    Ok((action, version))
}

enum SigCheck {
    V3(sign::ParsedAuthorization),
    V2(String),
}

/// Counts a call in its one-second window; `Some(ms until the next window)` when over the limit.
fn over_limit(shared: &Shared, action: &str) -> Option<(u32, u64)> {
    let limit = shared
        .limits
        .get(action)
        .copied()
        .unwrap_or(shared.default_limit);
    let now_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0);
    let second = now_ms / 1000;
    let mut w = shared.windows.lock().unwrap_or_else(|p| p.into_inner());
    let entry = w
        .entry(format!("{}/{action}", shared.key_id))
        .or_insert((second, 0));
    if entry.0 != second {
        *entry = (second, 0);
    }
    entry.1 += 1;
    (entry.1 > limit).then(|| (limit, 1000 - now_ms % 1000))
}

fn throttled(limit: u32, time_left_ms: u64) -> (SimError, Vec<(String, String)>) {
    (
        SimError::new(
            400,
            "Throttling.User",
            "Request was denied due to user flow control.",
        ),
        vec![(
            "x-ratelimit-user-api".into(),
            format!(
                "Limit:{limit},Remain:0,TimeLeft:{time_left_ms},Reset:{}",
                Utc::now().timestamp() + 1
            ),
        )],
    )
}

pub async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    if path == "/_sim/state" && method == Method::GET {
        let snapshot = shared.world().snapshot();
        return json_response(200, &snapshot, &[]);
    }
    if path == "/_sim/clock" && method == Method::POST {
        return advance_clock(&shared, &query);
    }
    if path == "/_sim/ca.pem" && method == Method::GET {
        let pem = shared.world().root_pem().to_owned();
        return Response::new(Body::from(pem));
    }
    let request_id = shared.request_id();
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b.to_vec(),
        Err(_) => {
            let e = SimError::new(
                413,
                "RequestEntityTooLarge",
                "The request body is too large.",
            );
            return json_response(413, &error_body(&e, &request_id, ""), &[]);
        }
    };
    if path != "/" {
        let e = SimError::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        );
        return json_response(404, &error_body(&e, &request_id, ""), &[]);
    }
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    let incoming = Incoming {
        method: method.as_str().to_owned(),
        // Query strings follow form encoding: `+` is a space (SDKs send it so).
        query: parse_pairs(&query, true),
        form: if is_form {
            parse_pairs(&String::from_utf8_lossy(&body), true)
        } else {
            Vec::new()
        },
        headers,
        body,
    };

    let (action, version) = match authenticate(&shared, &incoming) {
        Ok(av) => av,
        Err(e) => return json_response(e.status, &error_body(&e, &request_id, ""), &[]),
    };
    let fail = |e: SimError, extra: Vec<(String, String)>| {
        json_response(e.status, &error_body(&e, &request_id, &action), &extra)
    };
    let expected_version = if CAS_ACTIONS.contains(&action.as_str()) {
        CAS_VERSION
    } else if DNS_ACTIONS.contains(&action.as_str()) {
        DNS_VERSION
    } else {
        return fail(
            SimError::new(
                404,
                "InvalidAction.NotFound",
                format!("Specified api is not found, please check your url and method: {action}"),
            ),
            vec![],
        );
    };
    if version != expected_version {
        return fail(
            SimError::new(
                400,
                "InvalidVersion",
                format!(
                    "Specified parameter Version {version:?} is not valid; {action} is version {expected_version}."
                ),
            ),
            vec![],
        );
    }
    *shared.world().calls.entry(action.clone()).or_default() += 1;

    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    if let Some((limit, left)) = over_limit(&shared, &action) {
        shared.world().throttled += 1;
        let (e, h) = throttled(limit, left);
        return fail(e, h);
    }
    if shared.roll(shared.throttle) {
        shared.count_fault("throttle");
        let (e, h) = throttled(shared.default_limit, 200);
        return fail(e, h);
    }
    if shared.roll(shared.server_error) {
        shared.count_fault("server_error");
        let e = if shared.roll(0.5) {
            SimError::new(
                503,
                "ServiceUnavailable",
                "The request has failed due to a temporary failure of the server.",
            )
        } else {
            SimError::new(
                500,
                "InternalError",
                "The request processing has failed due to some unknown error.",
            )
        };
        return fail(e, vec![]);
    }

    let params = incoming.all_params();
    let result = shared.world().call(&action, &params);
    let mut body = match result {
        Ok(v) => v,
        Err(e) => return fail(e, vec![]),
    };
    body["RequestId"] = json!(request_id);

    // Faults that strike after the action took effect: the hardest case for a client.
    if shared.roll(shared.timeout) {
        shared.count_fault("timeout");
        tokio::time::sleep(shared.hold).await;
    }
    if shared.roll(shared.malformed) {
        shared.count_fault("malformed");
        let text = body.to_string();
        let (status, broken) = if shared.roll(0.5) {
            (200, text[..text.len() / 2].to_owned())
        } else {
            (
                502,
                "<html><body><h1>502 Bad Gateway</h1></body></html>".to_owned(),
            )
        };
        return Response::builder()
            .status(status)
            .header("content-type", "application/json;charset=utf-8")
            .body(Body::from(broken))
            .unwrap_or_else(|_| Response::new(Body::empty()));
    }
    json_response(200, &body, &[])
}

fn advance_clock(shared: &Shared, query: &str) -> Response {
    let by = parse_pairs(query, true)
        .into_iter()
        .find(|(k, _)| k == "advance")
        .map(|(_, v)| v);
    match by.as_deref().map(humantime::parse_duration) {
        Some(Ok(d)) => {
            let mut w = shared.world();
            w.advance(d);
            let now = w.now_ms();
            json_response(200, &json!({ "advanced": by, "now_ms": now }), &[])
        }
        _ => json_response(
            400,
            &json!({ "Code": "InvalidParameter", "Message": "use POST /_sim/clock?advance=DURATION (e.g. 10d)" }),
            &[],
        ),
    }
}

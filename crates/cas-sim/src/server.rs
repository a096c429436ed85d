//! The simulator's HTTP side: parameter parsing, signature checks (ACS3 and
//! HMAC-SHA1), nonce and clock checks, rate limits, fault injection, answers in
//! Alibaba's JSON shape.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use chrono::Utc;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

mod auth;

use self::auth::{Incoming, authenticate};
use super::scenario::Scenario;
use super::world::{SimError, World};
use cas_sign as sign;

/// How far a request's date may be from the wall clock, as Alibaba allows.
const MAX_SKEW: chrono::Duration = chrono::Duration::minutes(15);
/// How long a nonce is remembered.
const NONCE_TTL: Duration = Duration::from_secs(15 * 60);
const MAX_BODY: usize = 1024 * 1024;

pub const CAS_ACTIONS: [&str; 11] = [
    "ListUserCertificateOrder",
    "DescribeCertificateState",
    "RenewCertificateOrderForPackageRequest",
    "GetUserCertificateDetail",
    "CreateCertificateForPackageRequest",
    "DescribePackageState",
    "UpdateInstance",
    "ApplyCertificate",
    "ListInstances",
    "GetInstanceDetail",
    "GetTaskAttribute",
];
pub const DNS_ACTIONS: [&str; 5] = [
    "AddDomainRecord",
    "DeleteDomainRecord",
    "DescribeDomainRecords",
    "DescribeSubDomainRecords",
    "DescribeDomains",
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
    error_message: Option<String>,
    /// `faults.deny`: actions the account's RAM policy does not allow.
    deny: Vec<String>,
    /// `faults.clock_offset`: how far the server's clock is from this host's.
    pub(super) clock_offset: chrono::Duration,
}

impl Shared {
    pub fn new(s: &Scenario, world: World) -> Shared {
        let mut limits: HashMap<String, u32> = s
            .rate_limits
            .iter()
            .filter(|(k, _)| k.as_str() != "default")
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        // The documented per-user QPS limits (others default to 100). ASSUMED:
        // ListInstances, whose page gives no limit, is held like the other list.
        for (action, qps) in [
            ("ListUserCertificateOrder", 10),
            ("GetTaskAttribute", 10),
            ("ListInstances", 10),
        ] {
            limits.entry(action.into()).or_insert(qps);
        }
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
            error_message: s.faults.error_message.clone(),
            deny: s.faults.deny.clone(),
            clock_offset: chrono::Duration::seconds(s.faults.clock_offset_seconds),
        }
    }

    /// The server's idea of now (the wall clock moved by `faults.clock_offset`).
    pub(super) fn now(&self) -> chrono::DateTime<Utc> {
        Utc::now() + self.clock_offset
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
        crate::world::new_request_id()
    }

    /// [`error_body`], with `faults.error_message` in place of the Message.
    fn error_body(&self, e: &SimError, request_id: &str, action: &str) -> Value {
        let mut body = error_body(e, request_id, action);
        if let Some(m) = &self.error_message {
            body["Message"] = Value::String(m.clone());
        }
        body
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

/// One answer's error with its extra headers (the rate-limit header of a throttled call).
type Refusal = (SimError, Vec<(String, String)>);

pub async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let mut r = respond(&shared, req).await;
    if !shared.clock_offset.is_zero() {
        // Every answer's Date header shows the server's clock, as a real one would.
        let date = shared.now().format("%a, %d %b %Y %H:%M:%S GMT").to_string();
        if let Ok(v) = axum::http::HeaderValue::from_str(&date) {
            r.headers_mut().insert(axum::http::header::DATE, v);
        }
    }
    r
}

async fn respond(shared: &Arc<Shared>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    if let Some(r) = sim_endpoint(shared, &method, &path, &query) {
        return r;
    }
    let request_id = shared.request_id();
    let incoming = match read_request(req, &method, &path, &query).await {
        Ok(i) => i,
        Err(e) => return json_response(e.status, &shared.error_body(&e, &request_id, ""), &[]),
    };
    let (action, version) = match authenticate(shared, &incoming) {
        Ok(av) => av,
        Err(e) => return json_response(e.status, &shared.error_body(&e, &request_id, ""), &[]),
    };
    let fail = |(e, extra): Refusal| {
        json_response(
            e.status,
            &shared.error_body(&e, &request_id, &action),
            &extra,
        )
    };
    if let Err(e) = check_version(&action, &version) {
        return fail((e, vec![]));
    }
    if shared.deny.contains(&action) {
        // The documented RAM denial (reference/cas-api.md §4.2: a real Alidns body).
        return fail((
            SimError::new(
                403,
                "Forbidden.RAM",
                "User not authorized to operate on the specified resource, or this API doesn't support RAM.",
            ),
            vec![],
        ));
    }
    *shared.world().calls.entry(action.clone()).or_default() += 1;
    if let Err(refusal) = admit(shared, &action).await {
        return fail(refusal);
    }
    let params = incoming.all_params();
    prepare_issuance(shared, &action, &params).await;
    let result = shared.world().call(&action, &params);
    let mut body = match result {
        Ok(v) => v,
        Err(e) => return fail((e, vec![])),
    };
    // A recorded answer keeps the request id the real service gave it.
    if body.get("RequestId").is_none() {
        body["RequestId"] = json!(request_id);
    }
    answer(shared, &body).await
}

/// Makes the certificate (and key) the call is about to issue outside the world's
/// lock, on the blocking pool, and hands it to the world: RSA key generation takes
/// tens of milliseconds, and every other request would wait behind it. A failure
/// here is left to the call itself, which then issues under the lock and answers it.
async fn prepare_issuance(shared: &Arc<Shared>, action: &str, params: &HashMap<String, String>) {
    let Some((order_id, job, ca)) = shared.world().issuance_ahead(action, params) else {
        return;
    };
    let made = tokio::task::spawn_blocking(move || ca.issue_job(&job).map(|i| (job, i))).await;
    if let Ok(Ok((job, issued))) = made {
        shared.world().offer(order_id, job, issued);
    }
}

/// The simulator's own endpoints under `/_sim/`, which need no signature.
fn sim_endpoint(shared: &Shared, method: &Method, path: &str, query: &str) -> Option<Response> {
    if path == "/_sim/state" && method == Method::GET {
        let snapshot = shared.world().snapshot();
        return Some(json_response(200, &snapshot, &[]));
    }
    if path == "/_sim/clock" && method == Method::POST {
        return Some(advance_clock(shared, query));
    }
    if path == "/_sim/packages" && method == Method::POST {
        return Some(set_packages(shared, query));
    }
    if path == "/_sim/ca.pem" && method == Method::GET {
        let pem = shared.world().root_pem().to_owned();
        return Some(Response::new(Body::from(pem)));
    }
    None
}

/// Reads the body (at most [`MAX_BODY`]) and the query and form parameters of an
/// API call, which only `/` takes.
async fn read_request(
    req: Request,
    method: &Method,
    path: &str,
    query: &str,
) -> Result<Incoming, SimError> {
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b.to_vec(),
        Err(_) => {
            return Err(SimError::new(
                413,
                "RequestEntityTooLarge",
                "The request body is too large.",
            ));
        }
    };
    if path != "/" {
        return Err(SimError::new(
            404,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
        ));
    }
    let is_form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    Ok(Incoming {
        method: method.as_str().to_owned(),
        // Query strings follow form encoding: `+` is a space (SDKs send it so).
        query: parse_pairs(query, true),
        form: if is_form {
            parse_pairs(&String::from_utf8_lossy(&body), true)
        } else {
            Vec::new()
        },
        headers,
        body,
    })
}

/// The action must exist and be called with its product's API version.
fn check_version(action: &str, version: &str) -> Result<(), SimError> {
    let expected_version = if CAS_ACTIONS.contains(&action) {
        CAS_VERSION
    } else if DNS_ACTIONS.contains(&action) {
        DNS_VERSION
    } else {
        return Err(SimError::new(
            404,
            "InvalidAction.NotFound",
            format!("Specified api is not found, please check your url and method: {action}"),
        ));
    };
    if version != expected_version {
        return Err(SimError::new(
            400,
            "InvalidVersion",
            format!(
                "Specified parameter Version {version:?} is not valid; {action} is version {expected_version}."
            ),
        ));
    }
    Ok(())
}

/// What happens before the action runs: the scenario's latency, the rate limit,
/// and the injected throttling and server errors (the action then has no effect).
async fn admit(shared: &Shared, action: &str) -> Result<(), Refusal> {
    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    if let Some((limit, left)) = over_limit(shared, action) {
        shared.world().throttled += 1;
        return Err(throttled(limit, left));
    }
    if shared.roll(shared.throttle) {
        shared.count_fault("throttle");
        return Err(throttled(shared.default_limit, 200));
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
        return Err((e, vec![]));
    }
    Ok(())
}

/// Writes a successful answer, unless a fault strikes after the action took
/// effect (the hardest case for a client): a held connection or a garbled body.
async fn answer(shared: &Shared, body: &Value) -> Response {
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
    json_response(200, body, &[])
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

/// `POST /_sim/packages?product_code=X&units=N`: the plan of X now holds N units.
fn set_packages(shared: &Shared, query: &str) -> Response {
    let pairs: HashMap<String, String> = parse_pairs(query, true).into_iter().collect();
    let code = pairs.get("product_code").filter(|c| !c.is_empty());
    let units = pairs.get("units").and_then(|u| u.parse::<u32>().ok());
    match (code, units) {
        (Some(code), Some(units)) => {
            shared.world().set_package_units(code, units);
            json_response(200, &json!({ "product_code": code, "units": units }), &[])
        }
        _ => json_response(
            400,
            &json!({ "Code": "InvalidParameter", "Message": "use POST /_sim/packages?product_code=CODE&units=N" }),
            &[],
        ),
    }
}

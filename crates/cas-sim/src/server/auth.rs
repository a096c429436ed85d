//! Authentication of one request: which signature it claims (ACS3 header or
//! HMAC-SHA1 parameters), the access key, the date, the signature itself and the
//! nonce, checked in that order, as Alibaba reports the first failure.

use std::collections::HashMap;
use std::time::Instant;

use axum::http::HeaderMap;
use chrono::NaiveDateTime;

use super::{MAX_SKEW, NONCE_TTL, Shared, sign};
use crate::world::SimError;

/// The parsed, not yet authenticated request.
pub(super) struct Incoming {
    pub(super) method: String,
    pub(super) headers: HeaderMap,
    pub(super) query: Vec<(String, String)>,
    pub(super) form: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
}

impl Incoming {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(super) fn all_params(&self) -> HashMap<String, String> {
        self.query.iter().chain(&self.form).cloned().collect()
    }
}

enum SigCheck {
    V3(sign::ParsedAuthorization),
    V2(String),
}

/// What a request says about itself, before any of it is believed.
struct Claims {
    key_id: String,
    date: String,
    nonce: String,
    action: String,
    version: String,
    check: SigCheck,
}

/// Checks the signature, returning the action and version it covers.
pub(super) fn authenticate(shared: &Shared, req: &Incoming) -> Result<(String, String), SimError> {
    let claims = claims(req)?;
    check_key_and_date(shared, &claims)?;
    let (expected, string_to_sign) = match &claims.check {
        SigCheck::V3(auth) => check_v3(shared, req, auth)?,
        SigCheck::V2(given) => check_v2(shared, req, given),
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
    use_nonce(shared, claims.nonce)?;
    Ok((claims.action, claims.version))
}

/// The key, date, nonce, action and version from the ACS3 headers when the
/// request has an ACS3 Authorization header, else from the V2 parameters.
fn claims(req: &Incoming) -> Result<Claims, SimError> {
    let params = req.all_params();
    if let Some(auth) = req
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
        Ok(Claims {
            key_id: parsed.access_key_id.clone(),
            date: get("x-acs-date")?,
            nonce: get("x-acs-signature-nonce")?,
            action: get("x-acs-action")?,
            version: get("x-acs-version")?,
            check: SigCheck::V3(parsed),
        })
    } else if let Some(sig) = params.get("Signature") {
        let get = |p: &str| params.get(p).cloned().ok_or_else(|| SimError::missing(p));
        if params.get("SignatureMethod").map(String::as_str) != Some("HMAC-SHA1") {
            return Err(SimError::invalid(
                "SignatureMethod",
                "only HMAC-SHA1 is supported",
            ));
        }
        Ok(Claims {
            key_id: get("AccessKeyId")?,
            date: get("Timestamp")?,
            nonce: get("SignatureNonce")?,
            action: get("Action")?,
            version: get("Version")?,
            check: SigCheck::V2(sig.clone()),
        })
    } else {
        Err(SimError::new(
            400,
            "MissingParameter",
            "The request carries no signature (no Authorization header and no Signature parameter).",
        ))
    }
}

/// The access key must be the scenario's, the date well-formed and near the wall clock.
fn check_key_and_date(shared: &Shared, claims: &Claims) -> Result<(), SimError> {
    if claims.key_id != shared.key_id {
        return Err(SimError::new(
            400,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        ));
    }
    let date = &claims.date;
    let when = NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%SZ")
        .map_err(|_| {
            SimError::new(
                400,
                "InvalidTimeStamp.Format",
                format!("Specified time stamp {date:?} is not in yyyy-MM-ddTHH:mm:ssZ format."),
            )
        })?
        .and_utc();
    if (shared.now() - when).abs() > MAX_SKEW {
        return Err(SimError::new(
            400,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        ));
    }
    Ok(())
}

/// Checks an ACS3 request's body hash and signed headers, then computes its
/// signature: whether it matches, and the string to sign.
fn check_v3(
    shared: &Shared,
    req: &Incoming,
    auth: &sign::ParsedAuthorization,
) -> Result<(bool, String), SimError> {
    let payload = sign::sha256_hex(&req.body);
    if req.header("x-acs-content-sha256") != Some(payload.as_str()) {
        return Err(SimError::new(
            400,
            "IncompleteSignature",
            "x-acs-content-sha256 does not match the request body.",
        ));
    }
    let signed = signed_headers(req, auth)?;
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
    Ok((ok, sig.string_to_sign))
}

/// The values of the headers the ACS3 signature covers; every one must be
/// present, and the ones Alibaba requires must be among them.
fn signed_headers(
    req: &Incoming,
    auth: &sign::ParsedAuthorization,
) -> Result<Vec<(String, String)>, SimError> {
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
    Ok(signed)
}

/// Computes a V2 (HMAC-SHA1) request's signature: whether it matches, and the
/// string to sign.
fn check_v2(shared: &Shared, req: &Incoming, given: &str) -> (bool, String) {
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

/// Refuses a nonce seen within [`NONCE_TTL`], then remembers it.
fn use_nonce(shared: &Shared, nonce: String) -> Result<(), SimError> {
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
    Ok(())
}

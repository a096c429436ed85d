//! `doctor --record DIR`: every API answer doctor received, one JSON file each,
//! with secrets and private keys removed and request ids kept, so that a person
//! can attach real answers to a report (and `sim --recording DIR` replays them).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value, json};

use crate::cas::client::{ApiError, Recorder};
use crate::store::{self, FileSpec, StoreError};

/// What replaces a removed value.
const REDACTED: &str = "[removed by cas-renewd doctor]";

/// Whether a field of this name may hold a secret or a private key.
fn secret_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("privatekey")
        || n.contains("secret")
        || n.contains("token")
        || n.contains("password")
        || n == "key"
        || n == "signature"
}

/// Removes every secret-named field's value, at any depth.
pub fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if secret_name(k) && !x.is_null() {
                    *x = json!(REDACTED);
                } else {
                    redact(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The recording directory and what went wrong writing it.
pub struct RecordDir {
    dir: PathBuf,
    next: AtomicU32,
    errors: Mutex<Vec<String>>,
}

impl RecordDir {
    /// Makes `dir` (owner-only) if it is missing.
    pub fn create(dir: &Path) -> Result<Arc<RecordDir>, StoreError> {
        store::ensure_dir(dir, 0o700)?;
        Ok(Arc::new(RecordDir {
            dir: dir.to_owned(),
            next: AtomicU32::new(1),
            errors: Mutex::new(Vec::new()),
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Files written, and the errors of those that could not be.
    pub fn summary(&self) -> (u32, Vec<String>) {
        let written = self.next.load(Ordering::SeqCst).saturating_sub(1);
        let errors = self.errors.lock().map(|e| e.clone()).unwrap_or_default();
        (written, errors)
    }

    /// The hook the API clients call with each answer.
    pub fn recorder(self: &Arc<Self>) -> Recorder {
        let me = self.clone();
        Arc::new(move |action, params, answer| me.save(action, params, answer))
    }

    fn save(&self, action: &str, params: &[(String, String)], answer: Result<&Value, &ApiError>) {
        let params: Map<String, Value> =
            params.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let mut entry = json!({ "action": action, "params": params });
        match answer {
            Ok(v) => entry["answer"] = v.clone(),
            Err(ApiError::Service(e)) => {
                entry["error"] = json!({
                    "HttpStatus": e.status,
                    "Code": e.code,
                    "Message": e.message,
                    "RequestId": e.request_id,
                });
            }
            // Not an answer of the API (a transport failure): nothing to replay.
            Err(_) => return,
        }
        redact(&mut entry);
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let path = self.dir.join(format!("{n:04}-{action}.json"));
        let text = serde_json::to_string_pretty(&entry).unwrap_or_default();
        if let Err(e) = store::write_file(&path, text.as_bytes(), FileSpec::private())
            && let Ok(mut errors) = self.errors.lock()
        {
            errors.push(e.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_and_keys_go_and_request_ids_stay() {
        let mut v = json!({
            "RequestId": "R-1",
            "PrivateKey": "-----BEGIN PRIVATE KEY-----",
            "Certificate": "-----BEGIN CERTIFICATE-----",
            "List": [{ "EncryptPrivateKey": "x", "SignPrivateKey": "y", "Domain": "a" }],
            "params": { "AccessKeySecret": "s", "SecurityToken": "t", "Key": "k", "OrderId": "1" }
        });
        redact(&mut v);
        let text = v.to_string();
        for gone in [
            "BEGIN PRIVATE KEY",
            "\"x\"",
            "\"y\"",
            "\"s\"",
            "\"t\"",
            "\"k\"",
        ] {
            assert!(!text.contains(gone), "{gone} left in {text}");
        }
        for kept in [
            "R-1",
            "BEGIN CERTIFICATE",
            "\"Domain\":\"a\"",
            "\"OrderId\":\"1\"",
        ] {
            assert!(text.contains(kept), "{kept} missing from {text}");
        }
    }
}

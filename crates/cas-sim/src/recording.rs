//! A recording made by `cas-renewd doctor --record DIR` as a scenario: the
//! simulator answers each recorded action with what the real service answered
//! (the answer recorded with the same parameters, else the first one for the
//! action), so real answers become test data. Actions not recorded are answered
//! by the simulated account as usual; signatures are checked as always.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::scenario::ScenarioError;
use super::world::SimError;

/// One recorded answer.
#[derive(Debug, Clone)]
struct Entry {
    action: String,
    params: HashMap<String, String>,
    answer: Result<Value, SimError>,
}

/// Every answer of one recording directory, in the order they were recorded.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    entries: Vec<Entry>,
}

fn invalid(path: &Path, message: impl Into<String>) -> ScenarioError {
    ScenarioError::Invalid {
        path: path.to_owned(),
        message: message.into(),
    }
}

/// One file: `{action, params, answer}` or `{action, params, error: {HttpStatus,
/// Code, Message}}`.
fn entry(path: &Path) -> Result<Entry, ScenarioError> {
    let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
        path: path.to_owned(),
        source,
    })?;
    let v: Value = serde_json::from_str(&text).map_err(|e| invalid(path, e.to_string()))?;
    let action = v["action"]
        .as_str()
        .ok_or_else(|| invalid(path, "no \"action\""))?
        .to_owned();
    let params = v["params"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter_map(|(k, x)| Some((k.clone(), x.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default();
    let answer = if let Some(a) = v.get("answer") {
        Ok(a.clone())
    } else if let Some(e) = v.get("error") {
        let status = e["HttpStatus"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .unwrap_or(400);
        Err(SimError::new(
            status,
            e["Code"].as_str().unwrap_or("Unknown"),
            e["Message"].as_str().unwrap_or_default(),
        ))
    } else {
        return Err(invalid(path, "neither \"answer\" nor \"error\""));
    };
    Ok(Entry {
        action,
        params,
        answer,
    })
}

impl Recording {
    /// Reads every `*.json` file of `dir`, in name order.
    pub fn load(dir: &Path) -> Result<Recording, ScenarioError> {
        let read = std::fs::read_dir(dir).map_err(|source| ScenarioError::Read {
            path: dir.to_owned(),
            source,
        })?;
        let mut files: Vec<PathBuf> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(invalid(
                dir,
                "no recorded answer (*.json) in this directory",
            ));
        }
        let entries = files
            .iter()
            .map(|f| entry(f))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Recording { entries })
    }

    /// The recorded answer to `action` with `params`, if the action was recorded.
    pub fn answer(
        &self,
        action: &str,
        params: &HashMap<String, String>,
    ) -> Option<Result<Value, SimError>> {
        let of_action = || self.entries.iter().filter(|e| e.action == action);
        of_action()
            .find(|e| e.params.iter().all(|(k, v)| params.get(k) == Some(v)))
            .or_else(|| of_action().next())
            .map(|e| e.answer.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_match_parameters_then_action() {
        let root = std::env::temp_dir().join(format!("cas-sim-recording-{}", std::process::id()));
        let dir = root.join("answers");
        std::fs::create_dir_all(&dir).expect("dir");
        let write = |name: &str, v: Value| {
            std::fs::write(dir.join(name), v.to_string()).expect("write");
        };
        write(
            "0001-DescribeCertificateState.json",
            serde_json::json!({ "action": "DescribeCertificateState", "params": { "OrderId": "1" }, "answer": { "Type": "payed", "RequestId": "R1" } }),
        );
        write(
            "0002-DescribeCertificateState.json",
            serde_json::json!({ "action": "DescribeCertificateState", "params": { "OrderId": "2" }, "answer": { "Type": "certificate" } }),
        );
        write(
            "0003-ListInstances.json",
            serde_json::json!({ "action": "ListInstances", "params": {}, "error": { "HttpStatus": 403, "Code": "Forbidden.RAM", "Message": "no" } }),
        );
        let r = Recording::load(&dir).expect("loads");
        let p = |id: &str| HashMap::from([("OrderId".to_owned(), id.to_owned())]);
        let a = r
            .answer("DescribeCertificateState", &p("2"))
            .expect("recorded");
        assert_eq!(a.expect("ok")["Type"], "certificate");
        let a = r
            .answer("DescribeCertificateState", &p("9"))
            .expect("recorded");
        assert_eq!(
            a.expect("ok")["RequestId"],
            "R1",
            "the first for the action"
        );
        let e = r
            .answer("ListInstances", &HashMap::new())
            .expect("recorded");
        assert!(matches!(e, Err(ref e) if e.code == "Forbidden.RAM" && e.status == 403));
        assert!(r.answer("ApplyCertificate", &HashMap::new()).is_none());
        let empty = root.join("empty");
        std::fs::create_dir_all(&empty).expect("dir");
        assert!(Recording::load(&empty).is_err());
        std::fs::remove_dir_all(&root).expect("clean up");
    }
}

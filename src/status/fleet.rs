//! The fleet's part of `status`: per certificate, which host holds the lock, the
//! fleet's issued version, and the version each host reports installed (what
//! the hosts wrote into etcd).

use std::collections::BTreeMap;

use serde::Serialize;

use super::Report;
use crate::fleet::FleetSpec;

/// What etcd says about one certificate.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FleetRow {
    /// The host holding the certificate's lock now.
    pub lock_holder: Option<String>,
    /// The version of the issued material in etcd.
    pub issued_version: Option<u64>,
    /// The version each host reports installed.
    pub hosts: BTreeMap<String, u64>,
    /// Why etcd could not be read.
    pub error: Option<String>,
}

impl FleetRow {
    /// One line for the table.
    pub fn line(&self) -> String {
        if let Some(e) = &self.error {
            return format!("fleet: etcd not read: {e}");
        }
        let hosts: Vec<String> = self
            .hosts
            .iter()
            .map(|(h, v)| format!("{h} v{v}"))
            .collect();
        format!(
            "fleet: lock {}; issued {}; installed: {}",
            self.lock_holder.as_deref().unwrap_or("free"),
            self.issued_version.map_or("-".into(), |v| format!("v{v}")),
            if hosts.is_empty() {
                "-".into()
            } else {
                hosts.join(", ")
            }
        )
    }
}

/// Fills in every row's fleet part from etcd (or the reason it cannot be read).
pub async fn annotate(spec: &FleetSpec, report: &mut Report) {
    let rows = read(spec).await;
    for row in &mut report.rows {
        row.fleet = Some(match &rows {
            Ok(map) => map.get(&row.name).cloned().unwrap_or_default(),
            Err(e) => FleetRow {
                error: Some(e.clone()),
                ..FleetRow::default()
            },
        });
    }
}

#[cfg(feature = "fleet")]
async fn read(spec: &FleetSpec) -> Result<BTreeMap<String, FleetRow>, String> {
    use crate::fleet::etcd::EtcdFleet;
    use crate::fleet::layout::{HostRecord, IssuedRecord, LockRecord};
    let etcd = EtcdFleet::connect(spec).await.map_err(|e| e.to_string())?;
    let l = etcd.layout().clone();
    let mut out: BTreeMap<String, FleetRow> = BTreeMap::new();
    for (key, value) in etcd.list(&l.certs()).await.map_err(|e| e.to_string())? {
        let Some(rest) = key.strip_prefix(&l.certs()) else {
            continue;
        };
        let Some((cert, what)) = rest.split_once('/') else {
            continue;
        };
        let row = out.entry(cert.to_owned()).or_default();
        match what {
            "lock" => {
                row.lock_holder = serde_json::from_slice::<LockRecord>(&value)
                    .ok()
                    .map(|r| r.host);
            }
            "issued" => {
                row.issued_version = serde_json::from_slice::<IssuedRecord>(&value)
                    .ok()
                    .map(|r| r.version);
            }
            _ => {}
        }
    }
    for (key, value) in etcd.list(&l.hosts()).await.map_err(|e| e.to_string())? {
        let (Some((host, cert)), Ok(r)) = (
            l.host_cert_of(&key),
            serde_json::from_slice::<HostRecord>(&value),
        ) else {
            continue;
        };
        out.entry(cert.to_owned())
            .or_default()
            .hosts
            .insert(host.to_owned(), r.version);
    }
    Ok(out)
}

#[cfg(not(feature = "fleet"))]
async fn read(_spec: &FleetSpec) -> Result<BTreeMap<String, FleetRow>, String> {
    Err("this cas-renewd was built without the `fleet` feature".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_line_names_the_lock_and_each_host_version() {
        let mut r = FleetRow {
            lock_holder: Some("web-1".into()),
            issued_version: Some(3),
            ..FleetRow::default()
        };
        r.hosts.insert("web-1".into(), 3);
        r.hosts.insert("web-2".into(), 2);
        assert_eq!(
            r.line(),
            "fleet: lock web-1; issued v3; installed: web-1 v3, web-2 v2"
        );
        assert_eq!(
            FleetRow::default().line(),
            "fleet: lock free; issued -; installed: -"
        );
    }
}

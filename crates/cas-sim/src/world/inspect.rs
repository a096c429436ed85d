//! What tests see of the account: `/_sim/state` and the signatures received.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{DnsRecord, World};

impl World {
    pub fn remember_signature(&mut self, sig: &str) {
        if self.recent_signatures.len() >= 1000 {
            self.recent_signatures.pop_front();
        }
        self.recent_signatures.push_back(sig.to_owned());
    }

    /// The state `/_sim/state` reports.
    pub fn snapshot(&self) -> Value {
        let now = self.now_ms();
        let orders: Vec<Value> = self
            .orders
            .values()
            .map(|o| {
                json!({
                    "order_id": o.order_id,
                    "domain": o.domain,
                    "sans": o.sans,
                    "status": o.status(now),
                    "cert_end_ms": o.cert_end_ms,
                    "certificate_id": o.certificate_id,
                    "source_order_id": o.source_order_id,
                    "renewal_phase": o.renewal.as_ref().map(|r| r.phase.as_str()),
                    "polls": o.renewal.as_ref().map(|r| r.polls),
                    "with_csr": o.renewal.as_ref().map(|r| r.csr.is_some()),
                    "serial": o.issued.as_ref().map(|i| i.serial_hex.clone()),
                })
            })
            .collect();
        json!({
            "now": DateTime::<Utc>::from_timestamp_millis(now).map(|d| d.to_rfc3339()),
            "now_ms": now,
            "started": self.start.to_rfc3339(),
            "orders": orders,
            "calls": self.calls,
            "renew_calls": self.renew_calls.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<String, u64>>(),
            "signature_failures": self.signature_failures,
            "recent_signatures": self.recent_signatures,
            "throttled": self.throttled,
            "faults": self.faults,
            "dns_records": self.records.iter().map(DnsRecord::to_json).collect::<Vec<_>>(),
            "dns_zones": self.zones,
            "packages": self.plans.snapshot(),
            "v2": self.instances_snapshot(now),
        })
    }
}

//! RenewCertificateOrderForPackageRequest: checks the source order and the CSR,
//! then makes the renewal order.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::{Order, Phase, Renewal, SimError, World, new_token, packages, param};

impl World {
    pub(super) fn renew(&mut self, p: &HashMap<String, String>) -> Result<Value, SimError> {
        let now = self.now_ms();
        let source = self.order_mut(p)?.clone();
        let status = source.status(now);
        if status != "WILLEXPIRED" {
            return Err(SimError::new(
                400,
                "InvalidOrderStatus",
                format!(
                    "Order {} is {status}; renewal is allowed only for an order that is about to expire (WILLEXPIRED).",
                    source.order_id
                ),
            ));
        }
        let csr = param(p, "Csr").map(str::to_owned);
        if let Some(csr) = &csr {
            let cn = packages::csr_cn(csr)?;
            if cn.as_deref().map(str::to_ascii_lowercase).as_deref() != Some(source.domain.as_str())
            {
                return Err(SimError::invalid(
                    "Csr",
                    format!(
                        "the CN {:?} is not the order's domain {:?}",
                        cn.unwrap_or_default(),
                        source.domain
                    ),
                ));
            }
        }
        self.renew_kind_check(&source, now)?;
        let id = self.next_order_id;
        self.next_order_id += 1;
        let token = new_token();
        self.orders.insert(
            id,
            Order {
                order_id: id,
                domain: source.domain.clone(),
                sans: source.sans.clone(),
                algorithm: source.algorithm.clone(),
                issue: source.issue,
                buy_date_ms: now,
                cert_start_ms: None,
                cert_end_ms: None,
                certificate_id: None,
                source_order_id: Some(source.order_id),
                renewal: Some(Renewal {
                    csr,
                    polls: 0,
                    phase: Phase::Payed,
                    validated: false,
                    token,
                    applied: !self.plans.needs_application,
                }),
                issued: None,
                kind: source.kind.clone(),
            },
        );
        *self.renew_calls.entry(source.order_id).or_default() += 1;
        Ok(json!({ "OrderId": id }))
    }
}

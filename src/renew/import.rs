//! `cas-renewd import`: installs an issued order's certificate with a private key
//! the operator supplies (an order renewed on another host, whose key this host
//! never had), through the same checks and install as any other certificate.

use std::sync::Arc;

use tracing::info;

use super::engine::{Engine, unchanged_report};
use super::report::PassReport;
use super::steps::CertRun;
use super::{EngineError, installed_leaf};
use crate::cas::api::{CertificateOrder, OrderStatus};
use crate::ids::OrderId;
use crate::pki::Key;
use crate::settings::CertificateConfig;

impl Engine {
    /// Installs the certificate of `name`'s newest issued order with `key`, then
    /// runs its reload hooks and the served-certificate check, as a pass would.
    /// The order leaves the journal's unusable orders once installed.
    pub async fn import(
        self: &Arc<Self>,
        name: &str,
        key: &Key,
    ) -> Result<PassReport, EngineError> {
        let inv = self.inventory_all().await?;
        let orders = &inv.orders;
        let cert = self
            .targets(&inv)
            .certs
            .into_iter()
            .find(|c| c.name == name)
            .ok_or_else(|| EngineError::NoSuchCertificate { name: name.into() })?;
        let order = newest_issued(&cert, orders)?;
        self.journals.prepare()?;
        let state = self.journals.clone();
        let journal = self.read_journal(&cert.name)?;
        if journal.phase.in_flight() {
            return Err(EngineError::Blocked(format!(
                "a renewal of {} is in flight (phase {}); it installs its own certificate: let it finish (`cas-renewd status`) before importing",
                cert.name,
                journal.phase.name()
            )));
        }
        let plan = self.plan_one(&cert, &inv, &journal, false);
        let mut report = unchanged_report(&cert, &plan);
        report.order_id = Some(order);
        let mut run = CertRun {
            e: self,
            state: state.as_ref(),
            cert: &cert,
            journal,
            report: &mut report,
            deadline: None,
            force: false,
            inv: &inv,
        };
        run.import_order(order, key).await?;
        report.not_after = installed_leaf(&cert.output).map(|l| l.not_after_rfc3339());
        let certs = [cert];
        let mut pass = PassReport {
            certs: vec![report],
            hooks: vec![],
        };
        self.after_installs(state.as_ref(), &certs, &mut pass).await;
        self.observer.pass_done(&certs, &pass);
        Ok(pass)
    }
}

/// The order `import` installs: the newest issued one for the certificate's
/// domain (the one a renewal elsewhere made, or the current one).
fn newest_issued(
    cert: &CertificateConfig,
    orders: &[CertificateOrder],
) -> Result<OrderId, EngineError> {
    let mine: Vec<&CertificateOrder> = orders.iter().filter(|o| o.is_for(&cert.domain)).collect();
    let issued = mine
        .iter()
        .filter(|o| {
            matches!(
                o.status,
                Some(OrderStatus::Issued | OrderStatus::Willexpired)
            )
        })
        .max_by_key(|o| (o.cert_end_time, o.order_id))
        .and_then(|o| o.order_id);
    if let Some(id) = issued {
        return Ok(OrderId::new(id));
    }
    match mine
        .iter()
        .filter_map(|o| Some((o.order_id?, o.status)))
        .max()
    {
        Some((id, status)) => Err(EngineError::NotIssued {
            order: OrderId::new(id),
            state: status.map_or("of unknown status", |s| s.as_str()),
        }),
        None => Err(EngineError::Blocked(format!(
            "no order for {} in the account, so nothing to import",
            cert.domain
        ))),
    }
}

impl CertRun<'_> {
    /// The issued chain of `order`, checked against `key` and the installed
    /// certificate like any other, then installed.
    async fn import_order(&mut self, order: OrderId, key: &Key) -> Result<(), EngineError> {
        let (chain, _) = super::steps::issued_chain(self.e, order).await?;
        if chain.leaf.spki_sha256 != key.spki_sha256() {
            return Err(EngineError::ImportKeyMismatch { order });
        }
        self.check_against_disk(&chain, key)
            .map_err(|source| EngineError::CertificateRefused {
                order: order.into(),
                source,
            })?;
        // A refused renewal's validation record or file goes before the journal
        // moves on (it would be forgotten otherwise).
        self.remove_journal_publication().await;
        self.journal.unusable_orders.retain(|o| *o != order);
        self.journal.last_order_id = Some(order);
        self.install_chain(&chain, key, false)?;
        info!(cert = %self.cert.name, order_id = order.get(), "imported with the operator's key");
        Ok(())
    }
}

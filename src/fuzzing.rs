//! Entry points for the fuzz targets (`fuzz/`) and their corpus replay test: each
//! takes arbitrary bytes and must never panic, whatever it makes of them.

use std::path::Path;

use crate::cas::api::{CertificateDetail, CertificateStateResponse, OrderPage, RenewResponse};
use crate::cas::client::ErrorBody;
use crate::config::Config;
use crate::pki::{self, Chain, Expectations};
use crate::sim::Scenario;
use crate::store::Journal;

/// The configuration loader (and, as YAML too, the simulator's scenario loader).
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Config::parse(text, Path::new("fuzz.yaml"));
        let _ = Scenario::parse(text, Path::new("fuzz-scenario.yaml"));
    }
}

/// Every API response decoder, the error body, and the journal decoder.
pub fn api_response(data: &[u8]) {
    let _ = serde_json::from_slice::<OrderPage>(data);
    let _ = serde_json::from_slice::<CertificateStateResponse>(data);
    let _ = serde_json::from_slice::<RenewResponse>(data);
    let _ = serde_json::from_slice::<CertificateDetail>(data);
    let _ = serde_json::from_slice::<ErrorBody>(data);
    let _ = serde_json::from_slice::<Journal>(data);
}

/// PEM chain parsing and the checks before install.
pub fn pem(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = pki::read_leaf(&text);
    if let Ok(chain) = Chain::parse(&text) {
        let _ = pki::check(
            &chain,
            &Expectations {
                spki_sha256: "00",
                domain: "www.example.com",
                now: 1_800_000_000,
                installed_not_after: Some(1_700_000_000),
            },
        );
        let _ = chain.fullchain_pem();
    }
    let _ = pki::Key::from_pem(&text);
}

//! Entry points for the fuzz targets (`fuzz_targets/`) and their corpus replay test
//! (`tests/fuzz_replay.rs` includes this file): each takes arbitrary bytes and must
//! never panic, whatever it makes of them. They call only cas-renewd's and the
//! simulator's public API, so no fuzzing hook lives in the shipped library.

use std::path::Path;

use cas_renewd::cas::api::{CertificateDetail, CertificateStateResponse, OrderPage, RenewResponse};
use cas_renewd::cas::client::ErrorBody;
use cas_renewd::config::Config;
use cas_renewd::pki::{self, Chain, Expectations};
use cas_renewd::store::Journal;
use cas_sim::Scenario;

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
    let _ = Journal::from_json(data);
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

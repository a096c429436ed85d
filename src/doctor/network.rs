//! Doctor's network checks: each API endpoint resolved, connected to and asked
//! for its first byte (an unsigned GET, which changes nothing), the clock skew
//! from the answer's Date header, and every `verify.connect` address.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::Check;
use crate::domain::ControlsEscaped;
use crate::settings::Config;

/// How long one network check may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Alibaba refuses a request whose timestamp is further than this from its clock.
const MAX_SKEW: chrono::Duration = chrono::Duration::minutes(15);
/// A skew this large is worth fixing before it grows to [`MAX_SKEW`].
const WARN_SKEW: chrono::Duration = chrono::Duration::seconds(60);

/// What one endpoint probe found.
struct Probe {
    dns: Duration,
    connect: Duration,
    first_byte: Duration,
    date: Option<DateTime<Utc>>,
}

/// Resolves, connects and GETs `url` (no signature, no parameters).
async fn probe(url: &reqwest::Url) -> Result<Probe, String> {
    let host = url.host_str().ok_or("the URL has no host")?.to_owned();
    let port = url.port_or_known_default().ok_or("the URL has no port")?;
    let t = Instant::now();
    let addrs: Vec<_> =
        tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((host.as_str(), port)))
            .await
            .map_err(|_| format!("DNS lookup of {host} timed out"))?
            .map_err(|e| format!("DNS lookup of {host} failed: {e}"))?
            .collect();
    let dns = t.elapsed();
    let addr = addrs
        .first()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    let t = Instant::now();
    tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connecting to {addr} timed out"))?
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    let connect = t.elapsed();
    let client = reqwest::Client::builder()
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let t = Instant::now();
    let r = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| format!("GET {url} failed (TLS or HTTP): {e}"))?;
    let first_byte = t.elapsed();
    let date = r
        .headers()
        .get(reqwest::header::DATE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
        .map(|d| d.with_timezone(&Utc));
    Ok(Probe {
        dns,
        connect,
        first_byte,
        date,
    })
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// The clock check from a server's Date header (measured at the first byte, so
/// half the round trip is the error; a Date has whole seconds anyway).
fn clock_check(name: &str, date: Option<DateTime<Utc>>, now: DateTime<Utc>) -> Check {
    let Some(server) = date else {
        return Check::warn(
            format!("clock ({name})"),
            "the endpoint's answer has no Date header; clock skew not measured",
        );
    };
    let skew = now - server;
    let secs = skew.num_seconds();
    let fix = "synchronise this host's clock (`timedatectl set-ntp true`, chrony or ntpd)";
    if skew.abs() > MAX_SKEW {
        Check::fail(
            format!("clock ({name})"),
            format!(
                "this host's clock is {secs} s off the server's (Date {server}); Alibaba refuses requests more than 15 minutes off (InvalidTimeStamp.Expired): {fix}"
            ),
        )
    } else if skew.abs() > WARN_SKEW {
        Check::warn(
            format!("clock ({name})"),
            format!("this host's clock is {secs} s off the server's; {fix}"),
        )
    } else {
        Check::ok(
            format!("clock ({name})"),
            format!("{secs} s off the server's Date header"),
        )
    }
}

/// The CAS endpoint, and the DNS endpoint when a certificate validates by DNS.
/// Returns whether the CAS endpoint answered.
pub(super) async fn endpoints(cfg: &Config, checks: &mut Vec<Check>) -> bool {
    let uses_dns = cfg
        .certificates
        .iter()
        .any(|c| c.validation.method == crate::settings::ValidationMethod::Dns);
    let mut targets = vec![("endpoint", &cfg.api.endpoint)];
    if uses_dns {
        targets.push(("dns endpoint", &cfg.api.dns_endpoint));
    }
    let mut cas_ok = false;
    for (name, url) in targets {
        match probe(url).await {
            Ok(p) => {
                checks.push(Check::ok(
                    name,
                    format!(
                        "{url}: DNS {} ms, connect {} ms, {} first byte {} ms",
                        ms(p.dns),
                        ms(p.connect),
                        if url.scheme() == "https" {
                            "TLS and"
                        } else {
                            "plain HTTP,"
                        },
                        ms(p.first_byte)
                    ),
                ));
                checks.push(clock_check(name, p.date, Utc::now()));
                if name == "endpoint" {
                    cas_ok = true;
                }
            }
            Err(e) => checks.push(Check::fail(
                name,
                format!(
                    "{url}: {e}; check api.{} in the configuration, DNS, the firewall and any proxy (HTTPS_PROXY)",
                    if name == "endpoint" {
                        "endpoint"
                    } else {
                        "dns_endpoint"
                    }
                ),
            )),
        }
    }
    cas_ok
}

/// Each certificate's `verify.connect` accepts a TCP connection.
pub(super) async fn verify_targets(cfg: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    for c in &cfg.certificates {
        let Some(v) = &c.verify else { continue };
        let name = format!("verify ({})", c.name);
        let target = ControlsEscaped(&v.connect).to_string();
        let r =
            tokio::time::timeout(TIMEOUT, tokio::net::TcpStream::connect(v.connect.as_str())).await;
        out.push(match r {
            Ok(Ok(_)) => Check::ok(name, format!("{target} accepts connections")),
            Ok(Err(e)) => Check::fail(
                name,
                format!("cannot connect to {target}: {e}; start the server, or fix verify.connect"),
            ),
            Err(_) => Check::fail(
                name,
                format!("connecting to {target} timed out; fix verify.connect or the firewall"),
            ),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_skew_is_judged_against_alibabas_fifteen_minutes() {
        let now = Utc::now();
        let at = |secs: i64| Some(now - chrono::Duration::seconds(secs));
        assert_eq!(
            clock_check("e", at(2), now).status,
            super::super::Status::Ok
        );
        assert_eq!(
            clock_check("e", at(-120), now).status,
            super::super::Status::Warn
        );
        let c = clock_check("e", at(20 * 60), now);
        assert_eq!(c.status, super::super::Status::Fail);
        assert!(c.message.contains("1200 s off"), "{}", c.message);
        assert_eq!(
            clock_check("e", None, now).status,
            super::super::Status::Warn
        );
    }
}

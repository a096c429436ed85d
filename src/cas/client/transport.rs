//! One HTTP exchange: send the signed request, refuse redirects and oversized
//! bodies, and turn the answer into JSON or a classified [`ApiError`].

use std::time::Duration;

use super::{ApiClient, ApiError, ErrorBody, MAX_BODY_BYTES, ServiceError, server_wait_hint};

impl ApiClient {
    /// Sends `req` and reads its answer: the JSON object and its RequestId.
    pub(super) async fn exchange(
        &self,
        action: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<(serde_json::Value, String), ApiError> {
        let timeout = self.settings.timeout;
        let mut resp = req
            .send()
            .await
            .map_err(|e| transport_error(action, &self.host, timeout, e))?;
        let status = resp.status().as_u16();
        refuse_redirect(action, &resp)?;
        let hint = server_wait_hint(resp.headers());
        let body = read_body(action, &self.host, timeout, &mut resp).await?;
        decode(action, status, hint, &body)
    }
}

/// A failure of the connection itself; `not_sent` when nothing reached the server.
/// It names the endpoint's `host` (never the URL: its query holds the signature).
fn transport_error(action: &str, host: &str, timeout: Duration, e: reqwest::Error) -> ApiError {
    let not_sent = e.is_connect();
    let detail = if e.is_timeout() {
        format!(
            "no answer from {host} within {}",
            humantime::format_duration(timeout)
        )
    } else if e.is_connect() {
        format!(
            "cannot connect to {host}: {}; check the endpoint in the configuration (api.endpoint, api.dns_endpoint), DNS, firewall and proxy",
            error_chain(&e.without_url())
        )
    } else {
        format!(
            "exchange with {host} failed: {}",
            error_chain(&e.without_url())
        )
    };
    ApiError::Transport {
        action: action.to_owned(),
        not_sent,
        detail,
    }
}

/// A redirect answer becomes [`ApiError::Redirect`]; it is never followed.
fn refuse_redirect(action: &str, resp: &reqwest::Response) -> Result<(), ApiError> {
    if !resp.status().is_redirection() {
        return Ok(());
    }
    let location = resp.headers().get(reqwest::header::LOCATION).map_or_else(
        || "(no Location header)".to_owned(),
        |v| preview(v.as_bytes()),
    );
    Err(ApiError::Redirect {
        action: action.to_owned(),
        status: resp.status().as_u16(),
        location,
    })
}

/// The whole body, refused as soon as it is known to pass [`MAX_BODY_BYTES`]
/// (from Content-Length, or while reading when that is absent or wrong).
async fn read_body(
    action: &str,
    host: &str,
    timeout: Duration,
    resp: &mut reqwest::Response,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || ApiError::TooLarge {
        action: action.to_owned(),
    };
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(action, host, timeout, e))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The answer as a JSON object and its RequestId; an error status becomes
/// [`ApiError::Service`] (with the server's wait `hint`) when it names a Code.
fn decode(
    action: &str,
    status: u16,
    hint: Option<Duration>,
    body: &[u8],
) -> Result<(serde_json::Value, String), ApiError> {
    let malformed = |detail: String| ApiError::Malformed {
        action: action.to_owned(),
        status,
        request_id: String::new(),
        detail,
    };
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| malformed(format!("body is not JSON ({e}): {}", preview(body))))?;
    if !(200..300).contains(&status) {
        let err: ErrorBody = serde_json::from_value(value).unwrap_or_default();
        return Err(match err.code {
            Some(code) => ApiError::Service(Box::new(ServiceError {
                action: action.to_owned(),
                status,
                code,
                message: err.message.unwrap_or_default(),
                request_id: err.request_id.unwrap_or_default(),
                host_id: err.host_id,
                retry_after: hint,
            })),
            None => malformed(format!("error answer without a Code: {}", preview(body))),
        });
    }
    let request_id = value
        .get("RequestId")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_owned();
    if !value.is_object() {
        return Err(ApiError::Malformed {
            action: action.to_owned(),
            status,
            request_id,
            detail: "body is JSON but not an object".into(),
        });
    }
    Ok((value, request_id))
}

/// A short, single-line look at a body for error messages.
fn preview(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    let mut s: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if body.len() > 200 {
        s.push('…');
    }
    s
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_failure_names_the_host_but_not_the_signed_url() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let host = format!("127.0.0.1:{port}");
        let e = reqwest::Client::new()
            .get(format!("http://{host}/?Signature=SIGNATURE-VALUE"))
            .send()
            .await
            .expect_err("nothing listens there");
        let err = transport_error("ListUserCertificateOrder", &host, Duration::from_secs(5), e);
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "ListUserCertificateOrder: cannot connect to {host}: "
            )),
            "{text}"
        );
        assert!(text.contains("api.endpoint"), "{text}");
        assert!(!text.contains("SIGNATURE-VALUE"), "{text}");
        assert!(matches!(err, ApiError::Transport { not_sent: true, .. }));
    }
}

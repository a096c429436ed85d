//! The HTTP channels: the generic webhook and the DingTalk, Feishu/Lark and WeCom
//! group robots. A robot answers 200 with an error code in the body when it
//! refuses a message, so the body is checked too.

use chrono::Utc;
use serde_json::Value;

use super::format::{dingtalk_body, feishu_body, text, wecom_body};
use super::sign::{dingtalk_sign, feishu_sign, webhook_signature};
use super::{Event, NotifyError, SEND_TIMEOUT};
use crate::secret::Secret;

/// The robot flavours of an HTTP channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Robot {
    Webhook,
    DingTalk,
    Feishu,
    WeCom,
}

/// An opened HTTP channel. The URL may carry the robot's token, so it is kept as
/// a secret and never printed.
pub(super) struct HttpTarget {
    pub(super) robot: Robot,
    pub(super) url: Secret,
    pub(super) secret: Option<Secret>,
}

/// The header of the generic webhook's signature.
pub const SIGNATURE_HEADER: &str = "X-Cas-Renewd-Signature";

pub(super) fn client() -> Result<reqwest::Client, NotifyError> {
    reqwest::Client::builder()
        .user_agent(concat!("cas-renewd/", env!("CARGO_PKG_VERSION")))
        // A redirect would resend the body, signature and all, somewhere else.
        .redirect(reqwest::redirect::Policy::none())
        .timeout(SEND_TIMEOUT)
        .build()
        .map_err(|e| {
            NotifyError::Send(format!("cannot build the HTTP client: {}", e.without_url()))
        })
}

/// Sends `e` (its text already scrubbed) once.
pub(super) async fn send(
    http: &reqwest::Client,
    t: &HttpTarget,
    e: &Event,
) -> Result<(), NotifyError> {
    let mut url = reqwest::Url::parse(t.url.expose())
        .map_err(|_| NotifyError::Invalid("the URL is not valid".into()))?;
    let secret = t.secret.as_ref().map(Secret::expose);
    let body: Vec<u8> = match t.robot {
        Robot::Webhook => serde_json::to_vec(e),
        Robot::DingTalk => {
            if let Some(s) = secret {
                let ts = Utc::now().timestamp_millis();
                url.query_pairs_mut()
                    .append_pair("timestamp", &ts.to_string())
                    .append_pair("sign", &dingtalk_sign(ts, s));
            }
            serde_json::to_vec(&dingtalk_body(&text(e)))
        }
        Robot::Feishu => {
            let signed = secret.map(|s| {
                let ts = Utc::now().timestamp();
                (ts, feishu_sign(ts, s))
            });
            serde_json::to_vec(&feishu_body(&text(e), signed))
        }
        Robot::WeCom => serde_json::to_vec(&wecom_body(&text(e))),
    }
    .map_err(|err| NotifyError::Invalid(format!("cannot encode the message: {err}")))?;
    let mut req = http.post(url).header(
        reqwest::header::CONTENT_TYPE,
        "application/json; charset=utf-8",
    );
    if let (Robot::Webhook, Some(s)) = (t.robot, secret) {
        req = req.header(SIGNATURE_HEADER, webhook_signature(s, &body));
    }
    // Errors without the URL: it may hold the robot's token.
    let resp = req
        .body(body)
        .send()
        .await
        .map_err(|err| NotifyError::Send(err.without_url().to_string()))?;
    let status = resp.status();
    let answer = resp.bytes().await.unwrap_or_default();
    if !status.is_success() {
        return Err(NotifyError::Refused(format!(
            "HTTP {status}: {}",
            excerpt(&answer)
        )));
    }
    check_answer(t.robot, &answer)
}

/// The robots' own verdict: DingTalk and WeCom `errcode`, Feishu `code` (or the
/// older `StatusCode`), 0 meaning accepted. The generic webhook needs only 2xx.
fn check_answer(robot: Robot, answer: &[u8]) -> Result<(), NotifyError> {
    let field = match robot {
        Robot::Webhook => return Ok(()),
        Robot::DingTalk | Robot::WeCom => &["errcode"][..],
        Robot::Feishu => &["code", "StatusCode"][..],
    };
    let v: Value = serde_json::from_slice(answer)
        .map_err(|_| NotifyError::Refused(format!("not a JSON answer: {}", excerpt(answer))))?;
    let code = field.iter().find_map(|f| v.get(*f).and_then(Value::as_i64));
    match code {
        Some(0) => Ok(()),
        _ => Err(NotifyError::Refused(excerpt(answer))),
    }
}

/// A receiver's answer, short and printable, for a log line.
fn excerpt(answer: &[u8]) -> String {
    let s = String::from_utf8_lossy(answer);
    let s: String = s.chars().take(300).collect();
    super::scrub(&s, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn robots_refuse_in_the_body() {
        assert!(check_answer(Robot::DingTalk, br#"{"errcode":0,"errmsg":"ok"}"#).is_ok());
        assert!(
            check_answer(
                Robot::DingTalk,
                br#"{"errcode":310000,"errmsg":"sign not match"}"#
            )
            .is_err()
        );
        assert!(
            check_answer(
                Robot::WeCom,
                br#"{"errcode":93000,"errmsg":"invalid webhook url"}"#
            )
            .is_err()
        );
        assert!(check_answer(Robot::Feishu, br#"{"code":0,"msg":"success","data":{}}"#).is_ok());
        assert!(
            check_answer(
                Robot::Feishu,
                br#"{"StatusCode":0,"StatusMessage":"success"}"#
            )
            .is_ok()
        );
        assert!(check_answer(Robot::Feishu, br#"{"code":19021,"msg":"sign match fail"}"#).is_err());
        assert!(check_answer(Robot::Feishu, b"<html>").is_err());
        assert!(check_answer(Robot::Webhook, b"").is_ok());
    }
}

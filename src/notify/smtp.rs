//! E-mail through an SMTP relay with STARTTLS (lettre, rustls on aws-lc-rs).

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};

use super::format::{text, title};
use super::{Event, NotifyError, SEND_TIMEOUT, SmtpSpec, SmtpTls};
use crate::secret::Secret;

/// An opened SMTP channel.
pub(super) struct SmtpTarget {
    pub(super) spec: SmtpSpec,
    pub(super) password: Option<Secret>,
    /// The PEM of `ca_file`, read when the channel was opened.
    pub(super) ca_pem: Option<Vec<u8>>,
}

/// Whether `s` is an address lettre accepts (`name <user@host>` or `user@host`).
pub fn check_mailbox(s: &str) -> Result<(), String> {
    s.parse::<Mailbox>()
        .map(|_| ())
        .map_err(|e| format!("{s:?} is not an e-mail address: {e}"))
}

fn transport(t: &SmtpTarget) -> Result<AsyncSmtpTransport<Tokio1Executor>, NotifyError> {
    let tls = match t.spec.tls {
        SmtpTls::Starttls => {
            let mut params = TlsParameters::builder(t.spec.host.clone());
            if let Some(pem) = &t.ca_pem {
                let ca = Certificate::from_pem(pem)
                    .map_err(|e| NotifyError::Invalid(format!("ca_file: {e}")))?;
                params = params.add_root_certificate(ca);
            }
            Tls::Required(
                params
                    .build_rustls()
                    .map_err(|e| NotifyError::Invalid(format!("TLS setup: {e}")))?,
            )
        }
        SmtpTls::None => Tls::None,
    };
    let mut b = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(t.spec.host.clone())
        .port(t.spec.port)
        .tls(tls)
        .timeout(Some(SEND_TIMEOUT));
    if let Some(user) = &t.spec.username {
        let password = t.password.as_ref().map_or("", Secret::expose);
        b = b.credentials(Credentials::new(user.clone(), password.to_owned()));
    }
    Ok(b.build())
}

/// Sends `e` (already scrubbed) once, to every `to` address in one message.
pub(super) async fn send(t: &SmtpTarget, e: &Event) -> Result<(), NotifyError> {
    let parse = |s: &str| {
        s.parse::<Mailbox>()
            .map_err(|err| NotifyError::Invalid(format!("{s:?}: {err}")))
    };
    let mut m = Message::builder()
        .from(parse(&t.spec.from)?)
        .subject(title(e))
        .header(ContentType::TEXT_PLAIN);
    for to in &t.spec.to {
        m = m.to(parse(to)?);
    }
    let message = m
        .body(text(e))
        .map_err(|err| NotifyError::Invalid(format!("cannot build the message: {err}")))?;
    transport(t)?
        .send(message)
        .await
        .map(|_| ())
        .map_err(|err| NotifyError::Send(super::scrub(&err.to_string(), &[])))
}

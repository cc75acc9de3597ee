//! E-mail receivers: notifications sent over SMTP with `lettre`. TLS is the default:
//! `smtps://host[:465]` opens TLS first, `smtp://host[:587]` requires STARTTLS; plain text
//! only when asked for (`?tls=none`), and never with a login to a host that is not loopback.
//! The server's certificate is checked against the system's roots. Every message carries the
//! notification id in its `Message-ID`, the same on every retry.

use std::time::Duration;

use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use vigil_alerting::Notification;
use vigil_alerting::ReceiverConfig;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach the SMTP server, from the receiver's `url`.
struct Server {
    host: String,
    port: Option<u16>,
    tls: Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tls {
    /// TLS from the first byte (port 465).
    Wrapper,
    /// STARTTLS, required (port 587).
    Starttls,
    /// None: only when the URL says `tls=none`.
    Plain,
}

fn server(r: &ReceiverConfig) -> Result<Server, String> {
    let raw = r.url.as_deref().unwrap_or("");
    let url = reqwest::Url::parse(raw).map_err(|e| format!("url: {raw:?} is not a URL ({e})"))?;
    let host = url
        .host_str()
        .ok_or_else(|| format!("url: {raw:?} names no host"))?
        .to_string();
    let asked = url.query_pairs().find(|(k, _)| k == "tls").map(|(_, v)| v.to_string());
    let tls = match (url.scheme(), asked.as_deref()) {
        ("smtps", None) => Tls::Wrapper,
        ("smtp", None | Some("required")) => Tls::Starttls,
        ("smtp", Some("none")) => Tls::Plain,
        (scheme, tls) => {
            return Err(format!(
                "url: {scheme}:// with tls={tls:?}; use smtps://host, smtp://host (STARTTLS) or smtp://host?tls=none"
            ));
        }
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if tls == Tls::Plain && r.username.is_some() && !loopback {
        return Err(
            "url: refusing to send a password in plain text to a host that is not loopback (drop tls=none)".into(),
        );
    }
    Ok(Server {
        host,
        port: url.port(),
        tls,
    })
}

fn mailbox(field: &str, address: &str) -> Result<Mailbox, String> {
    address
        .parse()
        .map_err(|e| format!("{field}: {address:?} is not an e-mail address ({e})"))
}

/// Checks an e-mail receiver at startup; the error starts with the field at fault.
pub(crate) fn check(r: &ReceiverConfig) -> Result<(), String> {
    server(r)?;
    mailbox("from", r.from.as_deref().unwrap_or(""))?;
    for to in &r.to {
        mailbox("to", to)?;
    }
    Ok(())
}

/// Sends one notification as an e-mail; the server's answer (`250 …`), or why it failed.
pub(crate) async fn send(
    r: &ReceiverConfig,
    n: &Notification,
    subject: String,
    text: String,
) -> Result<String, String> {
    let server = server(r)?;
    let mut message = Message::builder()
        .from(mailbox("from", r.from.as_deref().unwrap_or(""))?)
        .subject(subject)
        .message_id(Some(format!("<{}@vigil>", n.id.replace(['<', '>', ' '], "_"))))
        .header(ContentType::TEXT_PLAIN);
    for to in &r.to {
        message = message.to(mailbox("to", to)?);
    }
    let message = message
        .body(text)
        .map_err(|e| format!("could not build the message: {e}"))?;
    let mut builder = match server.tls {
        Tls::Wrapper => AsyncSmtpTransport::<Tokio1Executor>::relay(&server.host),
        Tls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&server.host),
        Tls::Plain => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&server.host)),
    }
    .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    if let Some(port) = server.port {
        builder = builder.port(port);
    }
    if let (Some(user), Some(password)) = (&r.username, &r.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.0.clone()));
    }
    let timeout = r.timeout_secs.map_or(DEFAULT_TIMEOUT, Duration::from_secs);
    let transport = builder.timeout(Some(timeout)).build();
    let response = transport
        .send(message)
        .await
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    Ok(format!(
        "{} {}",
        response.code(),
        response.message().collect::<Vec<_>>().join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use vigil_alerting::{Password, ReceiverKind};

    use super::*;

    fn receiver(url: &str) -> ReceiverConfig {
        ReceiverConfig {
            name: "mail".into(),
            kind: ReceiverKind::Email,
            url: Some(url.into()),
            to: vec!["oncall@example.org".into()],
            from: Some("Vigil <vigil@example.org>".into()),
            ..ReceiverConfig::default()
        }
    }

    #[test]
    fn tls_is_the_default_and_plain_text_is_asked_for() {
        assert_eq!(
            server(&receiver("smtps://mail.example.org")).map(|s| s.tls),
            Ok(Tls::Wrapper)
        );
        assert_eq!(
            server(&receiver("smtp://mail.example.org:587")).map(|s| s.tls),
            Ok(Tls::Starttls)
        );
        assert_eq!(
            server(&receiver("smtp://127.0.0.1:2525?tls=none")).map(|s| s.tls),
            Ok(Tls::Plain)
        );
        assert!(server(&receiver("smtp://mail.example.org?tls=maybe")).is_err());
        let mut with_login = receiver("smtp://mail.example.org?tls=none");
        with_login.username = Some("vigil".into());
        with_login.password = Some(Password("hunter2".into()));
        let e = server(&with_login).err().unwrap_or_default();
        assert!(e.contains("plain text"), "{e}");
        assert!(
            !format!("{with_login:?}").contains("hunter2"),
            "the password never shows"
        );
        let mut bad = receiver("smtps://mail.example.org");
        bad.to = vec!["not an address@".into()];
        assert!(check(&bad).err().is_some_and(|e| e.starts_with("to:")));
        assert!(check(&receiver("smtps://mail.example.org")).is_ok());
    }
}

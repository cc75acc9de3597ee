//! An e-mail receiver against a real SMTP server (Python's aiosmtpd, from the test
//! requirements, writing to a maildir): the notification arrives with its subject, its
//! alert, a stable Message-ID and one-click links that work; the notification history
//! records the server's answer.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::json;
use vigil_e2e::{Collector, Options, eventually, get_json, post_alert};

/// aiosmtpd on a loopback port, killed on drop.
struct SmtpServer {
    child: Child,
    port: u16,
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_smtp(maildir: &Path) -> Result<SmtpServer> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("python3")
        .args([
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            &format!("127.0.0.1:{port}"),
            "-c",
            "aiosmtpd.handlers.Mailbox",
        ])
        .arg(maildir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start aiosmtpd (pip install -r tests/python/requirements.txt)")?;
    let server = SmtpServer { child, port };
    eventually(Duration::from_secs(30), "the SMTP server", || async move {
        Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()
            .map(|_| ()))
    })
    .await?;
    Ok(server)
}

/// The messages delivered to the maildir so far, their quoted-printable text decoded.
fn messages(maildir: &Path) -> Vec<String> {
    std::fs::read_dir(maildir.join("new"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .map(|m| unquote(&m))
        .collect()
}

/// Quoted-printable (RFC 2045): soft line breaks joined, `=XX` bytes restored.
fn unquote(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'=', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn an_email_receiver_delivers_over_smtp_with_working_links() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let maildir = dir.path().join("maildir");
    let smtp = start_smtp(&maildir).await?;
    let config = dir.path().join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[alerting.route]
receiver = "mail"
group_by = ["alertname"]
group_wait_secs = 1
group_interval_secs = 1

[[alerting.receivers]]
name = "mail"
kind = "email"
url = "smtp://127.0.0.1:{}?tls=none"
to = ["oncall@example.org"]
from = "Vigil <vigil@example.org>"
"#,
            smtp.port
        ),
    )?;
    let c = Collector::start_with(Options {
        args: vec!["--config".into(), config.display().to_string()],
        ..Options::default()
    })?;
    let client = reqwest::Client::new();
    let alert = json!([{ "labels": {"alertname": "DiskFull", "host": "db-1"},
                         "annotations": {"summary": "/var is 97% full"} }]);
    let id = post_alert(&client, &c, None, alert).await?;

    let dir_path = maildir.clone();
    let mail = eventually(Duration::from_secs(30), "the e-mail", move || {
        let d = dir_path.clone();
        async move { Ok(messages(&d).pop()) }
    })
    .await?;
    ensure!(mail.contains("Subject: [FIRING:1] DiskFull"), "{mail}");
    ensure!(mail.contains("To: oncall@example.org"), "{mail}");
    ensure!(mail.contains("Message-ID: <"), "{mail}");
    ensure!(
        mail.contains("/var is 97% full") && mail.contains("host=db-1"),
        "{mail}"
    );
    // The one-click link in the mail acknowledges the alert.
    let link = mail
        .lines()
        .find_map(|l| l.trim().strip_prefix("Acknowledge: "))
        .context("an acknowledge link")?
        .trim()
        .to_string();
    let r = client.post(&link).send().await?;
    ensure!(r.status() == 200, "{}: {}", link, r.status());
    let (_, alert) = get_json(&client, &c.api_url(&format!("/api/v1/alerts/{id}"))).await?;
    ensure!(alert["state"] == "acknowledged", "{alert}");

    // The history has the SMTP server's answer.
    let (_, history) = get_json(&client, &c.api_url(&format!("/api/v1/alerts/{id}/notifications"))).await?;
    let answer = history["deliveries"][0]["answer"].as_str().unwrap_or_default();
    ensure!(answer.starts_with("250"), "{history}");
    Ok(())
}

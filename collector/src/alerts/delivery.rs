//! The delivery loop: timers advanced, due notifications sent to their receivers (webhook,
//! Slack, PagerDuty, e-mail) concurrently, outcomes recorded.

use super::*;

impl AlertService {
    /// The delivery loop: advance timers, send what is due, record outcomes.
    pub(crate) async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            // A cluster's standby correlator sends nothing: the active one does, from the
            // same (replicated) outbox.
            if !self.leading() {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = self.wake.notified() => {}
                    () = tokio::time::sleep(IDLE_WAKE) => {}
                }
                continue;
            }
            // Store writes fsync: keep them off the async workers.
            let this = Arc::clone(&self);
            let ticked = tokio::task::spawn_blocking(move || {
                this.mutate(|e, now| {
                    e.tick(now);
                    e.due(now)
                })
            })
            .await;
            let due =
                match ticked.unwrap_or_else(|e| Err(AlertServiceError::Action(ActionError::Invalid(e.to_string())))) {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::error!(error = %e, "alerting state could not be saved; retrying");
                        Vec::new()
                    }
                };
            if !due.is_empty() {
                let sends = due.into_iter().map(|n| {
                    let this = Arc::clone(&self);
                    async move {
                        // Leadership may have moved since the batch was picked: then it is
                        // not sent, and not counted as an attempt either.
                        let result = if this.leading() {
                            Some(this.send(&n).await)
                        } else {
                            None
                        };
                        (n, result)
                    }
                });
                let results: Vec<_> = futures::future::join_all(sends)
                    .await
                    .into_iter()
                    .filter_map(|(n, r)| Some((n, r?)))
                    .collect();
                let this = Arc::clone(&self);
                let saved = tokio::task::spawn_blocking(move || {
                    this.mutate(|e, now| {
                    for (n, r) in &results {
                        match r {
                            Ok(answer) => e.delivered(&n.id, answer, now),
                            Err(err) => {
                                tracing::warn!(receiver = %n.receiver, notification = %n.id, error = %err, "delivery failed; will retry");
                                e.failed(&n.id, err, now);
                            }
                        }
                    }
                    })
                })
                .await
                .unwrap_or_else(|e| Err(AlertServiceError::Action(ActionError::Invalid(e.to_string()))));
                if let Err(e) = saved {
                    tracing::error!(error = %e, "could not record delivery outcomes");
                }
                continue;
            }
            let wait = self
                .lock()
                .next_due_ms()
                .map_or(IDLE_WAKE, |t| {
                    Duration::from_millis(u64::try_from(t - now_ms()).unwrap_or(0))
                })
                .min(IDLE_WAKE);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Renders a payload with the links of this collector (the context lives only for the
    /// call, so nothing of it is held across an await).
    fn render<T>(&self, f: impl FnOnce(&Context<'_>) -> T) -> T {
        let external_url = self.external_url();
        let link = |n: &Notification, a: &Alert, action: LinkAction| self.link_url(n, a, action);
        f(&Context {
            external_url: &external_url,
            link: &link,
        })
    }

    /// Sends one notification; the receiver's answer, or why it failed.
    async fn send(&self, n: &Notification) -> Result<String, String> {
        let Some(receiver) = self.receivers.get(&n.receiver) else {
            return Err(format!("receiver {:?} is not configured", n.receiver));
        };
        if receiver.kind == ReceiverKind::Email {
            let (subject, text) = self.render(|ctx| notification_email(n, ctx));
            return super::email::send(receiver, n, subject, text).await;
        }
        let Some(url) = &receiver.url else {
            // A receiver without a URL only records (useful while setting up routing).
            return Ok("recorded only: the receiver has no URL".into());
        };
        let body = self
            .render(|ctx| serde_json::to_vec(&notification_body(receiver, n, ctx)))
            .map_err(|e| e.to_string())?;
        let ts = now_ms() / 1000;
        let signature = sign_body(self.signing_secret.expose().as_bytes(), ts, &body);
        let timeout = receiver
            .timeout_secs
            .map_or(DEFAULT_RECEIVER_TIMEOUT, Duration::from_secs);
        let response = self
            .client
            .post(url)
            .timeout(timeout)
            .header("content-type", "application/json")
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, signature)
            .header(IDEMPOTENCY_HEADER, &n.id)
            .body(body)
            .send()
            .await
            // With its causes: "error sending request" alone reads the same for a refused
            // connection, a timeout and a name that does not resolve.
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
        let status = response.status();
        // What the receiver said, for the notification history: its first KiB (a receiver
        // answering with megabytes must not make us read them).
        let mut response = response;
        let mut head: Vec<u8> = Vec::new();
        while head.len() < ANSWER_BYTES {
            match response.chunk().await {
                Ok(Some(chunk)) => head.extend_from_slice(&chunk[..chunk.len().min(ANSWER_BYTES - head.len())]),
                _ => break,
            }
        }
        let said = String::from_utf8_lossy(&head)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let answer = if said.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {said}")
        };
        if status.is_success() {
            Ok(answer)
        } else {
            Err(format!("receiver answered {answer}"))
        }
    }

    /// Delivery attempts `keep` accepts, newest first.
    pub(crate) fn deliveries(
        &self,
        keep: impl Fn(&Delivery) -> bool,
        limit: usize,
    ) -> Result<Vec<Delivery>, AlertServiceError> {
        Ok(self.store.deliveries(keep, limit)?)
    }
}

//! The `webhook` executor: a JSON POST with an idempotency key, retried
//! with exponential backoff on connection errors, timeouts, 408, 429 and
//! 5xx; other answers are final.

use super::Job;
use super::pool::Attempted;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A configured webhook, resolved once at start.
pub struct WebhookTarget {
    pub url: String,
    /// Budget of one attempt.
    pub timeout: Duration,
    /// Further attempts after a retryable failure.
    pub retries: u32,
    /// Wait before the first retry, doubled for each next one.
    pub backoff: Duration,
    pub headers: reqwest::header::HeaderMap,
}

/// POST the job, retrying as configured. `attempts` is kept current so a
/// cancellation can report how many were made.
pub async fn post(
    client: &reqwest::Client,
    target: &WebhookTarget,
    job: &Job,
    started_at: i64,
    attempts: &AtomicU32,
) -> Attempted {
    let mut last_error = String::new();
    let mut last_status = None;
    for attempt in 1..=target.retries + 1 {
        attempts.store(attempt, Ordering::Relaxed);
        let sent = client
            .post(&target.url)
            .timeout(target.timeout)
            .headers(target.headers.clone())
            .header("idempotency-key", job.idempotency_key.as_str())
            .json(&job.body(attempt))
            .send()
            .await;
        let retryable = match sent {
            Ok(resp) => {
                let status = resp.status();
                last_status = Some(status.as_u16());
                if status.is_success() {
                    return Attempted {
                        ok: true,
                        started_at,
                        attempts: attempt,
                        http_status: last_status,
                        error: None,
                        detail: format!("POST {}: HTTP {}", target.url, status.as_u16()),
                    };
                }
                let text = match resp.bytes().await {
                    Ok(b) => String::from_utf8_lossy(&b[..b.len().min(300)]).into_owned(),
                    Err(_) => String::new(),
                };
                last_error = format!("HTTP {}: {}", status.as_u16(), text.trim());
                status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT
            }
            Err(e) => {
                last_status = None;
                last_error = if e.is_timeout() {
                    format!("timed out after {} ms", target.timeout.as_millis())
                } else if e.is_connect() {
                    format!("connection failed: {}", with_causes(&e))
                } else {
                    format!("request failed: {}", with_causes(&e))
                };
                true
            }
        };
        if !retryable || attempt > target.retries {
            break;
        }
        tokio::time::sleep(backoff_for(target.backoff, attempt - 1)).await;
    }
    let n = attempts.load(Ordering::Relaxed);
    Attempted {
        ok: false,
        started_at,
        attempts: n,
        http_status: last_status,
        detail: format!(
            "POST {}: failed after {n} attempt(s): {last_error}",
            target.url
        ),
        error: Some(last_error),
    }
}

/// Wait before retry `i` (0-based): base × 2^i, at most 30 s.
pub fn backoff_for(base: Duration, i: u32) -> Duration {
    base.saturating_mul(1u32 << i.min(16))
        .min(Duration::from_secs(30))
}

/// An error with its causes ("error sending request: ...: invalid peer
/// certificate: UnknownIssuer"): reqwest's own message names none of them.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::with_causes;

    #[derive(Debug)]
    struct Sending(std::io::Error);

    impl std::fmt::Display for Sending {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("error sending request")
        }
    }

    impl std::error::Error for Sending {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn an_error_is_shown_with_its_causes() {
        let e = Sending(std::io::Error::other(
            "invalid peer certificate: UnknownIssuer",
        ));
        assert_eq!(
            with_causes(&e),
            "error sending request: invalid peer certificate: UnknownIssuer"
        );
        let e: Box<dyn std::error::Error> = "no cause".into();
        assert_eq!(with_causes(e.as_ref()), "no cause");
    }
}

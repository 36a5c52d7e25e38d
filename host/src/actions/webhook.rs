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
                    format!("connection failed: {e}")
                } else {
                    format!("request failed: {e}")
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

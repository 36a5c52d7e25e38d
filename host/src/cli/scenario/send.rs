//! A scenario sent to a running service: POST /events (NDJSON), one batch
//! at a time so that the service sees the events in event-time order, as
//! fast as it accepts them. A busy service (503) or a slow store (504) is
//! waited for and the batch sent again; the events carry their ids, so a
//! batch stored twice is absorbed as duplicates.

use std::time::{Duration, Instant};

/// What the service answered, summed.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct Sent {
    pub sent: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub rejected: u64,
    /// Times a batch was sent again (503, 504, connection errors).
    pub retries: u64,
}

/// Consecutive failures of one batch before giving up.
const MAX_ATTEMPTS: u32 = 50;

/// Send `lines` (NDJSON events) to `target` in batches of `batch`.
pub async fn send(
    lines: impl Iterator<Item = String>,
    target: &str,
    batch: usize,
    quiet: bool,
) -> anyhow::Result<Sent> {
    let url = format!("{}/events", target.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()?;
    let (mut totals, started, mut last_report) = (Sent::default(), Instant::now(), Instant::now());
    let mut body = String::new();
    let mut n = 0u64;
    let mut lines = lines.peekable();
    while let Some(line) = lines.next() {
        body.push_str(&line);
        body.push('\n');
        n += 1;
        if n as usize == batch.max(1) || lines.peek().is_none() {
            post(&client, &url, std::mem::take(&mut body), n, &mut totals).await?;
            n = 0;
        }
        if !quiet && last_report.elapsed() >= Duration::from_secs(2) {
            let rate = totals.sent as f64 / started.elapsed().as_secs_f64();
            eprintln!(
                "[{:6.1}s] sent {:>9}  accepted {:>9}  rejected {:>6}  retries {:>4}  {rate:>8.0} ev/s",
                started.elapsed().as_secs_f64(),
                totals.sent,
                totals.accepted,
                totals.rejected,
                totals.retries
            );
            last_report = Instant::now();
        }
    }
    Ok(totals)
}

/// One batch, until the service took it.
async fn post(
    client: &reqwest::Client,
    url: &str,
    body: String,
    events: u64,
    totals: &mut Sent,
) -> anyhow::Result<()> {
    let body = bytes::Bytes::from(body);
    for attempt in 1..=MAX_ATTEMPTS {
        let resp = client
            .post(url)
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await;
        let wait = match resp {
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                let count = |k: &str| v[k].as_u64().unwrap_or(0);
                totals.sent += events;
                totals.accepted += count("accepted");
                totals.duplicates += count("duplicates");
                totals.rejected += count("rejected");
                return Ok(());
            }
            Ok(r) if matches!(r.status().as_u16(), 503 | 504) => retry_after(&r),
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                anyhow::bail!(
                    "POST {url}: {status}: {}",
                    text.chars().take(500).collect::<String>()
                )
            }
            Err(e) if attempt == MAX_ATTEMPTS => return Err(e.into()),
            Err(_) => Duration::from_millis(200 * attempt.min(10) as u64),
        };
        totals.retries += 1;
        tokio::time::sleep(wait).await;
    }
    anyhow::bail!("POST {url}: still refused after {MAX_ATTEMPTS} attempts")
}

/// The wait a 503 asks for (Retry-After, seconds), at most 5 s; 100 ms when
/// it says nothing.
fn retry_after(r: &reqwest::Response) -> Duration {
    r.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(Duration::from_millis(100), |s| {
            Duration::from_secs(s.min(5))
        })
}

//! Metrics push to a Prometheus Pushgateway (the requirements'
//! `CUSTOM_METRICS_ENDPOINT`, `monitoring.custom_metrics_endpoint`).
//!
//! When the endpoint is set, a task PUTs the whole registry, in the text
//! exposition format, to
//! `{endpoint}/metrics/job/{service.name}/instance/{host:port}` every
//! `performance_metrics.update_interval` seconds, and once more at shutdown.
//! PUT replaces the group's metrics, so a metric family that disappears from
//! the registry disappears from the gateway too. A failed push is logged
//! (the first of a run of failures as a warning, then every 60th, and the
//! recovery) and the next one is tried on schedule: the gateway being away
//! never affects processing.

use super::Metrics;
use crate::config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Longest wait for one push.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The running push task.
pub struct Pusher {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Pusher {
    /// Push a last time (the final counts) and stop. Dropping the pusher
    /// without calling this also makes it push once more and stop.
    pub async fn finish(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Start the pusher when `monitoring.custom_metrics_endpoint` is set.
/// `bound` is the service's listening address (the `instance` label).
/// Needs a tokio runtime when the endpoint is set.
pub fn spawn(config: &Config, metrics: Arc<Metrics>, bound: SocketAddr) -> Option<Pusher> {
    let endpoint = config.monitoring.custom_metrics_endpoint.trim();
    if endpoint.is_empty() {
        return None;
    }
    let url = push_url(endpoint, &config.service.name, &instance_label(bound));
    let every = Duration::from_secs(config.performance_metrics.update_interval.max(1));
    let client = match crate::tls::http_client(&config.tls.client)
        .and_then(|b| Ok(b.timeout(PUSH_TIMEOUT).build()?))
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "metrics push disabled: HTTP client");
            return None;
        }
    };
    tracing::info!(url = %url, every_s = every.as_secs(), "pushing metrics to the Pushgateway");
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(client, url, every, metrics, stopped));
    Some(Pusher { stop, task })
}

async fn run(
    client: reqwest::Client,
    url: String,
    every: Duration,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u64;
    loop {
        let last = tokio::select! {
            _ = ticker.tick() => false,
            // A closed channel (sender dropped) is a stop too.
            _ = stop.wait_for(|s| *s) => true,
        };
        match push_once(&client, &url, &metrics).await {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(url = %url, after_failures = failures, "metrics push recovered");
                }
                failures = 0;
            }
            Err(e) => {
                failures += 1;
                if failures == 1 || failures.is_multiple_of(60) {
                    tracing::warn!(url = %url, failures, error = %e, "metrics push failed; retrying on schedule");
                }
            }
        }
        if last {
            return;
        }
    }
}

/// One PUT of the whole registry.
pub async fn push_once(
    client: &reqwest::Client,
    url: &str,
    metrics: &Metrics,
) -> anyhow::Result<()> {
    let body = metrics.render();
    let resp = client
        .put(url)
        .header(
            reqwest::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        anyhow::bail!(
            "HTTP {status}: {}",
            text.trim().chars().take(300).collect::<String>()
        );
    }
    Ok(())
}

/// `{endpoint}/metrics/job/{job}/instance/{instance}`, each value a path
/// segment (base64url-encoded, as the Pushgateway accepts with the `@base64`
/// suffix, when it holds anything but unreserved characters and `:`).
pub fn push_url(endpoint: &str, job: &str, instance: &str) -> String {
    format!(
        "{}/metrics/{}/{}",
        endpoint.trim_end_matches('/'),
        label_segment("job", job),
        label_segment("instance", instance)
    )
}

fn label_segment(name: &str, value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':'));
    if plain {
        format!("{name}/{value}")
    } else {
        // An empty value is "=" in base64 form, per the Pushgateway docs.
        let encoded = if value.is_empty() {
            "=".to_string()
        } else {
            base64url(value.as_bytes())
        };
        format!("{name}@base64/{encoded}")
    }
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        let chars = chunk.len() + 1;
        for i in 0..4 {
            if i < chars {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The `instance` label: the bound address, or the host name with the port
/// when the service listens on every interface.
pub fn instance_label(bound: SocketAddr) -> String {
    if bound.ip().is_unspecified() {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".into());
        format!("{host}:{}", bound.port())
    } else {
        bound.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn urls() {
        assert_eq!(
            push_url(
                "http://127.0.0.1:9091/",
                "event-processing-api",
                "127.0.0.1:9100"
            ),
            "http://127.0.0.1:9091/metrics/job/event-processing-api/instance/127.0.0.1:9100"
        );
        // A value with a slash is base64url-encoded.
        assert_eq!(
            push_url("http://127.0.0.1:9091", "a/b", "[::1]:9100"),
            "http://127.0.0.1:9091/metrics/job@base64/YS9i/instance@base64/Wzo6MV06OTEwMA=="
        );
        assert_eq!(label_segment("instance", ""), "instance@base64/=");
        assert_eq!(base64url(b"f"), "Zg==");
        assert_eq!(base64url(b"fo"), "Zm8=");
        assert_eq!(base64url(b"foo"), "Zm9v");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8=");
    }

    #[test]
    fn instance_of_wildcard_address_is_the_host_name() {
        let l = instance_label("0.0.0.0:9100".parse().unwrap());
        assert!(l.ends_with(":9100") && !l.starts_with("0.0.0.0"), "{l}");
        assert_eq!(
            instance_label("127.0.0.1:9100".parse().unwrap()),
            "127.0.0.1:9100"
        );
    }

    /// A one-request HTTP server: answers `status` and returns the request.
    async fn one_request(listener: &tokio::net::TcpListener, status: &'static str) -> String {
        let (mut sock, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = sock.read(&mut chunk).await.unwrap();
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break;
                }
            }
        }
        let resp = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        sock.write_all(resp.as_bytes()).await.unwrap();
        String::from_utf8(buf).unwrap()
    }

    #[tokio::test]
    async fn pushes_the_text_exposition() {
        let metrics = Metrics::new();
        metrics.throughput.set(12.5);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { one_request(&listener, "200 OK").await });
        let url = push_url(
            &format!("http://{addr}"),
            "event-processing-api",
            "127.0.0.1:9100",
        );
        let client = reqwest::Client::new();
        push_once(&client, &url, &metrics).await.unwrap();
        let req = server.await.unwrap();
        assert!(
            req.starts_with(
                "PUT /metrics/job/event-processing-api/instance/127.0.0.1:9100 HTTP/1.1"
            ),
            "{req}"
        );
        assert!(
            req.contains("# TYPE event_processing_throughput gauge"),
            "{req}"
        );
        assert!(req.contains("event_processing_throughput 12.5"), "{req}");
    }

    #[tokio::test]
    async fn a_refused_push_is_an_error() {
        let metrics = Metrics::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { one_request(&listener, "400 Bad Request").await });
        let err = push_once(
            &reqwest::Client::new(),
            &format!("http://{addr}/metrics/job/x"),
            &metrics,
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains("400"), "{err}");
        server.await.unwrap(); // the listener is dropped here
        // Nothing listens any more: a connection error, not a panic.
        assert!(
            push_once(
                &reqwest::Client::new(),
                &format!("http://{addr}/metrics/job/x"),
                &metrics
            )
            .await
            .is_err()
        );
    }

    #[tokio::test]
    async fn stops_after_a_last_push() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut config = Config::default();
        config.monitoring.custom_metrics_endpoint = format!("http://{addr}");
        config.performance_metrics.update_interval = 3600;
        let server = tokio::spawn(async move {
            // The immediate first tick, then the shutdown push.
            let first = one_request(&listener, "200 OK").await;
            let second = one_request(&listener, "200 OK").await;
            (first, second)
        });
        let pusher = spawn(
            &config,
            Arc::new(Metrics::new()),
            "127.0.0.1:9100".parse().unwrap(),
        )
        .expect("endpoint set");
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::time::timeout(Duration::from_secs(10), pusher.finish())
            .await
            .unwrap();
        let (first, second) = tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap();
        assert!(first.starts_with("PUT /metrics/job/event-processing-api/instance/127.0.0.1:9100"));
        assert!(second.starts_with("PUT "), "{second}");
    }

    #[test]
    fn no_endpoint_no_task() {
        let config = Config::default();
        // No runtime needed: nothing is spawned.
        assert!(
            spawn(
                &config,
                Arc::new(Metrics::new()),
                "127.0.0.1:1".parse().unwrap()
            )
            .is_none()
        );
    }
}

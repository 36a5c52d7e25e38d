//! `hxp-events loadgen`: sends a realistic mix of the five event types to a
//! running service (POST /events, NDJSON) at a target rate.
//!
//! The mix: 60% llm_request (latency around a per-model median with a long
//! tail, 2% failures), 15% user_feedback (mostly 6 to 10), 10% system_metric
//! (rarely degraded), 5% business_event, 10% error_event. Every 30 s one
//! service ("vllm-mixtral") has a 5 s error burst: its requests fail 40% of
//! the time and it reports extra error events.
//!
//! Request bodies are generated ahead (64 for normal times, 64 for bursts)
//! and reused, so the generator spends its CPU on sending; the service
//! assigns every event a new id, so a reused body is new events.

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub struct Options {
    pub target: String,
    pub rate: u64,
    pub duration: Duration,
    pub batch: usize,
    pub concurrency: usize,
    pub seed: u64,
    pub quiet: bool,
}

#[derive(Default)]
struct Totals {
    sent: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    failed_requests: AtomicU64,
    busy: AtomicU64,
}

/// xorshift64*: deterministic for a seed, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next_u64() % xs.len() as u64) as usize]
    }
}

const MODELS: [&str; 4] = ["mixtral-8x7b", "llama-3-8b", "qwen-2-7b", "phi-3-mini"];
const SERVICES: [&str; 3] = ["inference-gateway", "vllm-mixtral", "vllm-llama"];
const BURSTING: &str = "vllm-mixtral";

/// One event as NDJSON text.
pub fn event(rng: &mut Rng, elapsed: Duration) -> String {
    let burst = elapsed.as_secs() % 30 < 5 && elapsed.as_secs() >= 5;
    let r = rng.unit();
    let v = if r < 0.60 {
        let model = rng.pick(&MODELS);
        let median = match model {
            "mixtral-8x7b" => 900.0,
            "llama-3-8b" => 350.0,
            "qwen-2-7b" => 420.0,
            _ => 150.0,
        };
        // Log-normal-ish: median times e^(0.5 z), z roughly normal.
        let z = (0..4).map(|_| rng.unit()).sum::<f64>() - 2.0;
        let latency = median * (z * 0.9).exp();
        let service = if model == "mixtral-8x7b" {
            BURSTING
        } else {
            rng.pick(&SERVICES)
        };
        let fail_p = if burst && service == BURSTING {
            0.4
        } else {
            0.02
        };
        let ok = rng.unit() >= fail_p;
        let tokens = 50 + rng.next_u64() % 800;
        let mut data = json!({
            "model": model, "service": service, "user_id": format!("user-{}", rng.next_u64() % 5000),
            "latency_ms": (latency * 10.0).round() / 10.0, "success": ok,
            "prompt_tokens": 100 + rng.next_u64() % 1500, "completion_tokens": tokens,
            "cost_usd": (tokens as f64 * 0.000002 * 1e6).round() / 1e6,
        });
        if !ok {
            data["error"] = json!("upstream error");
        }
        json!({"event_type": "llm_request", "data": data})
    } else if r < 0.75 {
        let s = (6.0 + rng.unit() * 4.5).min(10.0) - if rng.unit() < 0.1 { 4.0 } else { 0.0 };
        json!({"event_type": "user_feedback", "data": {
            "user_id": format!("user-{}", rng.next_u64() % 5000), "model": rng.pick(&MODELS),
            "satisfaction": (s * 10.0).round() / 10.0,
        }})
    } else if r < 0.85 {
        let health = if rng.unit() < 0.02 {
            "degraded"
        } else {
            "healthy"
        };
        json!({"event_type": "system_metric", "data": {
            "service": rng.pick(&SERVICES), "health": health,
            "cpu_percent": (rng.unit() * 900.0).round() / 10.0, "memory_percent": (rng.unit() * 900.0).round() / 10.0,
        }})
    } else if r < 0.90 {
        json!({"event_type": "business_event", "data": {
            "name": rng.pick(&["subscription_renewal", "upgrade", "api_credit_purchase"]),
            "value": ((rng.unit() * 500.0) * 100.0).round() / 100.0, "currency": "USD",
            "user_id": format!("user-{}", rng.next_u64() % 5000),
        }})
    } else {
        let service = if burst && rng.unit() < 0.7 {
            BURSTING
        } else {
            rng.pick(&SERVICES)
        };
        json!({"event_type": "error_event", "data": {
            "service": service, "error_type": rng.pick(&["timeout", "http_503", "oom"]),
            "severity": rng.pick(&["warning", "error", "critical"]),
        }})
    };
    v.to_string()
}

/// Run the load; prints progress to stderr each second, returns the summary.
pub async fn run(opts: Options) -> anyhow::Result<serde_json::Value> {
    let url = format!("{}/events", opts.target.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(opts.concurrency)
        .timeout(Duration::from_secs(60))
        .build()?;
    let totals = Arc::new(Totals::default());
    let slots = Arc::new(tokio::sync::Semaphore::new(opts.concurrency));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::<f64>::new()));
    let started = Instant::now();
    let bodies = Bodies::new(&opts);
    let mut next_body = 0usize;
    let mut due_sent = 0u64;
    let mut last_report = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    while started.elapsed() < opts.duration {
        let elapsed = started.elapsed();
        let due = (elapsed.as_secs_f64() * opts.rate as f64) as u64;
        while due_sent < due && started.elapsed() < opts.duration {
            let body = bodies.at(elapsed, next_body);
            next_body += 1;
            due_sent += opts.batch as u64;
            let permit = slots.clone().acquire_owned().await?;
            let request = Request {
                client: client.clone(),
                url: url.clone(),
                events: opts.batch as u64,
                totals: totals.clone(),
                latencies: latencies.clone(),
            };
            tasks.spawn(async move {
                request.send(body).await;
                drop(permit);
            });
            while tasks.try_join_next().is_some() {}
        }
        if !opts.quiet && last_report.elapsed() >= Duration::from_secs(1) {
            totals.report(started.elapsed().as_secs_f64());
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    while tasks.join_next().await.is_some() {}
    let lat = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(totals.summary(&opts, started.elapsed().as_secs_f64(), lat))
}

/// Request bodies generated ahead (64 for normal times, 64 for bursts) and
/// reused, so the generator spends its CPU on sending.
struct Bodies {
    normal: Vec<bytes::Bytes>,
    bursty: Vec<bytes::Bytes>,
}

impl Bodies {
    fn new(opts: &Options) -> Bodies {
        let mut rng = Rng(opts.seed.max(1));
        let mut make = |at: Duration| -> bytes::Bytes {
            let mut body = String::with_capacity(opts.batch * 260);
            for _ in 0..opts.batch {
                body.push_str(&event(&mut rng, at));
                body.push('\n');
            }
            bytes::Bytes::from(body)
        };
        let normal = (0..64).map(|_| make(Duration::from_secs(1))).collect();
        let bursty = (0..64).map(|_| make(Duration::from_secs(6))).collect();
        Bodies { normal, bursty }
    }

    /// The `n`-th body at `elapsed`: a burst for 5 s every 30 s, after the
    /// first 5 s.
    fn at(&self, elapsed: Duration, n: usize) -> bytes::Bytes {
        let in_burst = elapsed.as_secs() % 30 < 5 && elapsed.as_secs() >= 5;
        let bodies = if in_burst { &self.bursty } else { &self.normal };
        bodies[n % bodies.len()].clone()
    }
}

/// One POST of a body and what it counts.
struct Request {
    client: reqwest::Client,
    url: String,
    events: u64,
    totals: Arc<Totals>,
    latencies: Arc<std::sync::Mutex<Vec<f64>>>,
}

impl Request {
    async fn send(self, body: bytes::Bytes) {
        let t = Instant::now();
        let (n, totals) = (self.events, &self.totals);
        totals.sent.fetch_add(n, Ordering::Relaxed);
        let resp = self
            .client
            .post(&self.url)
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await;
        match resp {
            Ok(r) if r.status().is_success() => {
                let v: serde_json::Value = r.json().await.unwrap_or_default();
                let count = |k: &str| v[k].as_u64().unwrap_or(0);
                totals
                    .accepted
                    .fetch_add(count("accepted"), Ordering::Relaxed);
                totals
                    .rejected
                    .fetch_add(count("rejected"), Ordering::Relaxed);
            }
            Ok(r) if r.status() == reqwest::StatusCode::SERVICE_UNAVAILABLE => {
                totals.busy.fetch_add(n, Ordering::Relaxed);
            }
            Ok(_) => {
                totals.rejected.fetch_add(n, Ordering::Relaxed);
            }
            Err(_) => {
                totals.failed_requests.fetch_add(n, Ordering::Relaxed);
            }
        }
        self.latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(t.elapsed().as_secs_f64() * 1000.0);
    }
}

impl Totals {
    /// A progress line on stderr.
    fn report(&self, secs: f64) {
        eprintln!(
            "[{secs:6.1}s] sent {:>9}  accepted {:>9}  rejected {:>6}  busy {:>6}  failed {:>6}  {:>9.0} ev/s",
            self.sent.load(Ordering::Relaxed),
            self.accepted.load(Ordering::Relaxed),
            self.rejected.load(Ordering::Relaxed),
            self.busy.load(Ordering::Relaxed),
            self.failed_requests.load(Ordering::Relaxed),
            self.accepted.load(Ordering::Relaxed) as f64 / secs
        );
    }

    /// The run's figures, with request-time percentiles.
    fn summary(&self, opts: &Options, secs: f64, mut lat: Vec<f64>) -> serde_json::Value {
        lat.sort_by(f64::total_cmp);
        let q = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                .copied()
        };
        json!({
            "target": opts.target,
            "requested_rate": opts.rate,
            "seconds": secs,
            "sent": self.sent.load(Ordering::Relaxed),
            "accepted": self.accepted.load(Ordering::Relaxed),
            "rejected": self.rejected.load(Ordering::Relaxed),
            "busy": self.busy.load(Ordering::Relaxed),
            "failed": self.failed_requests.load(Ordering::Relaxed),
            "achieved_rate": self.accepted.load(Ordering::Relaxed) as f64 / secs,
            "request_ms_p50": q(0.5),
            "request_ms_p99": q(0.99),
        })
    }
}

/// The run's summary: a line for people on stderr, the JSON on stdout.
pub fn print_summary(summary: &serde_json::Value) {
    eprintln!(
        "sent {} events in {:.1} s: {} accepted, {} rejected, {} refused as busy, {} failed; achieved {:.0} events/s",
        summary["sent"],
        summary["seconds"].as_f64().unwrap_or(0.0),
        summary["accepted"],
        summary["rejected"],
        summary["busy"],
        summary["failed"],
        summary["achieved_rate"].as_f64().unwrap_or(0.0)
    );
    println!("{summary}");
}

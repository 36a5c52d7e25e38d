//! Kafka benchmark: events per second from a Kafka-protocol broker (tansu,
//! in-memory storage, on this machine) to processed through the three
//! plugins and persisted in SQLite, offsets stored.
//!
//! `cargo bench -p hxp-events --bench kafka` (part of `make bench`; needs
//! `tansu` on PATH or in ~/.cargo/bin, which `make test` installs).
//!
//! N events of the realistic mix are produced once into the five topics
//! (`HXP_BENCH_EVENTS`, default 400,000; `HXP_BENCH_PARTITIONS` per topic,
//! default 3: with 1, each topic is a single partition, the bare consumer's
//! ceiling being one partition's delivery rate).
//! Each run starts the release binary in a fresh consumer group with a fresh
//! database and measures from the first stored event to the last (the
//! service's own start-up and the group join are not counted), with the CPU
//! used meanwhile by the service and by the broker. Baseline, in the same
//! invocation: a bare librdkafka consumer in this process reading the same
//! messages from the same broker, doing nothing with them.

// Shared with the integration tests (paths, ports, CPU accounting).
#[path = "../../tests/common/mod.rs"]
mod common;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Events produced (`HXP_BENCH_EVENTS`).
fn event_count() -> usize {
    common::env_or("HXP_BENCH_EVENTS", 400_000)
}
const RUNS: usize = 3;
struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Run {
    rate: f64,
    service_cores: f64,
    broker_cores: f64,
}

fn stored(base: &str, rt: &tokio::runtime::Runtime) -> u64 {
    rt.block_on(async {
        let r = reqwest::get(format!("{base}/processing/pipeline"))
            .await
            .ok()?;
        r.json::<Value>().await.ok()
    })
    .and_then(|v| v["events"]["stored"].as_u64())
    .unwrap_or(0)
}

fn service_run(
    rt: &tokio::runtime::Runtime,
    bootstrap: &str,
    broker_pid: u32,
    group: &str,
    env: &[(&str, &str)],
) -> Run {
    let dir = common::tempdir();
    let port = common::free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hxp-events"));
    cmd.args(["serve", "--config"])
        .arg(common::root().join("config/event-processing.yaml"))
        .current_dir(common::root())
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/events.db", dir.display()),
        )
        .env("EVENT_PROCESSING_API_PORT", port.to_string())
        .env("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
        .env("KAFKA_CONSUMER_GROUP", group)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = Killed(cmd.spawn().unwrap());
    let pid = child.0.id();
    let base = format!("http://127.0.0.1:{port}");
    let t = Instant::now();
    // Wait for the first stored event.
    loop {
        if stored(&base, rt) > 0 {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(90), "nothing consumed");
        std::thread::sleep(Duration::from_millis(2));
    }
    let (s0, b0, n0, t0) = (
        common::cpu_seconds(pid),
        common::cpu_seconds(broker_pid),
        stored(&base, rt),
        Instant::now(),
    );
    // Until all are stored, or nothing more arrives for 5 s (then the
    // shortfall is reported: tansu's fetches can stop short of the end).
    let (mut last, mut last_at) = (n0, Instant::now());
    let (n1, secs) = loop {
        let n = stored(&base, rt);
        if n > last {
            (last, last_at) = (n, Instant::now());
        }
        if n >= event_count() as u64 || last_at.elapsed() > Duration::from_secs(5) {
            break (last, (last_at - t0).as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if n1 < event_count() as u64 {
        println!("note: {group}: {n1} of {} events stored", event_count());
    }
    let run = Run {
        rate: (n1 - n0) as f64 / secs,
        service_cores: (common::cpu_seconds(pid) - s0) / secs,
        broker_cores: (common::cpu_seconds(broker_pid) - b0) / secs,
    };
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    run
}

fn bare_consumer_run(bootstrap: &str, broker_pid: u32, group: &str) -> Run {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let topics = common::kafka_topics();
    let names: Vec<&str> = topics.iter().map(|(_, t)| t.as_str()).collect();
    c.subscribe(&names).unwrap();
    let (mut n, n_events) = (0usize, event_count());
    let mut started: Option<(Instant, f64, f64)> = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    while n < n_events && Instant::now() < deadline {
        if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
            if started.is_none() {
                started = Some((
                    Instant::now(),
                    common::cpu_seconds(std::process::id()),
                    common::cpu_seconds(broker_pid),
                ));
            }
            n += 1;
        }
    }
    assert_eq!(n, n_events, "bare consumer read all messages");
    let (t0, s0, b0) = started.unwrap();
    let secs = t0.elapsed().as_secs_f64();
    Run {
        rate: (n - 1) as f64 / secs,
        service_cores: (common::cpu_seconds(std::process::id()) - s0) / secs,
        broker_cores: (common::cpu_seconds(broker_pid) - b0) / secs,
    }
}

fn main() {
    let port = common::free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let broker = Killed(
        Command::new(common::tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu (cargo install tansu --locked --features dynostore,postgres)"),
    );
    let broker_pid = broker.0.id();
    let bootstrap = format!("127.0.0.1:{port}");
    while std::net::TcpStream::connect(&bootstrap).is_err() {
        std::thread::sleep(Duration::from_millis(50));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let produce_secs = rt.block_on(async {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let topics = common::kafka_topics();
        let partitions: i32 = common::env_or("HXP_BENCH_PARTITIONS", 3);
        let new: Vec<NewTopic> = topics
            .iter()
            .map(|(_, t)| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
            .chain([NewTopic::new(
                "event-processing-dead-letters",
                1,
                TopicReplication::Fixed(1),
            )])
            .collect();
        admin
            .create_topics(&new, &AdminOptions::new())
            .await
            .unwrap();
        let p: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            // One produce request at a time per connection: tansu 0.6's
            // memory engine can give overlapping offsets to pipelined
            // produce requests for one partition (records then lost or
            // served twice).
            .set("max.in.flight.requests.per.connection", "1")
            .create()
            .unwrap();
        let mut rng = hxp_events::cli::loadgen::Rng(42);
        let t = Instant::now();
        let mut pending = Vec::new();
        for _ in 0..event_count() {
            let text = hxp_events::cli::loadgen::event(&mut rng, Duration::from_secs(1));
            let topic = common::topic_of(&text);
            let p = p.clone();
            pending.push(tokio::spawn(async move {
                p.send(
                    FutureRecord::<(), str>::to(&topic).payload(&text),
                    Duration::from_secs(60),
                )
                .await
                .map_err(|(e, _)| e)
                .unwrap();
            }));
            if pending.len() >= 20_000 {
                for h in pending.drain(..) {
                    h.await.unwrap();
                }
            }
        }
        for h in pending {
            h.await.unwrap();
        }
        t.elapsed().as_secs_f64()
    });
    println!(
        "machine: {}; broker: tansu (memory storage), 5 topics x {} partition(s)",
        common::machine(),
        common::env_or("HXP_BENCH_PARTITIONS", 3)
    );
    println!(
        "{} events produced in {produce_secs:.1} s ({:.0}/s)\n",
        event_count(),
        event_count() as f64 / produce_secs
    );

    type Config<'a> = (&'a str, Vec<(&'a str, &'a str)>);
    let configs: Vec<Config> = vec![
        (
            "service, shipped config (batch_size 100 adaptive up to 1000, max_poll_records 500)",
            vec![],
        ),
        (
            "service, batch_size 100 fixed (adaptive off), max_poll_records 500",
            vec![("STREAM_PROCESSING_MAX_BATCH_SIZE", "100")],
        ),
        (
            "service, batch_size 1000, max_poll_records 2000",
            vec![
                ("STREAM_PROCESSING_BATCH_SIZE", "1000"),
                ("KAFKA_CONSUMER_MAX_POLL_RECORDS", "2000"),
            ],
        ),
    ];
    let mut rows = Vec::new();
    let mut group = 0;
    let mut next_group = || {
        group += 1;
        format!("bench-{}-{group}", std::process::id())
    };
    let bare: Vec<Run> = (0..RUNS)
        .map(|_| bare_consumer_run(&bootstrap, broker_pid, &next_group()))
        .collect();
    let bare_rate = common::median(bare.iter().map(|r| r.rate).collect());
    rows.push((
        "baseline: bare librdkafka consumer, no processing".to_string(),
        bare,
    ));
    for (name, env) in &configs {
        let runs: Vec<Run> = (0..RUNS)
            .map(|_| service_run(&rt, &bootstrap, broker_pid, &next_group(), env))
            .collect();
        rows.push((name.to_string(), runs));
    }
    println!("median of {RUNS} runs\n");
    println!(
        "| consumer | events/s | vs bare consumer | consumer CPU (cores) | broker CPU (cores) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for (name, runs) in rows {
        let rate = common::median(runs.iter().map(|r| r.rate).collect());
        println!(
            "| {name} | {rate:.0} | {:.2} | {:.2} | {:.2} |",
            rate / bare_rate,
            common::median(runs.iter().map(|r| r.service_cores).collect()),
            common::median(runs.iter().map(|r| r.broker_cores).collect()),
        );
    }
}

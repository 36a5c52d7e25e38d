//! Kafka ingestion against a real Kafka-protocol broker (tansu, started per
//! test on a free loopback port; `make test` installs it), and against
//! librdkafka's mock cluster for fault injection.
//!
//! Every test runs the real `hxp-events` binary with its real plugins.

mod common;

use common::*;
use hxp_events::event::derived_id;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DLQ: &str = "event-processing-dead-letters";

/// The five topics and the dead-letter topic.
fn all_topics() -> Vec<String> {
    kafka_topics()
        .into_iter()
        .map(|(_, t)| t)
        .chain([DLQ.to_string()])
        .collect()
}

/// A tansu broker (in-memory storage) on a free loopback port.
struct Broker {
    child: Child,
    addr: String,
    log: PathBuf,
}

impl Broker {
    async fn start() -> Broker {
        let port = free_port();
        Broker::start_advertising(port, port).await
    }

    /// Listening on `port`, telling clients to connect to `advertised`
    /// (a TLS proxy in front of it).
    async fn start_advertising(port: u16, advertised: u16) -> Broker {
        let dir = tempdir();
        let log = dir.join("tansu.log");
        let url = format!("tcp://127.0.0.1:{port}");
        let advertised = format!("tcp://127.0.0.1:{advertised}");
        let child = Command::new(tansu_bin())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
                "--storage-engine",
                "memory://tansu/",
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .expect("tansu must be installed (make test installs it: cargo install tansu)");
        let broker = Broker {
            child,
            addr: format!("127.0.0.1:{port}"),
            log,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(&broker.addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "tansu did not listen; log:\n{}",
                std::fs::read_to_string(&broker.log).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        broker
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// One record per record batch. tansu 0.6 answers a fetch from an offset
/// inside a batch with the *next* batch (Kafka returns the batch holding
/// it and the client skips the records before): measured here, a consumer
/// assigned at offset 150 of batches of 100 got 200 first. Every pause,
/// seek or restart from a committed offset mid-batch would then skip the
/// rest of that batch, a broker fault the tests would blame on the service.
fn producer(bootstrap: &str) -> FutureProducer {
    client(bootstrap)
        .set("batch.num.messages", "1")
        .set("linger.ms", "5")
        .set("acks", "all")
        .create()
        .unwrap()
}

async fn create_topics(bootstrap: &str, names: &[String], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = client(bootstrap).create().unwrap();
    let new: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    for r in admin
        .create_topics(&new, &AdminOptions::new())
        .await
        .unwrap()
    {
        if let Err((t, e)) = r {
            assert_eq!(
                e,
                rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "creating {t}"
            );
        }
    }
}

/// `n` realistic events of all five types; every other one carries its
/// own event_id, the rest get ids derived from their position.
fn events(n: usize, seed: u64) -> Vec<(Option<u128>, String)> {
    let mut rng = hxp_events::cli::loadgen::Rng(seed);
    (0..n)
        .map(|i| {
            let text = hxp_events::cli::loadgen::event(&mut rng, Duration::from_secs(1));
            if i % 2 == 0 {
                let id = uuid::Uuid::new_v4();
                let mut v: Value = serde_json::from_str(&text).unwrap();
                v["event_id"] = Value::String(id.to_string());
                (Some(id.as_u128()), v.to_string())
            } else {
                (None, text)
            }
        })
        .collect()
}

/// Produce events to their type's topic; returns the id each will be
/// stored under.
async fn produce(p: &FutureProducer, events: &[(Option<u128>, String)]) -> Vec<u128> {
    let sends = events.iter().map(|(id, text)| async move {
        let topic = topic_of(text);
        let d = p
            .send(
                FutureRecord::<(), str>::to(&topic).payload(text),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
        id.unwrap_or_else(|| derived_id(&topic, d.partition, d.offset))
    });
    futures::future::join_all(sends).await
}

/// Wait until the database holds `n` events; fails on more (a duplicate)
/// or on timeout.
async fn wait_stored(db_url: &str, n: usize, limit: Duration, what: &str) -> Vec<(u128, i64)> {
    let started = Instant::now();
    loop {
        let ids = stored_ids(db_url).await;
        assert!(
            ids.iter().all(|(_, c)| *c == 1),
            "{what}: an event stored twice"
        );
        if ids.len() >= n {
            assert_eq!(ids.len(), n, "{what}: more events stored than produced");
            return ids;
        }
        assert!(
            started.elapsed() < limit,
            "{what}: {} of {n} events stored after {limit:?}",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Config that maps the five event types to one `events` topic.
fn one_topic_yaml() -> String {
    let topics = [
        "llm_request",
        "user_feedback",
        "system_metric",
        "business_event",
        "error_event",
    ]
    .map(|t| format!("    {t}: events\n"))
    .concat();
    format!("kafka:\n  topics:\n{topics}")
}

async fn kafka_view(svc: &Service) -> Value {
    get(&svc.url("/processing/pipeline")).await.1["kafka"].clone()
}

/// Wait until the service's consumer holds `n` partitions.
async fn wait_assigned(svc: &Service, n: usize) -> Vec<(String, i64)> {
    let started = Instant::now();
    loop {
        let k = kafka_view(svc).await;
        let parts: Vec<(String, i64)> = k["partitions"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            p["topic"].as_str().unwrap().to_string(),
                            p["partition"].as_i64().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if parts.len() == n && k["status"] == "ok" {
            return parts;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "consumer has {} of {n} partitions: {k}\nlog:\n{}",
            parts.len(),
            svc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Sum of the group's committed offsets over the five topics.
fn committed_total(bootstrap: &str, group: &str, partitions: i32) -> i64 {
    let c: BaseConsumer = client(bootstrap).set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for (_, t) in kafka_topics() {
        for p in 0..partitions {
            tpl.add_partition(&t, p);
        }
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    committed
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        })
        .sum()
}

fn kafka_env(bootstrap: &str) -> Vec<(&'static str, String)> {
    vec![
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.to_string()),
        ("KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "10000".into()),
        ("KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS", "1000".into()),
    ]
}

async fn start(db_url: &str, env: &[(&'static str, String)]) -> Service {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Service::start(db_url, &env).await
}

/// The requirements' "kafka-console-producer" check, with an independent
/// producer (`tansu cat produce`): every event is stored, analytics count
/// them, offsets are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_producer_events_are_stored_counted_and_committed() {
    let broker = Broker::start().await;
    let (db, _dir) = sqlite_url();
    let mut env = kafka_env(&broker.addr);
    env.push(("KAFKA_RESULTS_TOPIC", "event-processing-results".into()));
    let svc = start(&db, &env).await;
    // The service creates the five topics (3 partitions each) at start.
    wait_assigned(&svc, 15).await;

    let all = events(1000, 7);
    let mut per_topic: HashMap<String, Vec<String>> = HashMap::new();
    for (_, text) in &all {
        per_topic
            .entry(topic_of(text))
            .or_default()
            .push(text.clone());
    }
    let dir = tempdir();
    for (topic, lines) in &per_topic {
        // tansu cat reads a JSON array of records, `{"value": {...}}` each
        // (the event as the message value), into partition 0.
        let file = dir.join(format!("{topic}.json"));
        let body: Vec<String> = lines
            .iter()
            .map(|l| format!("{{\"value\": {l}}}"))
            .collect();
        std::fs::write(&file, format!("[{}]", body.join(",\n"))).unwrap();
        let out = Command::new(tansu_bin())
            .args([
                "cat",
                "produce",
                topic,
                file.to_str().unwrap(),
                "--broker",
                &format!("tcp://{}", broker.addr),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "tansu cat produce {topic}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let stored = wait_stored(&db, 1000, Duration::from_secs(60), "tansu cat").await;
    let explicit: BTreeSet<u128> = all.iter().filter_map(|(id, _)| *id).collect();
    let stored_set: BTreeSet<u128> = stored.iter().map(|(id, _)| *id).collect();
    assert!(
        explicit.is_subset(&stored_set),
        "events with their own ids are stored under them"
    );

    // Analytics saw every event, per type as produced.
    let (_, analytics) = get(&svc.url("/analytics")).await;
    assert_eq!(analytics["event_count"], 1000, "{analytics}");
    for (kind, topic) in kafka_topics() {
        assert_eq!(
            analytics["by_event_type"][kind]["event_count"]
                .as_u64()
                .unwrap_or(0) as usize,
            per_topic.get(&topic).map_or(0, Vec::len),
            "{kind}: {analytics}"
        );
    }
    // Offsets committed: 1000 messages read, 1000 committed.
    let started = Instant::now();
    while committed_total(&broker.addr, "hxp-event-processing", 3) != 1000 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "committed offsets: {}",
            committed_total(&broker.addr, "hxp-event-processing", 3)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (_, metrics) = get_text(&svc.url("/metrics")).await;
    assert!(
        metrics.contains("kafka_messages_total{outcome=\"accepted\",topic=\"llm-requests\"}"),
        "{metrics}"
    );
    let (_, health) = get(&svc.url("/health")).await;
    assert_eq!(health["checks"]["kafka"], "ok", "{health}");
    assert!(metrics.contains("kafka_consumer_lag{partition=\"0\",topic=\"llm-requests\"}"));

    // The results topic has one processing record per stored event.
    let c: BaseConsumer = client(&broker.addr)
        .set("group.id", "results-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    c.subscribe(&["event-processing-results"]).unwrap();
    let mut records: HashMap<String, Value> = HashMap::new();
    let started = Instant::now();
    while records.len() < 1000 && started.elapsed() < Duration::from_secs(30) {
        if let Some(Ok(m)) = c.poll(Duration::from_millis(500)) {
            let v: Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            records.insert(v["event_id"].as_str().unwrap().to_string(), v);
        }
    }
    assert_eq!(records.len(), 1000, "one processing record per event");
    let (_, sample) = records.iter().next().unwrap();
    let (status, record) = get(&svc.url(&format!(
        "/processing/{}",
        sample["processing_id"].as_str().unwrap()
    )))
    .await;
    assert_eq!(status, 200, "{record}");
    assert_eq!(record["event_id"], sample["event_id"]);
    assert_eq!(record["processing_type"], sample["processing_type"]);
}

async fn get_text(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// kill -9 the service three times while events are being produced; after
/// the last restart every produced event is in the database exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_and_stores_nothing_twice() {
    let broker = Broker::start().await;
    create_topics(&broker.addr, &all_topics(), 3).await;
    let (db, _dir) = sqlite_url();
    let mut env = kafka_env(&broker.addr);
    // A short session, so that the killed member leaves the group soon.
    env[1].1 = "3000".into();
    env[2].1 = "500".into();

    const N: usize = 20_000;
    let all = events(N, 11);
    let bootstrap = broker.addr.clone();
    // Produce in chunks over ~25 s while the service is being killed.
    let producing = tokio::spawn(async move {
        let p = producer(&bootstrap);
        let mut ids = Vec::with_capacity(N);
        for chunk in all.chunks(200) {
            ids.extend(produce(&p, chunk).await);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        ids
    });
    for round in 1..=3 {
        let mut svc = start(&db, &env).await;
        tokio::time::sleep(Duration::from_millis(1500 + 300 * round)).await;
        let before = stored_ids(&db).await.len();
        svc.child.kill().unwrap(); // SIGKILL
        svc.child.wait().unwrap();
        eprintln!("round {round}: killed with {before} events stored");
        assert!(
            before > 0 && before < N,
            "killed mid-stream ({before} stored)"
        );
        // Restart once the broker has dropped the dead member (its session
        // timed out): tansu 0.6 can leave a member that joins while a dead
        // one is still listed with an empty assignment until the next
        // rebalance. A supervisor's restart delay does the same.
        tokio::time::sleep(Duration::from_millis(3500)).await;
    }
    let expected: BTreeSet<u128> = producing.await.unwrap().into_iter().collect();
    assert_eq!(expected.len(), N);
    let svc = start(&db, &env).await;
    let stored = wait_stored(&db, N, Duration::from_secs(120), "after kill -9").await;
    let stored: BTreeSet<u128> = stored.into_iter().map(|(id, _)| id).collect();
    assert_eq!(stored, expected, "exactly the produced events are stored");
    drop(svc);
}

/// Two instances in one group share the partitions; stopping one hands its
/// partitions to the other; nothing is lost. PostgreSQL, as in production.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_partitions_and_hand_over() {
    let broker = Broker::start().await;
    let db = postgres_url().await;
    let mut env = kafka_env(&broker.addr);
    // A partition silent this long stops holding the watermark back.
    env.push(("STREAM_PROCESSING_IDLE_TIMEOUT_SECS", "3".into()));
    let mut a = start(&db, &env).await;
    wait_assigned(&a, 15).await;
    let b = start(&db, &env).await;
    // After the rebalance the 15 partitions are split between the two.
    let started = Instant::now();
    loop {
        let pa = kafka_view(&a).await["partitions"].as_array().unwrap().len();
        let pb = kafka_view(&b).await["partitions"].as_array().unwrap().len();
        if pa > 0 && pb > 0 && pa + pb == 15 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "partitions not shared: a {pa}, b {pb}\nlog a:\n{}\nlog b:\n{}",
            a.log_text(),
            b.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let p = producer(&broker.addr);
    let first = events(3000, 21);
    let mut expected: BTreeSet<u128> = produce(&p, &first).await.into_iter().collect();
    wait_stored(&db, 3000, Duration::from_secs(60), "two instances").await;
    let consumed = |v: &Value| v["consumed"].as_u64().unwrap();
    let (ca, cb) = (
        consumed(&kafka_view(&a).await),
        consumed(&kafka_view(&b).await),
    );
    assert!(ca > 0 && cb > 0, "both instances consumed: a {ca}, b {cb}");

    // Stop A while more events arrive: B takes over all partitions.
    let before_second = chrono::Utc::now().timestamp_millis();
    let second = events(3000, 22);
    let bootstrap = broker.addr.clone();
    let producing = tokio::spawn(async move { produce(&producer(&bootstrap), &second).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.terminate().success(), "A exits 0 on SIGTERM");
    wait_assigned(&b, 15).await;
    expected.extend(producing.await.unwrap());
    let stored = wait_stored(&db, 6000, Duration::from_secs(90), "after hand-over").await;
    let stored: BTreeSet<u128> = stored.into_iter().map(|(id, _)| id).collect();
    assert_eq!(stored, expected);
    // Through the rebalances B's watermark (the slowest of its partitions
    // that are not idle) moves on to the events it took over (they carry
    // their ingestion time).
    let started = Instant::now();
    loop {
        let (_, h) = get(&b.url("/health")).await;
        let watermark = h["event_time"]["watermark"].as_str().unwrap();
        let watermark = chrono::DateTime::parse_from_rfc3339(watermark).unwrap();
        if watermark.timestamp_millis() >= before_second {
            assert_eq!(h["event_time"]["state"], "live", "{h}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "watermark before {before_second}: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Invalid messages land in the dead-letter topic with the reason and
/// origin in headers; the good messages around them are processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_messages_go_to_the_dead_letter_topic() {
    let broker = Broker::start().await;
    create_topics(&broker.addr, &all_topics(), 1).await;
    let (db, _dir) = sqlite_url();
    let mut env = kafka_env(&broker.addr);
    env.push(("KAFKA_MAX_MESSAGE_BYTES", "4096".into()));
    let svc = start(&db, &env).await;
    wait_assigned(&svc, 5).await;

    let good = |i: usize| {
        format!(
            r#"{{"event_type": "llm_request", "event_id": "{}", "data": {{"model": "mixtral-8x7b", "latency_ms": {i}}}}}"#,
            uuid::Uuid::from_u128(0xabc0 + i as u128)
        )
    };
    let big = format!(
        r#"{{"event_type": "llm_request", "data": {{"model": "m", "note": "{}"}}}}"#,
        "x".repeat(5000)
    );
    let bad: Vec<(&str, String)> = vec![
        ("malformed_json", "{not json".into()),
        (
            "unknown_event_type",
            r#"{"event_type": "llm_response", "data": {}}"#.into(),
        ),
        (
            "invalid_event",
            r#"{"event_type": "llm_request", "data": {"model": "m", "latency_ms": "fast"}}"#.into(),
        ),
        ("oversized", big),
        ("empty", String::new()),
    ];
    let p = producer(&broker.addr);
    let mut bad_offsets = HashMap::new();
    for (i, (reason, text)) in bad.iter().enumerate() {
        p.send(
            FutureRecord::<(), str>::to("llm-requests").payload(&good(i)),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        let mut record = FutureRecord::<str, str>::to("llm-requests").key(*reason);
        if !text.is_empty() {
            record = record.payload(text);
        }
        let d = p.send(record, Duration::from_secs(10)).await.unwrap();
        bad_offsets.insert(reason.to_string(), d.offset);
    }
    p.send(
        FutureRecord::<(), str>::to("llm-requests").payload(&good(99)),
        Duration::from_secs(10),
    )
    .await
    .unwrap();

    let stored = wait_stored(&db, 6, Duration::from_secs(30), "good messages").await;
    let ids: BTreeSet<u128> = stored.into_iter().map(|(id, _)| id).collect();
    for i in [0, 1, 2, 3, 4, 99] {
        assert!(
            ids.contains(&(0xabc0 + i as u128)),
            "good message {i} stored"
        );
    }

    // Read the dead-letter topic.
    let c: BaseConsumer = client(&broker.addr)
        .set("group.id", "dlq-reader")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(DLQ, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    /// reason -> (message, origin topic, origin offset, payload)
    type DeadLetters = HashMap<String, (String, String, String, Option<Vec<u8>>)>;
    let mut found: DeadLetters = HashMap::new();
    let started = Instant::now();
    while found.len() < bad.len() && started.elapsed() < Duration::from_secs(30) {
        let Some(Ok(m)) = c.poll(Duration::from_millis(500)) else {
            continue;
        };
        let mut h: HashMap<String, String> = HashMap::new();
        if let Some(headers) = m.headers() {
            for hd in headers.iter() {
                h.insert(
                    hd.key.to_string(),
                    String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                );
            }
        }
        found.insert(
            h["hxp-error"].clone(),
            (
                h["hxp-error-message"].clone(),
                h["hxp-origin-topic"].clone(),
                h["hxp-origin-offset"].clone(),
                m.payload().map(<[u8]>::to_vec),
            ),
        );
    }
    for (reason, text) in &bad {
        let (message, topic, offset, payload) = found
            .get(*reason)
            .unwrap_or_else(|| panic!("no dead letter for {reason}: {found:?}"));
        assert_eq!(topic, "llm-requests");
        assert_eq!(offset, &bad_offsets[*reason].to_string(), "{reason}");
        assert!(!message.is_empty());
        if !text.is_empty() {
            assert_eq!(
                payload.as_deref(),
                Some(text.as_bytes()),
                "{reason}: payload kept"
            );
        }
    }
    assert!(
        found["invalid_event"].0.contains("/data/latency_ms"),
        "{:?}",
        found["invalid_event"]
    );
    assert!(found["unknown_event_type"].0.contains("llm_response"));
    let (_, metrics) = get_text(&svc.url("/metrics")).await;
    assert!(
        metrics.contains("kafka_dead_letters_total{reason=\"oversized\"} 1"),
        "{metrics}"
    );
    let k = kafka_view(&svc).await;
    assert_eq!(k["dead_lettered"], 5, "{k}");
}

/// librdkafka's mock cluster: the broker goes down for a while (the service
/// reports degraded, keeps serving HTTP, then resumes by itself), fetch and
/// commit requests fail. Nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_and_request_errors_lose_nothing() {
    use rdkafka::mocking::MockCluster;
    use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
    let mock = MockCluster::new(1).unwrap();
    for (_, t) in kafka_topics() {
        mock.create_topic(&t, 3, 1).unwrap();
    }
    mock.create_topic(DLQ, 1, 1).unwrap();
    let bootstrap = mock.bootstrap_servers();
    let (db, _dir) = sqlite_url();
    let mut env = kafka_env(&bootstrap);
    env.push(("KAFKA_CONSUMER_AUTO_COMMIT_INTERVAL_MS", "200".into()));
    let svc = start(&db, &env).await;
    wait_assigned(&svc, 15).await;

    let p = producer(&bootstrap);
    let mut expected: BTreeSet<u128> = produce(&p, &events(2000, 31)).await.into_iter().collect();
    wait_stored(&db, 2000, Duration::from_secs(60), "before the outage").await;

    // Broker down: health says so, HTTP ingestion still works.
    mock.broker_down(1).unwrap();
    let started = Instant::now();
    let health = loop {
        let (_, h) = get(&svc.url("/health")).await;
        if h["status"] == "degraded" {
            break h;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "not degraded: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        health["checks"]["kafka"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{health}"
    );
    let (status, body) = post(
        &svc.url("/process"),
        &serde_json::json!({"event_type": "llm_request", "data": {"model": "m"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    expected.insert(
        uuid::Uuid::parse_str(body["event_id"].as_str().unwrap())
            .unwrap()
            .as_u128(),
    );
    // Produced during the outage: the producer holds them until the broker
    // is back.
    let later = events(2000, 32);
    let bs = bootstrap.clone();
    let producing = tokio::spawn(async move { produce(&producer(&bs), &later).await });
    tokio::time::sleep(Duration::from_secs(3)).await;
    mock.broker_up(1).unwrap();

    // Then fetches and commits fail for a while.
    mock.request_errors(
        RDKafkaApiKey::Fetch,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION; 3],
    );
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT; 3],
    );
    expected.extend(producing.await.unwrap());
    let stored = wait_stored(&db, 4001, Duration::from_secs(90), "after the outage").await;
    let stored: BTreeSet<u128> = stored.into_iter().map(|(id, _)| id).collect();
    assert_eq!(stored, expected);
    // Healthy again, by itself.
    let started = Instant::now();
    loop {
        let (_, h) = get(&svc.url("/health")).await;
        if h["status"] == "healthy" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "still degraded: {h}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Offsets caught up despite the failed commits.
    let started = Instant::now();
    while committed_total(&bootstrap, "hxp-event-processing", 3) != 4000 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "committed {}",
            committed_total(&bootstrap, "hxp-event-processing", 3)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A backlog far larger than the processing queue: consumption pauses and
/// resumes again and again (≥ 100 times); every produced event is stored
/// exactly once and the committed offsets end at what was produced, never
/// past an event that is not stored. (Each pause used to lose the messages
/// fetched before it: a seek per such message kept only the last.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_for_a_full_queue_skips_no_message() {
    let broker = Broker::start().await;
    create_topics(&broker.addr, &all_topics(), 1).await;
    const N: usize = 40_000;
    let all = events(N, 23);
    let p = producer(&broker.addr);
    let mut expected = BTreeSet::new();
    for chunk in all.chunks(2_000) {
        expected.extend(produce(&p, chunk).await);
    }
    assert_eq!(expected.len(), N);
    let (db, _dir) = sqlite_url();
    let mut env = kafka_env(&broker.addr);
    env.push(("STREAM_PROCESSING_QUEUE_CAPACITY", "200".into()));
    env.push(("KAFKA_CONSUMER_MAX_POLL_RECORDS", "100".into()));
    // Pause at once when the queue is full, as a long stall would.
    env.push(("KAFKA_CONSUMER_PAUSE_AFTER_MS", "0".into()));
    env.push(("KAFKA_CONSUMER_AUTO_COMMIT", "false".into()));
    env.push(("KAFKA_CONSUMER_AUTO_COMMIT_INTERVAL_MS", "100".into()));
    let svc = start(&db, &env).await;
    let stored = wait_stored(&db, N, Duration::from_secs(240), "backlog").await;
    let stored: BTreeSet<u128> = stored.into_iter().map(|(id, _)| id).collect();
    assert_eq!(stored, expected, "exactly the produced events are stored");
    let pauses: f64 = svc
        .metrics_text()
        .await
        .lines()
        .find_map(|l| l.strip_prefix("kafka_consumer_pauses_total ")?.parse().ok())
        .expect("kafka_consumer_pauses_total on /metrics");
    assert!(
        pauses >= 100.0,
        "only {pauses} pauses: the test must pause often"
    );
    let t = Instant::now();
    loop {
        let committed = committed_total(&broker.addr, "hxp-event-processing", 1);
        if committed == N as i64 {
            break;
        }
        assert!(
            committed <= N as i64,
            "committed {committed} > {N} produced"
        );
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "committed {committed} of {N}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(svc);
}

/// Many producers write every type to one topic: the five types mapped to
/// one `events` topic are subscribed once, each message's type is its own
/// `event_type`, and a message there that names none, or is a poison
/// message nested 5,000 levels deep, goes to the dead-letter topic while
/// consumption goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_topic_carries_every_type() {
    let broker = Broker::start().await;
    create_topics(&broker.addr, &["events".to_string(), DLQ.to_string()], 1).await;
    let yaml = one_topic_yaml();
    let (db, _dir) = sqlite_url();
    let env = kafka_env(&broker.addr);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let svc = Service::start_with(&db, &env, Some(&yaml)).await;
    let parts = wait_assigned(&svc, 1).await;
    assert_eq!(parts, vec![("events".to_string(), 0)]);

    let p = producer(&broker.addr);
    let send = |text: String| {
        let p = &p;
        async move {
            let record = FutureRecord::<(), str>::to("events").payload(&text);
            let d = p.send(record, Duration::from_secs(10)).await;
            d.map_err(|(e, _)| e).unwrap().offset
        }
    };
    let first: Vec<(Option<u128>, String)> = events(300, 31);
    let untyped = r#"{"data": {"model": "m", "latency_ms": 5}}"#.to_string();
    let deep = format!(
        r#"{{"event_type": "llm_request", "data": {{"model": "m", "x": {}1{}}}}}"#,
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let later: Vec<(Option<u128>, String)> = events(300, 37);
    let mut expected = BTreeSet::new();
    let mut per_type: HashMap<String, i64> = HashMap::new();
    let mut dead = HashMap::new();
    for (i, (id, text)) in first.iter().chain(&later).enumerate() {
        if i == first.len() {
            dead.insert("invalid_event", send(untyped.clone()).await);
            dead.insert("malformed_json", send(deep.clone()).await);
        }
        let offset = send(text.clone()).await;
        expected.insert(id.unwrap_or_else(|| derived_id("events", 0, offset)));
        let v: Value = serde_json::from_str(text).unwrap();
        *per_type
            .entry(v["event_type"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert_eq!(per_type.len(), 5, "the test sends every type: {per_type:?}");

    let stored = wait_stored(&db, 600, Duration::from_secs(60), "one topic").await;
    let stored: BTreeSet<u128> = stored.into_iter().map(|(id, _)| id).collect();
    assert_eq!(stored, expected);
    use sqlx::Row;
    let rows = db_rows(
        &db,
        "SELECT event_type, COUNT(*) FROM events GROUP BY event_type",
    )
    .await;
    let by_type: HashMap<String, i64> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(by_type, per_type, "each event stored under its own type");

    let c: BaseConsumer = client(&broker.addr)
        .set("group.id", "dlq-one-topic")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(DLQ, 0, Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut found: HashMap<String, (String, String)> = HashMap::new();
    let t = Instant::now();
    while found.len() < 2 && t.elapsed() < Duration::from_secs(30) {
        let Some(Ok(m)) = c.poll(Duration::from_millis(500)) else {
            continue;
        };
        let h: HashMap<String, String> = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|hd| {
                        let v = String::from_utf8_lossy(hd.value.unwrap_or_default());
                        (hd.key.to_string(), v.into_owned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.insert(
            h["hxp-error"].clone(),
            (
                h["hxp-origin-offset"].clone(),
                h["hxp-error-message"].clone(),
            ),
        );
    }
    for (reason, offset) in &dead {
        let (at, message) = found
            .get(*reason)
            .unwrap_or_else(|| panic!("no dead letter {reason}: {found:?}"));
        assert_eq!(at, &offset.to_string(), "{reason}");
        assert!(!message.is_empty());
    }
    assert!(found["invalid_event"].1.contains("event_type"), "{found:?}");
    let (status, health) = get(&svc.url("/health")).await;
    assert_eq!(
        (status, health["status"].as_str()),
        (200, Some("healthy")),
        "{health:#}"
    );
}

/// A pipeline that cannot store (the events table locked in PostgreSQL)
/// stalls the consumer: it holds a full queue and stores no offset. After
/// `kafka.stall_after_ms` /health says `degraded` with "stalled" and
/// `kafka_consumer_stalled` is 1; once the lock goes, every event is
/// stored once and the service is healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_consumer_shows_in_health_until_it_moves_again() {
    use sqlx::Connection as _;
    let broker = Broker::start().await;
    create_topics(&broker.addr, &all_topics(), 1).await;
    let db = postgres_url().await;
    let mut env = kafka_env(&broker.addr);
    env.push(("KAFKA_CONSUMER_STALL_AFTER_MS", "2000".into()));
    env.push(("STREAM_PROCESSING_QUEUE_CAPACITY", "200".into()));
    env.push(("KAFKA_CONSUMER_MAX_POLL_RECORDS", "100".into()));
    let svc = start(&db, &env).await;
    wait_assigned(&svc, 5).await;
    let health = || async { get(&svc.url("/health")).await.1 };
    let stalled_gauge = || async {
        svc.metrics_text()
            .await
            .lines()
            .find_map(|l| {
                l.strip_prefix("kafka_consumer_stalled ")?
                    .parse::<f64>()
                    .ok()
            })
            .expect("kafka_consumer_stalled on /metrics")
    };
    assert_eq!(stalled_gauge().await, 0.0);

    let mut lock = sqlx::AnyConnection::connect(&db).await.unwrap();
    sqlx::query("BEGIN").execute(&mut lock).await.unwrap();
    sqlx::query("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        .execute(&mut lock)
        .await
        .unwrap();
    let p = producer(&broker.addr);
    let expected: BTreeSet<u128> = produce(&p, &events(2000, 31)).await.into_iter().collect();
    let t = Instant::now();
    let h = loop {
        let h = health().await;
        if h["checks"]["kafka"]
            .as_str()
            .unwrap_or("")
            .starts_with("stalled")
        {
            break h;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no stall reported while the database is locked: {h}\nlog:\n{}",
            svc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(stalled_gauge().await, 1.0);

    sqlx::query("ROLLBACK").execute(&mut lock).await.unwrap();
    let stored = wait_stored(&db, 2000, Duration::from_secs(60), "after the stall").await;
    let stored: BTreeSet<u128> = stored.into_iter().map(|(id, _)| id).collect();
    assert_eq!(stored, expected);
    let t = Instant::now();
    loop {
        let h = health().await;
        if h["status"] == "healthy" && stalled_gauge().await == 0.0 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "still not healthy after the stall: {h}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Kafka over TLS: stunnel4 terminates TLS on loopback in front of tansu,
/// which advertises the TLS port, so every connection of the service (its
/// consumer, its producers, its admin client) and of the test's producer
/// goes through TLS. The service's TLS settings come from
/// `kafka.properties`, the CA path from an environment variable (`${...}`),
/// hidden in GET /config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_are_consumed_over_tls() {
    let pki = tls::Pki::new();
    let (plain, tls_port) = (free_port(), free_port());
    let broker = Broker::start_advertising(plain, tls_port).await;
    let proxy = tls::Stunnel::start_on(&pki, tls_port, &broker.addr, false).await;
    let text = std::fs::read_to_string(root().join("config/event-processing.yaml")).unwrap();
    let mut yaml: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    yaml["kafka"]["properties"] =
        serde_norway::from_str("{security.protocol: ssl, ssl.ca.location: '${HXP_TEST_KAFKA_CA}'}")
            .unwrap();
    let yaml = serde_norway::to_string(&yaml).unwrap();
    let (db, _dir) = sqlite_url();
    let ca = pki.ca.display().to_string();
    let mut env = kafka_env(&proxy.addr());
    env.push(("HXP_TEST_KAFKA_CA", ca.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let svc = Service::start_with(&db, &env, Some(yaml.as_str())).await;
    // The service created its topics through TLS and was assigned them.
    wait_assigned(&svc, 15).await;

    let producer: FutureProducer = client(&proxy.addr())
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", &ca)
        .set("batch.num.messages", "1")
        .set("acks", "all")
        .create()
        .unwrap();
    let all = events(500, 11);
    let ids: BTreeSet<u128> = produce(&producer, &all).await.into_iter().collect();
    let stored = wait_stored(&db, all.len(), Duration::from_secs(60), "over TLS").await;
    let stored: BTreeSet<u128> = stored.into_iter().map(|(id, _)| id).collect();
    assert_eq!(stored, ids);

    let (_, config) = get(&svc.url("/config")).await;
    let props = &config["kafka"]["properties"];
    assert_eq!(props["security.protocol"], "ssl", "{props}");
    assert_eq!(props["ssl.ca.location"], "(set)", "{props}");
    let log = proxy.log_text();
    assert!(log.contains("accepted connection"), "stunnel log:\n{log}");
}

/// Event time under a consumer outage (issue 14): one instance stops for
/// 20 s while a producer keeps 20 events/s on two partitions, then
/// restarts and catches up; a second instance (its own group) never
/// stops. While the restarted one catches up its watermark trails the
/// clock by more than `max_staleness_secs`, so every action request of
/// those batches is recorded as `stale` and none runs; afterwards the two
/// serve identical analytics at the same watermark, and both counted the
/// five events sent 400 s old as late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_outage_is_caught_up_without_acting_on_stale_data() {
    let broker = Broker::start().await;
    create_topics(&broker.addr, &["events".to_string()], 2).await;
    create_topics(&broker.addr, &[DLQ.to_string()], 1).await;
    let yaml = format!(
        "{}stream_processing:\n  idle_timeout_secs: 3\n\
         automated_response:\n  repeat_interval: 1\n  max_staleness_secs: 5\n  cooldown_secs: 0\n  \
         dedup_window_secs: 0\n  rate_limit_per_minute: 0\n  actions:\n    \"*\": log\n  response_rules:\n    \
         - name: heartbeat\n      condition: event_count > 0\n      action: send_notification\n",
        one_topic_yaml()
    );
    let start_in = |db: String, group: &'static str| {
        let yaml = yaml.clone();
        let bootstrap = broker.addr.clone();
        async move {
            let mut env = kafka_env(&bootstrap);
            env.push(("KAFKA_CONSUMER_GROUP", group.to_string()));
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Service::start_with(&db, &env, Some(&yaml)).await
        }
    };
    let (db_a, _da) = sqlite_url();
    let (db_b, _db) = sqlite_url();
    let mut a = start_in(db_a.clone(), "outage-a").await;
    let b = start_in(db_b.clone(), "outage-b").await;
    wait_assigned(&a, 2).await;
    wait_assigned(&b, 2).await;

    // The steady producer: 20 events/s for 40 s, timestamped as sent.
    let bootstrap = broker.addr.clone();
    let steady = tokio::spawn(async move {
        let p = producer(&bootstrap);
        let started = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        let (mut n, mut last_t) = (0u64, 0i64);
        while started.elapsed() < Duration::from_secs(40) {
            tick.tick().await;
            last_t = chrono::Utc::now().timestamp_millis();
            send_timed(&p, n, last_t, None).await;
            n += 1;
        }
        (n, last_t)
    });
    let p = producer(&broker.addr);
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert!(a.terminate().success());
    tokio::time::sleep(Duration::from_secs(20)).await;
    a = start_in(db_a.clone(), "outage-a").await;
    // Five events 400 s old: older than the 300 s window.
    for k in 0..5 {
        let t = chrono::Utc::now().timestamp_millis() - 400_000;
        send_timed(&p, 1_000_000 + k, t, None).await;
    }
    let (n, last_t) = steady.await.unwrap();
    // One more event per partition 2 s after the last: both lanes reach the
    // same newest time, so both instances end at the same watermark.
    let end = last_t + 2_000;
    send_timed(&p, 2_000_000, end, Some(0)).await;
    send_timed(&p, 2_000_001, end, Some(1)).await;
    let total = n as usize + 7;
    wait_stored(&db_a, total, Duration::from_secs(60), "restarted").await;
    wait_stored(&db_b, total, Duration::from_secs(60), "never stopped").await;

    let window = |svc: &Service| {
        let url = svc.url("/analytics");
        async move {
            let t = Instant::now();
            loop {
                let (_, mut v) = get(&url).await;
                if v["timestamp"].as_str().map(|s| s.to_string())
                    == chrono::DateTime::from_timestamp_millis(end)
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                {
                    v.as_object_mut().unwrap().remove("event_time");
                    return v;
                }
                assert!(t.elapsed() < Duration::from_secs(30), "{v}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let (wa, wb) = (window(&a).await, window(&b).await);
    assert_eq!(wa, wb, "the same window after catching up");
    for svc in [&a, &b] {
        let late = svc.metric("event_processing_late_events_total", &[]).await;
        assert_eq!(late, 5.0);
    }
    // Every request of a batch whose watermark trailed the clock by more
    // than 5 s is stale; no other is.
    let requests = |db: String| async move {
        let rows = db_rows(
            &db,
            "SELECT a.outcome, b.processed_at - b.watermark FROM action_requests a \
             JOIN batches b ON b.batch_seq = a.batch_seq",
        )
        .await;
        rows.iter()
            .map(|r| {
                let outcome: String = sqlx::Row::get(r, 0);
                let lag: i64 = sqlx::Row::get(r, 1);
                (outcome, lag)
            })
            .collect::<Vec<_>>()
    };
    let ra = requests(db_a.clone()).await;
    let stale = ra.iter().filter(|(o, _)| o == "stale").count();
    assert!(stale > 0, "catching up asked nothing: {ra:?}");
    assert!(ra.iter().any(|(o, _)| o == "executed"), "{ra:?}");
    for (outcome, lag) in &ra {
        assert_eq!(
            outcome == "stale",
            *lag > 5_000,
            "{outcome} at lag {lag} ms"
        );
    }
    let rb = requests(db_b.clone()).await;
    assert!(rb.iter().all(|(o, _)| o == "executed"), "{rb:?}");
    let max_lag = ra.iter().map(|(_, l)| *l).max().unwrap_or(0);
    println!(
        "{} events; restarted instance: {stale} of {} requests stale (largest lag {max_lag} ms); \
         never stopped: {} requests, all executed; window: {} events",
        total,
        ra.len(),
        rb.len(),
        wa["event_count"]
    );
}

/// Event `n` of the outage test, with timestamp `t`, to the `events`
/// topic (to `partition`, or where the partitioner puts it).
async fn send_timed(p: &FutureProducer, n: u64, t: i64, partition: Option<i32>) {
    let (kind, data) = if n.is_multiple_of(5) {
        (
            "error_event",
            serde_json::json!({"service": "api", "error_type": "timeout"}),
        )
    } else {
        let data = serde_json::json!({"model": "m", "latency_ms": 50 + n % 200, "success": !n.is_multiple_of(7)});
        ("llm_request", data)
    };
    let text = serde_json::json!({
        "event_id": uuid::Uuid::from_u128(0x0e7a_9e00_0000 + n as u128).to_string(),
        "event_type": kind,
        "timestamp": chrono::DateTime::from_timestamp_millis(t).unwrap().to_rfc3339(),
        "data": data,
    })
    .to_string();
    let mut r = FutureRecord::<(), str>::to("events").payload(&text);
    if let Some(part) = partition {
        r = r.partition(part);
    }
    p.send(r, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

//! TLS against real servers on loopback: the service's own HTTPS listener
//! (a certificate of a throwaway CA made by openssl) and PostgreSQL (the
//! local server runs with `ssl=on` and Debian's snakeoil certificate) with
//! `sslmode=require`, `verify-ca` and `verify-full`. The https webhook test
//! is in tests/responses.rs, Kafka over TLS in tests/kafka.rs.

mod common;

use common::tls::Pki;
use common::*;
use serde_json::json;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Debian's self-signed certificate of the local PostgreSQL (CN and SAN
/// `localhost`).
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

fn event(n: usize) -> serde_json::Value {
    json!({"event_type": "system_metric", "data": {"service": "api", "metric_name": "cpu", "value": n}})
}

/// The API over HTTPS only: a client trusting the CA is served, a plain
/// HTTP request and a client that does not trust the CA are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_is_served_over_https_with_the_configured_certificate() {
    let pki = Pki::new();
    let (url, _dir) = sqlite_url();
    let (cert, key) = (
        pki.server_cert.display().to_string(),
        pki.server_key.display().to_string(),
    );
    let env = [
        ("EVENT_PROCESSING_TLS_CERT_FILE", cert.as_str()),
        ("EVENT_PROCESSING_TLS_KEY_FILE", key.as_str()),
    ];
    let svc = Service::start(&url, &env).await;
    assert!(svc.base.starts_with("https://"), "{}", svc.base);
    let client = pki.client();

    let health = client.get(svc.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let posted = client
        .post(svc.url("/events"))
        .json(&json!([event(1), event(2), event(3)]))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200, "{:?}", posted.text().await);
    assert_eq!(stored_ids(&url).await.len(), 3);

    let plain = svc.url("/health").replace("https://", "http://");
    let e = reqwest::get(&plain).await.err();
    assert!(e.is_some(), "plain HTTP was answered on the HTTPS port");
    let stranger = Pki::new().client();
    let e = stranger.get(svc.url("/health")).send().await.unwrap_err();
    assert!(format!("{e:?}").contains("UnknownIssuer"), "{e:?}");
    // The service is still there for the next client.
    let again = client.get(svc.url("/health")).send().await.unwrap();
    assert_eq!(again.status(), 200);
}

/// Whether every connection of `application_name` to PostgreSQL is TLS,
/// and how many there are (pg_stat_ssl, seen from the server).
async fn tls_connections(application: &str) -> (i64, bool) {
    use sqlx::Row;
    let rows = db_rows(
        "postgres://postgres@127.0.0.1:5432/test",
        &format!(
            "SELECT COUNT(*), COALESCE(BOOL_AND(s.ssl), false) FROM pg_stat_ssl s \
             JOIN pg_stat_activity a ON a.pid = s.pid WHERE a.application_name = '{application}'"
        ),
    )
    .await;
    (rows[0].get(0), rows[0].get(1))
}

/// `sslmode` in DATABASE_URL is honoured: require, verify-ca (against the
/// snakeoil certificate as the CA) and verify-full (host `localhost`) all
/// store events over TLS connections; verify-ca against a CA that did not
/// sign the server's certificate stops the start with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_over_tls_honours_sslmode() {
    for (mode, host) in [
        ("require", "127.0.0.1"),
        ("verify-ca", "127.0.0.1"),
        ("verify-full", "localhost"),
    ] {
        let base = postgres_url().await.replace("127.0.0.1", host);
        let app = format!("hxp_tls_{}", mode.replace('-', "_"));
        let url = format!("{base}?sslmode={mode}&sslrootcert={SNAKEOIL}&application_name={app}");
        let svc = Service::start(&url, &[]).await;
        let (status, body) = post(&svc.url("/events"), &json!([event(1), event(2)])).await;
        assert_eq!(status, 200, "{mode}: {body}");
        assert_eq!(stored_ids(&url).await.len(), 2, "{mode}");
        let (n, all_tls) = tls_connections(&app).await;
        assert!(
            n >= 1 && all_tls,
            "{mode}: {n} connections, all TLS: {all_tls}"
        );
    }

    // Refused: verify-full to an address the certificate does not name.
    let base = postgres_url().await;
    let url = format!("{base}?sslmode=verify-full&sslrootcert={SNAKEOIL}");
    let (code, log) = run_until_exit(&url);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("connecting to postgres") && log.contains("certificate"),
        "{log}"
    );
}

/// verify-ca checks the CA: a PostgreSQL server (a private cluster started
/// for this test) whose certificate comes from a throwaway CA is reached
/// with that CA as `sslrootcert` (verify-full too: the certificate names
/// 127.0.0.1) and refused with any other. (The machine's own server cannot
/// show this: Debian trusts its snakeoil certificate system-wide, and
/// OpenSSL adds the system's CAs to `sslrootcert`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_certificate_of_an_unknown_ca_is_refused() {
    let pki = Pki::new();
    let pg = PrivatePostgres::start(&pki).await;
    for mode in ["verify-ca", "verify-full"] {
        let url = format!("{}?sslmode={mode}&sslrootcert={}", pg.url, pki.ca.display());
        let svc = Service::start(&url, &[]).await;
        let (status, body) = post(&svc.url("/events"), &json!([event(1)])).await;
        assert_eq!(status, 200, "{mode}: {body}");
        assert_eq!(stored_ids(&url).await.len(), 1, "{mode}");
        drop(svc);
        // A fresh database for the next mode.
        pg.reset();
    }
    let stranger = Pki::new();
    let url = format!(
        "{}?sslmode=verify-ca&sslrootcert={}",
        pg.url,
        stranger.ca.display()
    );
    let (code, log) = run_until_exit(&url);
    assert_ne!(code, Some(0), "{log}");
    assert!(
        log.contains("connecting to postgres") && log.contains("certificate"),
        "{log}"
    );
}

/// A PostgreSQL cluster of its own (initdb in a temporary directory, run as
/// the `postgres` user) serving TLS with the test CA's server certificate.
struct PrivatePostgres {
    child: std::process::Child,
    data: std::path::PathBuf,
    url: String,
    port: u16,
}

impl PrivatePostgres {
    async fn start(pki: &Pki) -> PrivatePostgres {
        let dir = tempdir();
        let data = dir.join("data");
        run_on(&["chown", "postgres"], &dir);
        let initdb = format!("{}/initdb", pg_bin());
        let out = Command::new("runuser")
            .args([
                "-u", "postgres", "--", &initdb, "-A", "trust", "-U", "postgres", "-D",
            ])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for (from, to) in [
            (&pki.server_cert, "server.pem"),
            (&pki.server_key, "server.key"),
        ] {
            std::fs::copy(from, data.join(to)).unwrap();
            run_on(&["chown", "postgres"], &data.join(to));
        }
        run_on(&["chmod", "600"], &data.join("server.key"));
        let port = free_port();
        let log = std::fs::File::create(dir.join("postgres.log")).unwrap();
        let child = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &format!("{}/postgres", pg_bin()),
                "-D",
            ])
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(&dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "ssl=on"])
            .args([
                "-c",
                "ssl_cert_file=server.pem",
                "-c",
                "ssl_key_file=server.key",
            ])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let pg = PrivatePostgres {
            child,
            data,
            url: format!("postgres://postgres@127.0.0.1:{port}/events"),
            port,
        };
        let started = Instant::now();
        while !pg.psql("CREATE DATABASE events") {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "private PostgreSQL did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        pg
    }

    /// Drop and recreate the `events` database.
    fn reset(&self) {
        assert!(self.psql("DROP DATABASE events WITH (FORCE)"));
        assert!(self.psql("CREATE DATABASE events"));
    }

    fn psql(&self, sql: &str) -> bool {
        Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
            ])
            .args(["-d", "postgres", "-qc", sql])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // runuser does not pass signals on: pg_ctl stops the server.
        let pg_ctl = format!("{}/pg_ctl", pg_bin());
        let _ = Command::new("runuser")
            .args([
                "-u",
                "postgres",
                "--",
                &pg_ctl,
                "stop",
                "-m",
                "immediate",
                "-D",
            ])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `chown postgres PATH` and the like (the tests run as root).
fn run_on(cmd: &[&str], path: &std::path::Path) {
    let ok = Command::new(cmd[0])
        .args(&cmd[1..])
        .arg(path)
        .status()
        .unwrap();
    assert!(ok.success(), "{cmd:?} {}", path.display());
}

/// The PostgreSQL server binaries of the installed version.
fn pg_bin() -> String {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("PostgreSQL installed");
    let newest = versions
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .expect("a PostgreSQL version");
    format!("/usr/lib/postgresql/{newest}/bin")
}

/// Start the service and wait (at most 60 s) for it to exit: its exit code
/// and its log.
fn run_until_exit(db_url: &str) -> (Option<i32>, String) {
    let dir = tempdir();
    let log = dir.join("service.log");
    let config = root().join("config/event-processing.yaml");
    let mut child = serve_command(
        env!("CARGO_BIN_EXE_hxp-events"),
        &config,
        db_url,
        free_port(),
    )
    .env("EVENT_PROCESSING_PLUGIN_DIR", root().join("target/plugins"))
    .stdin(Stdio::null())
    .stdout(std::fs::File::create(&log).unwrap())
    .stderr(std::fs::File::options().append(true).open(&log).unwrap())
    .spawn()
    .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

/// Metrics are pushed to an https Pushgateway whose certificate comes from
/// the CA of `EVENT_PROCESSING_TLS_CA_FILE` (stunnel4 in front of a plain
/// receiver that records what it is sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_pushed_to_an_https_pushgateway() {
    use std::sync::{Arc, Mutex};
    let pki = Pki::new();
    let seen: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let record = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let record = record.clone();
        async move {
            let line = format!("{} {}", req.method(), req.uri().path());
            let body = axum::body::to_bytes(req.into_body(), 1 << 24)
                .await
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&body).to_string();
            record.lock().unwrap().push((line, text));
            axum::http::StatusCode::OK
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let plain = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gateway = common::tls::Stunnel::start(&pki, &plain, false).await;

    let (url, _dir) = sqlite_url();
    let endpoint = format!("https://127.0.0.1:{}", gateway.port);
    let ca = pki.ca.display().to_string();
    let env = [
        ("CUSTOM_METRICS_ENDPOINT", endpoint.as_str()),
        ("PERFORMANCE_METRICS_UPDATE_INTERVAL", "1"),
        ("EVENT_PROCESSING_TLS_CA_FILE", ca.as_str()),
    ];
    let _svc = Service::start(&url, &env).await;
    let started = Instant::now();
    loop {
        let pushed = seen.lock().unwrap().clone();
        if let Some((line, body)) = pushed.first() {
            assert!(
                line.starts_with("PUT /metrics/job/event-processing-api"),
                "{line}"
            );
            assert!(body.contains("event_processing_total"), "{body}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing pushed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

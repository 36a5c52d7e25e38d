//! TLS for the tests: a throwaway CA with a server and a client certificate
//! (made by `openssl`), and Debian's `stunnel4` terminating TLS on a free
//! loopback port in front of a plain server (tansu, a webhook receiver, a
//! Pushgateway).

use super::{free_port, tempdir};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A CA and the certificates it signed, as PEM files in one directory.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    /// For 127.0.0.1 and localhost.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// CN=hxp-events (client authentication).
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempdir().join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        let subject = format!("/CN=hxp-events test CA {}", uuid::Uuid::new_v4().simple());
        new_key(
            &dir,
            &[
                "-x509",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &subject,
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        issue(
            &dir,
            "server",
            "/CN=127.0.0.1",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        );
        issue(
            &dir,
            "client",
            "/CN=hxp-events",
            "extendedKeyUsage=clientAuth\n",
        );
        Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
            dir,
        }
    }

    /// A reqwest client that trusts this CA only (no system roots).
    pub fn client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&std::fs::read(&self.ca).unwrap()).unwrap();
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .build()
            .unwrap()
    }
}

/// A key and a certificate `name`.pem signed by the CA in `dir`.
fn issue(dir: &Path, name: &str, subject: &str, extensions: &str) {
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(&ext, format!("basicConstraints=CA:FALSE\n{extensions}")).unwrap();
    let (key, csr, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
    );
    new_key(dir, &["-keyout", &key, "-out", &csr, "-subj", subject]);
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            ext.to_str().unwrap(),
        ],
    );
}

/// `openssl req` with a new P-256 key (unencrypted) and `args`: a
/// self-signed certificate with `-x509`, else a signing request.
fn new_key(dir: &Path, args: &[&str]) {
    let key = [
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(dir, &[&key[..], args].concat());
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package) must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// stunnel4 accepting TLS on `port` and forwarding plain TCP to `target`.
pub struct Stunnel {
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl Stunnel {
    /// With `client_cert`, only clients showing a certificate of the CA
    /// get through (mutual TLS).
    pub async fn start(pki: &Pki, target: &str, client_cert: bool) -> Stunnel {
        Stunnel::start_on(pki, free_port(), target, client_cert).await
    }

    pub async fn start_on(pki: &Pki, port: u16, target: &str, client_cert: bool) -> Stunnel {
        let dir = tempdir();
        let log = dir.join("stunnel.log");
        let verify = if client_cert {
            format!(
                "CAfile = {}\nverifyChain = yes\nrequireCert = yes\n",
                pki.ca.display()
            )
        } else {
            String::new()
        };
        let conf = dir.join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\ndebug = 5\noutput = {}\n[tls]\n\
                 accept = 127.0.0.1:{port}\nconnect = {target}\ncert = {}\nkey = {}\n{verify}",
                log.display(),
                pki.server_cert.display(),
                pki.server_key.display(),
            ),
        )
        .unwrap();
        let child = Command::new("stunnel4")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("stunnel4 (Debian package) must be installed: tests/setup.sh installs it");
        let tunnel = Stunnel { child, port, log };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "stunnel did not listen; log:\n{}",
                tunnel.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tunnel
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// stunnel's log: handshakes, verified peers, refusals.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

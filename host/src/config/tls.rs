//! `tls`: certificates of the service's own listener and of its outbound
//! HTTPS (webhooks, the Pushgateway). PostgreSQL takes its TLS settings from
//! `database.url` (`sslmode`, `sslrootcert`, ...), Kafka from
//! `kafka.properties` (librdkafka's `security.protocol`, `ssl.*`, `sasl.*`).

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// The listener: with both files set it serves HTTPS only.
    pub server: ServerTls,
    /// Outbound HTTPS. The system's CAs are always trusted.
    pub client: ClientTls,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTls {
    /// EVENT_PROCESSING_TLS_CERT_FILE: PEM, the certificate chain.
    pub cert_file: Option<PathBuf>,
    /// EVENT_PROCESSING_TLS_KEY_FILE: PEM, the private key.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTls {
    /// EVENT_PROCESSING_TLS_CA_FILE: PEM, CAs trusted besides the system's
    /// (a private CA of webhook receivers).
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key, for receivers that ask for
    /// one (mutual TLS). Both or neither.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl Tls {
    pub(super) fn check(&self) -> Result<(), String> {
        pair("tls.server", &self.server.cert_file, &self.server.key_file)?;
        pair("tls.client", &self.client.cert_file, &self.client.key_file)?;
        let files = [
            ("tls.server.cert_file", &self.server.cert_file),
            ("tls.server.key_file", &self.server.key_file),
            ("tls.client.ca_file", &self.client.ca_file),
            ("tls.client.cert_file", &self.client.cert_file),
            ("tls.client.key_file", &self.client.key_file),
        ];
        for (key, file) in files {
            if let Some(path) = file {
                readable(key, path)?;
            }
        }
        Ok(())
    }
}

impl ServerTls {
    /// Both files, when the listener serves HTTPS.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        Some((self.cert_file.as_deref()?, self.key_file.as_deref()?))
    }
}

fn pair(key: &str, cert: &Option<PathBuf>, private: &Option<PathBuf>) -> Result<(), String> {
    match (cert, private) {
        (Some(_), None) => Err(format!("{key}.key_file: must be set with cert_file")),
        (None, Some(_)) => Err(format!("{key}.cert_file: must be set with key_file")),
        _ => Ok(()),
    }
}

fn readable(key: &str, path: &Path) -> Result<(), String> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|e| format!("{key}: {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_needs_its_key_and_files_must_exist() {
        let mut t = Tls::default();
        assert_eq!(t.check(), Ok(()));
        t.server.cert_file = Some("Cargo.toml".into());
        let e = t.check().unwrap_err();
        assert!(e.starts_with("tls.server.key_file"), "{e}");
        t.server.key_file = Some("Cargo.toml".into());
        assert_eq!(t.check(), Ok(()));
        assert!(t.server.files().is_some());
        t.client.ca_file = Some("/nonexistent/ca.pem".into());
        let e = t.check().unwrap_err();
        assert!(
            e.starts_with("tls.client.ca_file: /nonexistent/ca.pem"),
            "{e}"
        );
    }
}

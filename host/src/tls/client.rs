//! The outbound HTTPS client: the system's CAs, plus `tls.client.ca_file`,
//! plus a client certificate for receivers that ask for one.

use crate::config::ClientTls;
use anyhow::Context;

/// A client builder that trusts what `tls` says; callers add their
/// timeouts and policies.
pub fn http_client(tls: &ClientTls) -> anyhow::Result<reqwest::ClientBuilder> {
    let mut builder = reqwest::Client::builder().use_rustls_tls();
    if let Some(path) = &tls.ca_file {
        let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).with_context(|| {
            format!(
                "tls.client.ca_file {}: not PEM certificates",
                path.display()
            )
        })?;
        if certs.is_empty() {
            anyhow::bail!(
                "tls.client.ca_file {}: no certificate in it",
                path.display()
            );
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        // reqwest wants the key and the chain in one PEM.
        let mut pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
        pem.push(b'\n');
        pem.extend(std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?);
        let identity = reqwest::Identity::from_pem(&pem).with_context(|| {
            format!(
                "tls.client.cert_file/key_file {}: not a PEM key and certificate",
                cert.display()
            )
        })?;
        builder = builder.identity(identity);
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_certificate_is_refused_with_its_name() {
        let dir = std::env::temp_dir().join(format!("hxp-tls-client-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not a certificate").unwrap();
        let tls = ClientTls {
            ca_file: Some(junk.clone()),
            ..Default::default()
        };
        let e = http_client(&tls).err().unwrap().to_string();
        assert!(e.contains("junk.pem"), "{e}");
        assert!(http_client(&ClientTls::default()).unwrap().build().is_ok());
    }
}

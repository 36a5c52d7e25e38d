//! `hxp-events plugin deploy`: PUT /plugins/{name} from the command line,
//! for plugin teams (and their CI) without a shell on the host.

use anyhow::{Context, bail};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `plugin deploy`.
pub struct DeployOptions {
    pub file: PathBuf,
    /// The service's base URL (http or https).
    pub url: String,
    pub token: String,
    /// Default: the file's name without `.wasm`.
    pub name: Option<String>,
    /// Manifest keys, sent as query parameters.
    pub manifest: Vec<(&'static str, String)>,
    /// A CA certificate (PEM) to trust besides the system's.
    pub ca: Option<PathBuf>,
}

/// Upload the file; the recorded deployment, or the service's error.
pub async fn deploy(opts: &DeployOptions) -> anyhow::Result<Value> {
    let bytes =
        std::fs::read(&opts.file).with_context(|| format!("reading {}", opts.file.display()))?;
    let name = match &opts.name {
        Some(n) => n.clone(),
        None => opts
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .context("the file has no name; give --name")?,
    };
    let url = format!("{}/plugins/{name}", opts.url.trim_end_matches('/'));
    // Compiling a large component (a Python plugin) takes a while on a
    // small host.
    let mut client = reqwest::Client::builder().timeout(Duration::from_secs(600));
    if let Some(ca) = &opts.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        client = client.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    let resp = client
        .build()?
        .put(&url)
        .bearer_auth(&opts.token)
        .header(reqwest::header::CONTENT_TYPE, "application/wasm")
        .query(&opts.manifest)
        .body(bytes)
        .send()
        .await
        .with_context(|| format!("PUT {url}"))?;
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = body["message"].as_str().unwrap_or("no message");
        bail!("{name} not deployed ({status}): {msg}");
    }
    Ok(body["deployment"].clone())
}

/// One line about a deployment.
pub fn summary(d: &Value) -> String {
    let sha = d["sha256"].as_str().unwrap_or_default();
    let shadow = if d["result"] == "shadow" {
        " as a shadow"
    } else {
        ""
    };
    let swap = d["pause_us"]
        .as_i64()
        .map(|p| format!(", swapped in {p} µs"))
        .unwrap_or_default();
    format!(
        "deployed {} {}{shadow} ({} plugin, sha256 {}, compiled in {:.0} ms{swap}): {}",
        d["plugin"].as_str().unwrap_or_default(),
        d["version"].as_str().unwrap_or_default(),
        d["stage"].as_str().unwrap_or_default(),
        &sha[..12.min(sha.len())],
        d["compile_ms"].as_f64().unwrap_or_default(),
        d["reason"].as_str().unwrap_or_default()
    )
}

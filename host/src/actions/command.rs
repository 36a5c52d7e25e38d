//! The `command` executor: a program from `command_allowlist`, run without
//! a shell, with templated arguments, an empty environment plus `HXP_*`, and
//! killed at its timeout.

use super::Job;
use super::pool::Attempted;
use crate::config::CommandSpec;
use crate::util::template;
use serde_json::Value;
use std::time::Duration;

/// A template with the job's values (see [`template::render`]).
pub fn render_template(t: &str, job: &Job, parameters: &Value) -> Result<String, String> {
    let field = |name: &str| {
        Some(match name {
            "action" => job.action.clone(),
            "target" => job.target.clone(),
            "rule" => job.rule.clone(),
            "reason" => job.reason.clone(),
            "requested_at" => job.requested_at.to_string(),
            "idempotency_key" => job.idempotency_key.clone(),
            _ => return None,
        })
    };
    template::render(t, field, parameters)
}

/// Bytes of a command's stdout/stderr kept for the audit row.
const OUTPUT_CAP: usize = 2048;

pub(super) async fn run_command(c: &CommandSpec, job: &Job, started_at: i64) -> Attempted {
    let failed = |error: String| Attempted {
        ok: false,
        started_at,
        attempts: 1,
        http_status: None,
        detail: format!("{}: {error}", c.program),
        error: Some(error),
    };
    let params: Value = serde_json::from_str(&job.parameters).unwrap_or(Value::Null);
    let mut args = Vec::with_capacity(c.args.len());
    for (i, t) in c.args.iter().enumerate() {
        match render_template(t, job, &params) {
            Ok(a) => args.push(a),
            Err(e) => return failed(format!("argument {}: {e}; not run", i + 1)),
        }
    }
    let (status, stdout, stderr) = match run(c, job, &args).await {
        Ok(done) => done,
        Err(e) => return failed(e),
    };
    if status.success() {
        let detail = if stdout.is_empty() {
            format!("{}: exit 0", c.program)
        } else {
            format!("{}: exit 0: {stdout}", c.program)
        };
        return Attempted {
            ok: true,
            started_at,
            attempts: 1,
            http_status: None,
            error: None,
            detail,
        };
    }
    let code = status
        .code()
        .map(|n| format!("exit {n}"))
        .unwrap_or_else(|| "killed by a signal".into());
    failed(if stderr.is_empty() {
        code
    } else {
        format!("{code}: {stderr}")
    })
}

/// Run the program with `args` until it exits or its timeout (then it is
/// killed): its status and the start of its stdout and stderr.
async fn run(
    c: &CommandSpec,
    job: &Job,
    args: &[String],
) -> Result<(std::process::ExitStatus, String, String), String> {
    use std::process::Stdio;
    // No shell: the program gets exactly these arguments. The environment
    // is cleared (the service's holds database URLs and tokens).
    let mut cmd = tokio::process::Command::new(&c.program);
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HXP_ACTION", &job.action)
        .env("HXP_TARGET", &job.target)
        .env("HXP_RULE", &job.rule)
        .env("HXP_IDEMPOTENCY_KEY", &job.idempotency_key)
        .env("HXP_PARAMETERS", &job.parameters)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let out = tokio::spawn(read_capped(child.stdout.take()));
    let err = tokio::spawn(read_capped(child.stderr.take()));
    let timeout = Duration::from_millis(c.timeout_ms);
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            out.abort();
            err.abort();
            return Err(format!("waiting for it failed: {e}"));
        }
        Err(_) => {
            // SIGKILL and reap.
            let _ = child.kill().await;
            out.abort();
            err.abort();
            return Err(format!("timed out after {} ms; killed", c.timeout_ms));
        }
    };
    Ok((status, collect(out).await, collect(err).await))
}

/// A pipe's text. A grandchild may hold the pipe open: do not wait long.
async fn collect(h: tokio::task::JoinHandle<Vec<u8>>) -> String {
    let abort = h.abort_handle();
    match tokio::time::timeout(Duration::from_secs(1), h).await {
        Ok(Ok(b)) => String::from_utf8_lossy(&b).trim().to_string(),
        _ => {
            abort.abort();
            String::new()
        }
    }
}

/// Everything a pipe gives (so the child never blocks on it), keeping the
/// first [`OUTPUT_CAP`] bytes.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(r: Option<R>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let Some(mut r) = r else { return kept };
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_CAP.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::template::validate_template;
    use serde_json::json;
    use std::time::Instant;

    fn job(params: Value) -> Job {
        Job {
            batch_seq: 7,
            n: 0,
            requested_at: 1_700_000_000_000,
            rule: "scale_up_models".into(),
            action: "scale_models".into(),
            target: "vllm-mixtral".into(),
            parameters: params.to_string(),
            reason: "throughput > 1000".into(),
            findings: "[]".into(),
            analytics: None,
            executor: "script".into(),
            idempotency_key: "k1".into(),
        }
    }

    #[test]
    fn templates_render_fields_and_parameters() {
        let p =
            json!({"replicas": 3, "model": {"name": "mixtral"}, "ok": true, "zones": ["a", "b"]});
        let j = job(p.clone());
        let r = |t: &str| render_template(t, &j, &p);
        assert_eq!(r("{target}").unwrap(), "vllm-mixtral");
        assert_eq!(r("--action={action}").unwrap(), "--action=scale_models");
        assert_eq!(
            r("--replicas={parameters.replicas}").unwrap(),
            "--replicas=3"
        );
        assert_eq!(r("{parameters.model.name}").unwrap(), "mixtral");
        assert_eq!(r("{parameters.ok}").unwrap(), "true");
        assert_eq!(r("{parameters.zones}").unwrap(), r#"["a","b"]"#);
        assert_eq!(r("{rule}/{idempotency_key}").unwrap(), "scale_up_models/k1");
        assert_eq!(r("{requested_at}").unwrap(), "1700000000000");
        assert_eq!(
            r("{{literal}} {{{target}}}").unwrap(),
            "{literal} {vllm-mixtral}"
        );
        assert_eq!(
            r("no placeholders; $(rm -rf /)").unwrap(),
            "no placeholders; $(rm -rf /)"
        );
        let whole: Value = serde_json::from_str(&r("{parameters}").unwrap()).unwrap();
        assert_eq!(whole, p);
        // A value is one argument, never split or interpreted.
        let j2 = Job {
            target: "a b; echo pwned".into(),
            ..j.clone()
        };
        assert_eq!(
            render_template("{target}", &j2, &p).unwrap(),
            "a b; echo pwned"
        );
    }

    #[test]
    fn template_errors_are_clear() {
        let p = json!({"replicas": null});
        let j = job(p.clone());
        let e = render_template("{parameters.replicas}", &j, &p).unwrap_err();
        assert!(e.contains("'replicas' is missing"), "{e}");
        let e = render_template("{parameters.nope.deeper}", &j, &p).unwrap_err();
        assert!(e.contains("missing"), "{e}");
        assert!(
            validate_template("{tagret}")
                .unwrap_err()
                .contains("unknown placeholder")
        );
        assert!(
            validate_template("{target")
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            validate_template("target}")
                .unwrap_err()
                .contains("unmatched")
        );
        assert!(validate_template("{parameters.}").is_err());
        assert!(validate_template("{parameters..x}").is_err());
        assert!(validate_template("{ target }").is_ok());
    }

    #[tokio::test]
    async fn a_command_that_overruns_is_killed() {
        let c = CommandSpec {
            program: "/bin/sleep".into(),
            args: vec!["5".into()],
            timeout_ms: 200,
        };
        let t = Instant::now();
        let r = run_command(&c, &job(json!({})), 0).await;
        assert!(!r.ok);
        assert!(
            r.error.as_deref().unwrap().contains("timed out"),
            "{:?}",
            r.error
        );
        assert!(t.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_command_gets_its_arguments_verbatim() {
        let c = CommandSpec {
            program: "/bin/echo".into(),
            args: vec![
                "{target};".into(),
                "$HOME".into(),
                "{parameters.replicas}".into(),
            ],
            timeout_ms: 5000,
        };
        let r = run_command(&c, &job(json!({"replicas": 2})), 0).await;
        assert!(r.ok, "{:?}", r.error);
        assert!(r.detail.ends_with("vllm-mixtral; $HOME 2"), "{}", r.detail);
        let r = run_command(&c, &job(json!({})), 0).await;
        assert!(!r.ok);
        assert!(
            r.detail.contains("argument 3") && r.detail.contains("not run"),
            "{}",
            r.detail
        );
    }
}

#!/usr/bin/env python3
"""Serve the live dashboard page (host/static) for manual and headless checks.

  serve_dashboard.py --port 19556 --upstream http://127.0.0.1:19555
      the page at /, /static/dashboard.{js,css}; every other path is proxied
      to a running `hxp-events serve` (as it will be once the binary serves
      the page itself)
  serve_dashboard.py --port 19556 --mock
      no service: answers the API paths with synthetic data of the same
      shapes as host/src/api.rs, changing on every call

Loopback only. Stops on SIGTERM / Ctrl-C.
"""

import argparse
import json
import math
import os
import random
import time
import urllib.error
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "host", "static")
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    "/static/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}


def iso(t=None):
    return datetime.fromtimestamp(t or time.time(), timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Mock:
    """Synthetic service state: events arrive at ~200/s with some noise."""

    def __init__(self):
        self.start = time.time()
        self.processed = 0.0
        self.last = self.start
        self.buckets = [0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
        self.counts = [0] * (len(self.buckets) + 1)
        self.actions = []

    def tick(self):
        now = time.time()
        dt, self.last = now - self.last, now
        rate = 200 + 80 * math.sin((now - self.start) / 10) + random.uniform(-20, 20)
        n = int(max(0, rate) * dt)
        self.processed += n
        for _ in range(min(n, 2000)):
            v = random.lognormvariate(math.log(0.004), 0.6)
            for i, b in enumerate(self.buckets):
                if v <= b:
                    self.counts[i] += 1
                    break
            else:
                self.counts[-1] += 1
        if random.random() < 0.2:
            self.actions.insert(0, {"requested_at": iso(now), "rule": "notify_admin", "action": "send_notification",
                                    "target": "all", "parameters": {}, "reason": "error_rate 0.23 > 0.2",
                                    "findings": [], "outcome": "logged", "detail": None})
            del self.actions[50:]
        return now, rate

    def analytics(self):
        now, rate = self.tick()
        lat = 800 + 300 * math.sin((now - self.start) / 7)
        return {"event_count": int(rate * 300), "throughput": rate, "requests_per_second": rate * 0.6,
                "latency": lat, "latency_p50": lat * 0.9, "latency_p95": lat * 1.8, "latency_p99": lat * 2.4,
                "latency_exact": False, "error_rate": 0.05 + 0.04 * math.sin(now / 5), "error_percentage": 5.0,
                "user_satisfaction": 7.8, "business_value": 12345.5, "cost_per_request": 0.0021,
                "timestamp": iso(now), "window_seconds": 300, "covered_seconds": 300, "services": []}

    def correlations(self):
        f = [{"name": "error_burst", "source": "pattern", "subject": "gateway", "alert": True, "occurrences": 7,
              "score": 0.8, "message": "7 errors from gateway in 10 s", "evidence": [1, 2, 3]},
             {"name": "high_latency", "source": "rule", "subject": "mixtral-8x7b", "alert": False, "occurrences": 3,
              "score": 0.3, "message": "latency > 2000 (3 of 5)", "evidence": [4]}]
        return {"patterns_detected": ["error_burst"], "alert_triggered": True, "correlation_score": 0.8,
                "window_seconds": 60, "active_findings": f,
                "recent_alerts": [{"raised_at": iso(), "rule": "error_burst", "source": "pattern", "subject": "gateway",
                                   "occurrences": 7, "score": 0.8, "message": "7 errors from gateway in 10 s", "evidence": [1]}],
                "timestamp": iso()}

    def responses(self):
        return {"total": len(self.actions), "limit": 15, "offset": 0, "responses": self.actions[:15]}

    def plugins(self):
        def p(name, stage, calls):
            return {"name": name, "stage": stage, "version": "0.1.0", "wit_version": "0.1.0",
                    "sha256": "3f2a9c0d1e4b5a6978877665544332211aabbccddeeff00112233445566778899"[:64],
                    "file": f"target/plugins/{name}.wasm", "loaded_at": iso(self.start),
                    "limits": {"deadline_ms": 1000, "memory_mb": 128},
                    "stats": {"calls": calls, "errors": 0, "traps": 0, "timeouts": 0, "memory_limits": 0,
                              "bad_outputs": 0, "restarts": 0, "total_call_ns": calls * 40000, "last_error": None},
                    "enabled": True, "mean_call_ms": 0.04}
        c = int(self.processed / 100)
        return {"plugins": [p("analytics", "analytics", c), p("correlation", "correlation", c), p("responses", "responses", c)],
                "directory": "target/plugins"}

    def pipeline(self):
        return {"mode": "real_time", "enabled": True,
                "stages": ["sources", "validation", "batcher", "analytics", "correlation", "responses", "persistence", "acknowledgement"],
                "queue": {"depth": random.randint(0, 50), "capacity": 100000},
                "batching": {"batch_size": 100, "flush_interval": 5, "parallel_workers": 4, "batches": int(self.processed / 40),
                             "average_batch_size": 40.2, "last_batch_size": 37, "last_batch_at": iso()},
                "events": {"processed": int(self.processed), "duplicates": 3, "stored": int(self.processed), "replayed_at_start": 0},
                "stage_ms_per_batch": {"analytics": 0.051, "correlation": 0.032, "responses": 0.011},
                "database": {"backend": "sqlite", "failing": False, "last_error": None, "batches_written": int(self.processed / 40)},
                "kafka": {"enabled": False}}

    def health(self):
        return {"status": "healthy", "service": "event-processing-api", "timestamp": iso(), "version": "0.1.0",
                "uptime_seconds": int(time.time() - self.start),
                "checks": {"database": "ok", "queue": "ok", "plugins": "ok", "kafka": "disabled"}}

    def metrics(self):
        self.tick()
        lines = ["# TYPE event_processing_total counter",
                 f'event_processing_total{{event_type="llm_request",status="processed"}} {int(self.processed)}',
                 "# TYPE event_processing_duration_seconds histogram"]
        cum = 0
        for b, c in zip(self.buckets + ["+Inf"], self.counts):
            cum += c
            lines.append(f'event_processing_duration_seconds_bucket{{le="{b}"}} {cum}')
        lines.append(f"event_processing_duration_seconds_count {cum}")
        return "\n".join(lines) + "\n"


def make_handler(upstream, mock):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def send(self, code, body, ctype):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            path = self.path.split("?", 1)[0]
            if path in FILES:
                name, ctype = FILES[path]
                with open(os.path.join(STATIC, name), "rb") as f:
                    return self.send(200, f.read(), ctype)
            if mock:
                routes = {"/analytics": mock.analytics, "/correlations": mock.correlations,
                          "/automated-responses": mock.responses, "/plugins": mock.plugins,
                          "/processing/pipeline": mock.pipeline, "/health": mock.health}
                if path == "/metrics":
                    return self.send(200, mock.metrics().encode(), "text/plain; version=0.0.4")
                if path in routes:
                    return self.send(200, json.dumps(routes[path]()).encode(), "application/json")
                return self.send(404, b'{"status":"error","error":"not_found"}', "application/json")
            return self.proxy("GET")

        def do_POST(self):
            if mock:
                return self.send(404, b'{"status":"error","error":"not_found"}', "application/json")
            return self.proxy("POST")

        def proxy(self, method):
            n = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(n) if n else None
            req = urllib.request.Request(upstream + self.path, data=data, method=method)
            for h in ("Content-Type", "Authorization", "Accept"):
                if self.headers.get(h):
                    req.add_header(h, self.headers[h])
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    return self.send(r.status, r.read(), r.headers.get("Content-Type", "application/octet-stream"))
            except urllib.error.HTTPError as e:
                return self.send(e.code, e.read(), e.headers.get("Content-Type", "application/json"))
            except OSError as e:
                return self.send(502, json.dumps({"status": "error", "error": "bad_gateway", "message": str(e)}).encode(),
                                 "application/json")

    return H


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=19556)
    ap.add_argument("--upstream", default="http://127.0.0.1:9100")
    ap.add_argument("--mock", action="store_true")
    a = ap.parse_args()
    srv = ThreadingHTTPServer(("127.0.0.1", a.port), make_handler(a.upstream.rstrip("/"), Mock() if a.mock else None))
    print(f"dashboard on http://127.0.0.1:{a.port}/ ({'mock data' if a.mock else 'proxying ' + a.upstream})", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# Checks that every metric the Grafana dashboard queries is exported by the
# service. Usage:
#   tests/ops/check-dashboard.sh                       # against the hand-written sample
#   tests/ops/check-dashboard.sh metrics.txt           # against a saved exposition
#   tests/ops/check-dashboard.sh http://127.0.0.1:9100/metrics
# Metrics that legitimately appear only later (first Kafka poll, first plugin
# failure, first hot deployment; against a live service also the first
# correlation alert, action request and plugin call) are tolerated when absent. Also checks that
# the checker itself catches a metric that does not exist.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dashboard="$root/config/grafana/event-processing-dashboard.json"
checker="$root/tests/ops/check_dashboard_metrics.py"
src="${1:-$root/tests/ops/fixtures/metrics-sample.txt}"
# Absent until their first sample: Kafka (only when configured), plugin
# failures and hot deployments.
optional=(--optional 'kafka_.*' --optional 'plugin_failures_total' --optional 'plugin_deployments_total')
if [ $# -gt 0 ]; then
    # A live service may not have raised a correlation alert, requested an
    # action or called a plugin yet (the fixture has all three).
    optional+=(--optional 'event_correlation_alerts_total|event_correlation_patterns'
               --optional 'automated_response_requests_total'
               --optional 'plugin_call_duration_seconds_(bucket|sum|count)')
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if [[ "$src" == http://* ]]; then
    curl -fsS "$src" >"$tmp/metrics.txt"
    src="$tmp/metrics.txt"
fi

python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$dashboard"
python3 "$checker" "$dashboard" "$src" "${optional[@]}"

# The checker must fail on an unknown metric.
python3 - "$dashboard" "$tmp/bad.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
d["panels"].append({"type": "timeseries", "title": "typo", "targets": [{"expr": "rate(event_procesing_total[5m])"}]})
json.dump(d, open(sys.argv[2], "w"))
PY
if python3 "$checker" "$tmp/bad.json" "$src" "${optional[@]}" >/dev/null 2>"$tmp/err"; then
    echo "error: the checker accepted a dashboard querying event_procesing_total" >&2
    exit 1
fi
grep -q 'MISSING: event_procesing_total' "$tmp/err"
echo "dashboard metrics: all present"

#!/usr/bin/env bash
# Checks the Prometheus alerting rules and runs their unit tests:
#   promtool check rules config/prometheus/event_processing_alerts.yml
#   promtool test rules  config/prometheus/event_processing_alerts_test.yml
#   promtool check config config/prometheus/prometheus.yml
# Installs Debian's `prometheus` package (which ships promtool) when promtool
# is missing. Exits non-zero on any failure.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
dir="$root/config/prometheus"

if ! command -v promtool >/dev/null 2>&1; then
    echo "promtool not found: installing Debian's prometheus package"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: promtool is missing and this is not root; run: apt-get install -y --no-install-recommends prometheus" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends prometheus >/dev/null 2>&1 || {
        apt-get update -q
        apt-get install -y -q --no-install-recommends prometheus
    }
fi
promtool --version | head -1

# promtool resolves rule_files relative to the file that names them.
cd "$dir"
promtool check rules event_processing_alerts.yml
promtool test rules event_processing_alerts_test.yml
promtool check config prometheus.yml
echo "alert rules: check and unit tests passed"

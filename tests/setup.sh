#!/usr/bin/env bash
# Starts what the tests need on this machine, idempotently:
# - PostgreSQL on 127.0.0.1:5432 (trust auth, database `test`);
# - drops databases left by earlier test runs (hxp_test_*).
set -euo pipefail

if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432

psql -h 127.0.0.1 -U postgres -d test -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'hxp_test_%'" |
    while read -r db; do psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE IF EXISTS \"$db\"" || true; done

# The Kafka-protocol broker of the Kafka tests (each test starts its own on
# a free loopback port). Installed once per machine from crates.io.
if ! command -v tansu >/dev/null && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
    echo "installing tansu (Kafka-compatible broker) from crates.io"
    cargo install tansu --locked --features dynostore,postgres
fi
"$(command -v tansu || echo "$HOME/.cargo/bin/tansu")" --version

# Monitoring tools and a headless browser for the operations tests
# (tests/operations.rs): promtool + Prometheus, the Pushgateway, Chromium and
# ChromeDriver; stunnel4 and openssl for the TLS tests (tests/tls.rs).
# Without recommends: prometheus-node-exporter would take port 9100 on a
# machine with systemd.
missing=()
for p in promtool:prometheus prometheus-pushgateway:prometheus-pushgateway chromium:chromium chromedriver:chromium-driver \
         stunnel4:stunnel4 openssl:openssl; do
    command -v "${p%%:*}" >/dev/null || missing+=("${p##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; }
fi
promtool --version | head -1

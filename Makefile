# hxp-events — the operations.
#   make build   plugins (wasm32-wasip2 components) + the host, release
#   make run     build, then serve with the embedded defaults (SQLite, bundled plugins)
#   make test    build plugins, start what the tests need, build and run every test
#   make bench   the benchmarks (figures go to BENCHMARKS.md by hand)

CARGO       ?= cargo
WASM_TARGET := wasm32-wasip2
WASM_OUT    := target/$(WASM_TARGET)/release
PLUGIN_DIR  := target/plugins
# The default plugins, and the guests the runtime tests load.
GUESTS      := -p hxp-analytics -p hxp-correlation -p hxp-responses \
               -p hostile-guest -p future-wit-guest -p not-a-plugin-guest \
               -p minimal-responses-guest -p config-echo-guest

.PHONY: build run test bench wasm-target plugins lint

wasm-target:
	@rustup target list --installed | grep -qx $(WASM_TARGET) || rustup target add $(WASM_TARGET)

plugins: wasm-target
	# A second analytics build (version "+b") for the hot-deployment tests.
	$(CARGO) build --release --target $(WASM_TARGET) -p hxp-analytics --features hxp-analytics/variant-b
	@mkdir -p target/test-plugins
	cp $(WASM_OUT)/hxp_analytics.wasm target/test-plugins/analytics-b.wasm
	# A hostile guest that traps on every batch (the auto-quarantine test).
	$(CARGO) build --release --target $(WASM_TARGET) -p hostile-guest --features hostile-guest/always-panic
	cp $(WASM_OUT)/hostile_guest.wasm target/test-plugins/hostile-panic.wasm
	$(CARGO) build --release --target $(WASM_TARGET) $(GUESTS)
	@mkdir -p $(PLUGIN_DIR)
	@# Replaced only when changed: the host embeds analytics and correlation
	@# (host/build.rs), and a new mtime would rebuild it.
	@for p in analytics correlation responses; do \
		cmp -s $(WASM_OUT)/hxp_$$p.wasm $(PLUGIN_DIR)/$$p.wasm || { \
		cp $(WASM_OUT)/hxp_$$p.wasm $(PLUGIN_DIR)/.$$p.wasm.tmp && \
		mv $(PLUGIN_DIR)/.$$p.wasm.tmp $(PLUGIN_DIR)/$$p.wasm; }; \
	done
	@echo "plugins in $(PLUGIN_DIR)/"

build: plugins
	$(CARGO) build --release -p hxp-events

run: build
	./target/release/hxp-events serve --config config/event-processing.yaml

# The tests build the host in the `ci` profile (release without LTO, see
# Cargo.toml): the same binary the tests start, one build of the dependencies.
# --no-fail-fast: every failing test binary is reported, not only the first.
test: plugins
	$(CARGO) fmt --all --check
	tests/setup.sh
	$(CARGO) test --profile ci --workspace --no-fail-fast

bench: build
	$(CARGO) bench -p hxp-events --bench plugin_stages
	$(CARGO) bench -p hxp-events --bench service
	$(CARGO) bench -p hxp-events --bench kafka
	$(CARGO) bench -p hxp-events --bench deploy
	$(CARGO) bench -p hxp-events --bench recovery
	$(CARGO) bench -p hxp-events --bench event_time
	$(CARGO) bench -p hxp-events --bench backtest
	$(CARGO) bench -p hxp-events --bench correlation_rules
	$(CARGO) bench -p hxp-events --bench detection

lint:
	python3 tools/check-module-graph.py host/src
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --target $(WASM_TARGET) $(GUESTS) -- -D warnings

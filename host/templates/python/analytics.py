"""{{name}}: an hxp-events analytics plugin (world {{world}}).

Keeps the events of the last `window_secs` seconds and reports their count,
rates, average latency and error rate.
"""

import math
import struct

import hxp
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

NAME = "{{name}}"
STATE_VERSION = 1
# An event in the saved state: time_ms i64, latency_ms f64, kind u8,
# outcome u8, little endian; the JavaScript and Rust templates write the same.
ENTRY = struct.Struct("<qdBB")

window_secs = 60
# (time_ms, kind, latency_ms, outcome) in the order folded in. Module globals
# rather than attributes: the instance lives as long as the plugin does.
entries: list[tuple[int, int, float, int]] = []


class Plugin(exports.Plugin):
    def metadata(self) -> types.PluginMetadata:
        return types.PluginMetadata(
            name=NAME,
            version="0.1.0",
            state_version=STATE_VERSION,
            wants_payload=False,
            fresh_start_ok=True,
        )

    def configure(self, config: str) -> None:
        global window_secs
        window_secs = hxp.positive_int(hxp.config_object(config), "window_secs", 60)
        host.log(types.LogLevel.INFO, "configured", [("window_secs", str(window_secs))])

    def save_state(self) -> bytes:
        return b"".join(ENTRY.pack(t, lat, k, o) for t, k, lat, o in entries)

    def load_state(self, state_version: int, state: bytes) -> None:
        global entries
        if state_version != STATE_VERSION:
            raise Err(f"state version {state_version} is not supported")
        if len(state) % ENTRY.size:
            raise Err("state is not a whole number of entries")
        entries = [(t, k, lat, o) for t, lat, k, o in ENTRY.iter_unpack(state)]


class Analytics(exports.Analytics):
    def process(self, events: types.EventBatch) -> None:
        global entries
        # Columns zipped rather than hxp.rows: only four fields are needed.
        entries.extend(zip(events.time_ms, events.kind, events.latency_ms, events.outcome))
        cutoff = host.now_ms() - window_secs * 1000
        entries = [e for e in entries if e[0] > cutoff]

    def snapshot(self) -> types.WindowSnapshot:
        now = host.now_ms()
        start = now - window_secs * 1000
        count = requests = latency_count = outcomes = errors = 0
        # Added one by one: sum() of floats compensates rounding since Python
        # 3.12, which JavaScript and Rust do not, and outputs must match.
        latency_sum = 0.0
        for t, kind, latency, outcome in entries:
            if not start < t <= now:
                continue
            count += 1
            requests += kind == hxp.LLM_REQUEST
            if not math.isnan(latency):
                latency_count += 1
                latency_sum += latency
            if outcome:
                outcomes += 1
                errors += outcome == hxp.OUTCOME_ERROR
        overall = types.Stats(
            count=count,
            throughput=count / window_secs,
            requests_per_second=requests / window_secs,
            latency_count=latency_count,
            latency_avg=latency_sum / latency_count if latency_count else None,
            latency_p50=None,
            latency_p95=None,
            latency_p99=None,
            latency_exact=False,
            outcome_count=outcomes,
            error_count=errors,
            error_rate=errors / outcomes if outcomes else 0.0,
            user_satisfaction=None,
            satisfaction_count=0,
            business_value=0.0,
            cost_per_request=None,
        )
        return types.WindowSnapshot(
            time_ms=now,
            window_secs=window_secs,
            covered_secs=float(window_secs),
            overall=overall,
            per_kind=[],
            services=[],
        )

"""{{name}}: an hxp-events responses plugin (world {{world}}).

Pages on-call when the window's error rate is over `error_rate_threshold`.
"""

import json

import hxp
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

NAME = "{{name}}"
STATE_VERSION = 1

error_rate_threshold = 0.2
# Decisions that asked for an action, since start. Module globals rather
# than attributes: the instance lives as long as the plugin does.
decisions = 0


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
        global error_rate_threshold
        error_rate_threshold = hxp.number(
            hxp.config_object(config), "error_rate_threshold", 0.2
        )

    def save_state(self) -> bytes:
        return str(decisions).encode()

    def load_state(self, state_version: int, state: bytes) -> None:
        global decisions
        if state_version != STATE_VERSION:
            raise Err(f"state version {state_version} is not supported")
        # bytes.isdigit() is ASCII only.
        if not state.isdigit():
            raise Err("state is not a decimal count")
        decisions = int(state)


class Responses(exports.Responses):
    def decide(self, input: types.ResponseInput) -> list[types.ActionRequest]:
        global decisions
        o = input.analytics.overall
        if not (o.outcome_count > 0 and o.error_rate > error_rate_threshold):
            return []
        decisions += 1
        host.log(
            types.LogLevel.WARN,
            "paging on-call",
            [("errors", str(o.error_count)), ("requests", str(o.outcome_count))],
        )
        return [
            types.ActionRequest(
                rule=NAME,
                action="page_oncall",
                target="team",
                # Integers only: float text differs between languages.
                parameters=json.dumps(
                    {"errors": o.error_count, "requests": o.outcome_count},
                    separators=(",", ":"),
                ),
                reason=f"{o.error_count} errors in {o.outcome_count} requests"
                f" over the last {input.analytics.window_secs} s",
            )
        ]

"""{{name}}: an hxp-events correlation plugin (world {{world}}).

Reports each service with at least `min_errors` errors in a batch.
"""

import hxp
from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

NAME = "{{name}}"
STATE_VERSION = 1
MAX_EVIDENCE = 10

min_errors = 3
# Errors per service since start. Module globals rather than attributes: the
# instance lives as long as the plugin does.
totals: dict[str, int] = {}


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
        global min_errors
        min_errors = hxp.positive_int(hxp.config_object(config), "min_errors", 3)
        host.log(types.LogLevel.INFO, "configured", [("min_errors", str(min_errors))])

    def save_state(self) -> bytes:
        # Python sorts str by code point, which is UTF-8 byte order.
        return "".join(f"{s}\t{totals[s]}\n" for s in sorted(totals)).encode()

    def load_state(self, state_version: int, state: bytes) -> None:
        global totals
        if state_version != STATE_VERSION:
            raise Err(f"state version {state_version} is not supported")
        try:
            text = state.decode()
        except UnicodeDecodeError:
            raise Err("state is not UTF-8") from None
        if text and not text.endswith("\n"):
            raise Err("state does not end with a newline")
        loaded = {}
        for line in text.split("\n")[:-1]:
            service, tab, count = line.rpartition("\t")
            # isdigit() alone also takes non-ASCII digits such as "²".
            if not (tab and count.isascii() and count.isdigit()):
                raise Err(f"bad state line: {line!r}")
            loaded[service] = int(count)
        totals = loaded


class Correlation(exports.Correlation):
    def process(self, events: types.EventBatch) -> types.CorrelationResult:
        counts: dict[str, int] = {}
        evidence: dict[str, list[int]] = {}
        for e in hxp.rows(events):
            if e.outcome != hxp.OUTCOME_ERROR:
                continue
            service = "unknown" if e.service is None else e.service
            counts[service] = counts.get(service, 0) + 1
            seqs = evidence.setdefault(service, [])
            if len(seqs) < MAX_EVIDENCE:
                seqs.append(e.seq)
        for service, n in counts.items():
            totals[service] = totals.get(service, 0) + n
        findings = [
            types.Finding(
                name=NAME,
                source="rule",
                subject=service,
                alert=True,
                occurrences=n,
                score=min(1.0, n / (2 * min_errors)),
                message=f"{n} errors from {service} in this batch"
                f" ({totals[service]} since start)",
                evidence=evidence[service],
            )
            for service, n in sorted(counts.items())
            if n >= min_errors
        ]
        return types.CorrelationResult(
            findings=findings,
            correlation_score=max((f.score for f in findings), default=0.0),
        )

"""Helpers for hxp-events plugins: config checks and a row view of a batch."""

import itertools
import json
import math
from typing import Iterator, NamedTuple, Optional

from componentize_py_types import Err
from wit_world.imports import types

# String index of a model, service or user the event did not carry.
ABSENT = 0xFFFFFFFF
LLM_REQUEST = 0  # event-batch.kind
OUTCOME_ERROR = 2  # event-batch.outcome


class Event(NamedTuple):
    """One row of an event batch: the columns' values, strings looked up
    (None when absent). Numbers the event lacks are NaN, as in the batch."""

    seq: int
    kind: int
    id_hi: int
    id_lo: int
    time_ms: int
    latency_ms: float
    outcome: int
    satisfaction: float
    business_value: float
    cost: float
    health: int
    model: Optional[str]
    service: Optional[str]
    user: Optional[str]
    payload: str


def rows(batch: types.EventBatch) -> Iterator[Event]:
    strings = batch.strings

    def text(i: int) -> Optional[str]:
        return None if i == ABSENT else strings[i]

    # `payload` is empty unless the metadata sets wants_payload.
    payload = batch.payload or itertools.repeat("")
    for r in zip(
        batch.seq, batch.kind, batch.id_hi, batch.id_lo, batch.time_ms,
        batch.latency_ms, batch.outcome, batch.satisfaction,
        batch.business_value, batch.cost, batch.health,
        batch.model, batch.service, batch.user, payload,
    ):
        yield Event(*r[:11], text(r[11]), text(r[12]), text(r[13]), r[14])


def _no_constant(name: str) -> None:
    raise ValueError(name)


def config_object(text: str) -> dict:
    """The config section as a dict; raising Err makes configure return it
    as the error the host reports."""
    try:
        # Numbers as JavaScript holds them (every one a float, 1e400 is inf)
        # and no NaN or Infinity, which are not JSON; so the same config means
        # the same thing to the Python, JavaScript and Rust templates.
        config = json.loads(text, parse_int=float, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        config = None
    if not isinstance(config, dict):
        raise Err("config must be a JSON object")
    return config


def positive_int(config: dict, key: str, default: int) -> int:
    value = config.get(key, float(default))
    # The bound is the WIT's u32.
    if not (
        isinstance(value, float) and value.is_integer() and 0 < value <= 0xFFFFFFFF
    ):
        raise Err(f"{key} must be a positive integer")
    return int(value)


def number(config: dict, key: str, default: float) -> float:
    value = config.get(key, default)
    if not (isinstance(value, float) and math.isfinite(value)):
        raise Err(f"{key} must be a number")
    return value

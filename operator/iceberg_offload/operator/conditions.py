"""The OffloadTable's conditions: their types, their reasons, one builder per state.

Pure logic. A builder says what a condition is now; `set_condition` puts it into the status's
list, moving its lastTransitionTime only when its status changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from enum import StrEnum

from iceberg_offload.operator.status import Condition

READY = "Ready"  # the summary
RUNNING = "Running"
BLOCKED = "Blocked"
SUSPENDED = "Suspended"
FAILING = "Failing"
IN_SYNC = "InSync"  # the last late-data audit left nothing differing

SUSPENDED_MESSAGE = "spec.suspend is true: no scheduled runs or retries"


class Reason(StrEnum):
    """Every reason a condition gives (CamelCase, as the CRD asks)."""

    SCHEDULED = "Scheduled"
    SUCCEEDED = "Succeeded"
    RETRYING = "Retrying"
    RETRIES_EXHAUSTED = "RetriesExhausted"
    NOT_FAILING = "NotFailing"
    WAITING_FOR_UPSTREAM = "WaitingForUpstream"
    CLEAR = "Clear"
    RUN_ACTIVE = "RunActive"
    IDLE = "Idle"
    SUSPENDED = "Suspended"
    ACTIVE = "Active"
    INVALID_SPEC = "InvalidSpec"
    UNKNOWN_UPSTREAM = "UnknownUpstream"
    DEPENDENCY_CYCLE = "DependencyCycle"
    EQUAL = "Equal"
    BUCKETS_DIFFER = "BucketsDiffer"
    NOT_AUDITED = "NotAudited"


def _true(type_: str, reason: Reason, message: str) -> Condition:
    return Condition(type_, "True", reason.value, message)


def _false(type_: str, reason: Reason, message: str) -> Condition:
    return Condition(type_, "False", reason.value, message)


def ready(reason: Reason, message: str) -> Condition:
    return _true(READY, reason, message)


def not_ready(reason: Reason, message: str) -> Condition:
    return _false(READY, reason, message)


def running(message: str) -> Condition:
    return _true(RUNNING, Reason.RUN_ACTIVE, message)


def idle(message: str) -> Condition:
    return _false(RUNNING, Reason.IDLE, message)


def run_state(active: bool, message: str) -> Condition:
    return running(message) if active else idle(message)


def blocked(message: str) -> Condition:
    return _true(BLOCKED, Reason.WAITING_FOR_UPSTREAM, message)


def clear() -> Condition:
    return _false(BLOCKED, Reason.CLEAR, "nothing to wait for")


def not_blocked_invalid_spec(message: str) -> Condition:
    """A spec that can never run waits for nothing: the fault is its own."""
    return _false(BLOCKED, Reason.INVALID_SPEC, message)


def suspended() -> Condition:
    return _true(SUSPENDED, Reason.SUSPENDED, SUSPENDED_MESSAGE)


def active() -> Condition:
    return _false(SUSPENDED, Reason.ACTIVE, "runs on schedule")


def failing(message: str) -> Condition:
    return _true(FAILING, Reason.RETRIES_EXHAUSTED, message)


def not_failing() -> Condition:
    return _false(FAILING, Reason.NOT_FAILING, "the last run did not exhaust its retries")


def in_sync(message: str) -> Condition:
    return _true(IN_SYNC, Reason.EQUAL, message)


def out_of_sync(message: str) -> Condition:
    return _false(IN_SYNC, Reason.BUCKETS_DIFFER, message)


def not_audited() -> Condition:
    return Condition(
        IN_SYNC,
        "Unknown",
        Reason.NOT_AUDITED.value,
        "no run has audited the table yet (a run audits once the table has a committed watermark)",
    )


def set_condition(
    conditions: Sequence[Condition], condition: Condition, now: datetime, generation: int
) -> tuple[Condition, ...]:
    """The conditions with `condition` set (in its place, else appended); its lastTransitionTime
    moves only when its status changes."""
    for i, old in enumerate(conditions):
        if old.type == condition.type:
            moved = now if old.status != condition.status else old.last_transition_time
            new = replace(condition, last_transition_time=moved, observed_generation=generation)
            return (*conditions[:i], new, *conditions[i + 1 :])
    return (*conditions, replace(condition, last_transition_time=now, observed_generation=generation))


def newly_not_ready(previous: Condition | None, condition: Condition) -> bool:
    """Ready turns False, or False for another reason: worth a Warning event (only then)."""
    if condition.type != READY or condition.status != "False":
        return False
    return previous is None or previous.reason != condition.reason or previous.status != "False"

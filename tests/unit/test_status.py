"""The status vocabulary: the one rule for a condition, over every combination of previous condition ×
new status × generation, and the table of who writes which status key."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qbo_operator.core.models import IntegrationStatus
from qbo_operator.core.status import (
    CONDITION_TYPES,
    CONDITION_WRITERS,
    DEAD_GRANT_REASONS,
    MESSAGE_LIMIT,
    STATUS_WRITERS,
    ConditionStatus,
    ConditionType,
    Reason,
    StatusWriter,
    condition,
    keys_of,
    set_condition,
)
from qbo_operator.reconciler.conditions import OWNED_STATUS_KEYS

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
EARLIER = "2026-11-22T12:00:00Z"
STAMP = "2026-11-25T12:00:00Z"

RUN_RECORD = ("lastSync", "syncWatermark", "lastSuccessfulSyncTime", "lastReadTime", "rejected", "meteredReads")
STATUSES: list[ConditionStatus] = ["True", "False", "Unknown"]
# (name, the previous condition of the same type or None)
PREVIOUS: list[tuple[str, dict[str, Any] | None]] = [
    ("none", None),
    *((f"was {s}", {"type": "Synced", "status": s, "reason": "Old", "lastTransitionTime": EARLIER}) for s in STATUSES),
]
GENERATIONS: list[int | None] = [None, 0, 4]
COMBINATIONS = list(itertools.product(PREVIOUS, STATUSES, GENERATIONS))


@pytest.mark.parametrize(
    ("previous_case", "status", "generation"),
    COMBINATIONS,
    ids=[f"{p[0]}|now {s}|gen={g}" for p, s, g in COMBINATIONS],
)
def test_every_combination(
    previous_case: tuple[str, dict[str, Any] | None], status: ConditionStatus, generation: int | None
) -> None:
    _, previous = previous_case
    out = condition(ConditionType.SYNCED, status, Reason.SUCCEEDED, "ok", NOW, previous, generation)
    # lastTransitionTime moves only when the status flips; a new reason or message is no transition.
    flipped = previous is None or previous["status"] != status
    assert out["lastTransitionTime"] == (STAMP if flipped else EARLIER)
    # observedGeneration when the writer knows it (0 is a generation too); plain strings throughout.
    assert out.get("observedGeneration") == generation
    assert ("observedGeneration" in out) == (generation is not None)
    assert out["type"] == "Synced" and type(out["type"]) is str
    assert out["reason"] == "Succeeded" and type(out["reason"]) is str
    assert (out["status"], out["message"]) == (status, "ok")
    # What the writers store reads back as a metav1.Condition.
    parsed = IntegrationStatus.model_validate({"conditions": [out]}).condition("Synced")
    assert parsed is not None and parsed.status == status

    # set_condition: the type replaced and moved last, other writers' conditions kept, an unknown (falsy)
    # generation left out.
    others = [{"type": "Webhooks", "status": "True", "reason": "Receiving", "lastTransitionTime": EARLIER}]
    listed = set_condition(
        [*([previous] if previous else []), *others], "Synced", status, "Succeeded", "ok", NOW, generation
    )
    assert listed[:-1] == others
    assert listed[-1] == condition("Synced", status, "Succeeded", "ok", NOW, previous, generation or None)


def test_set_condition_cuts_the_message_to_the_crd_limit() -> None:
    (cond,) = set_condition([], "Synced", "False", Reason.SYNC_FAILED, "x" * (MESSAGE_LIMIT + 10), NOW)
    assert len(cond["message"]) == MESSAGE_LIMIT


def test_a_previous_condition_without_a_transition_time_gets_one() -> None:
    previous = {"type": "Ready", "status": "True"}
    assert condition("Ready", "True", "Connected", "m", NOW, previous)["lastTransitionTime"] == STAMP
    later = NOW + timedelta(hours=1)
    kept = condition("Ready", "True", "Connected", "m", later, {**previous, "lastTransitionTime": STAMP})
    assert kept["lastTransitionTime"] == STAMP


@pytest.mark.parametrize(
    ("writer", "keys"),
    [
        # The operator: everything but the sync Job's run record and the gateway's webhook counts.
        (StatusWriter.OPERATOR, set(STATUS_WRITERS) - {*RUN_RECORD, "webhook"}),
        # The sync Job: its run record, and phase/conditions for a dead grant and its Synced.
        (StatusWriter.SYNC, {"phase", "conditions", *RUN_RECORD, "webhook"}),
        (StatusWriter.GATEWAY, {"webhook"}),
    ],
)
def test_who_writes_which_status_key(writer: StatusWriter, keys: set[str]) -> None:
    assert set(keys_of(writer)) == keys


def test_every_status_key_has_a_writer_and_is_in_the_status_model() -> None:
    aliases = {f.alias or name for name, f in IntegrationStatus.model_fields.items()}
    assert set(STATUS_WRITERS) == aliases
    assert all(STATUS_WRITERS.values())
    assert keys_of(StatusWriter.OPERATOR) == OWNED_STATUS_KEYS


@pytest.mark.parametrize(
    ("type_", "writers"),
    [
        (ConditionType.READY, {StatusWriter.OPERATOR, StatusWriter.SYNC}),
        (ConditionType.CONNECTED, {StatusWriter.OPERATOR, StatusWriter.SYNC}),
        (ConditionType.SYNCED, {StatusWriter.OPERATOR, StatusWriter.SYNC}),
        (ConditionType.SUSPENDED, {StatusWriter.OPERATOR}),
    ],
)
def test_who_writes_which_condition(type_: ConditionType, writers: set[StatusWriter]) -> None:
    assert CONDITION_WRITERS[type_] == writers
    assert all(w in STATUS_WRITERS["conditions"] for w in writers)


def test_the_vocabulary_fits_the_crd() -> None:
    assert CONDITION_TYPES == ("Ready", "Connected", "Synced", "Suspended", "Reconciling", "Stalled")
    for reason in Reason:
        assert reason.value[0].isupper() and reason.value.isalnum() and len(reason.value) <= 1024
    assert len({r.value for r in Reason}) == len(Reason)
    assert {str(r) for r in DEAD_GRANT_REASONS} == {"TokenRevoked", "RefreshTokenExpired"}

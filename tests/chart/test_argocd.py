"""Argo CD's view of a QuickbooksIntegration: the chart's health.lua and the "sync-now" action, run by a real
Lua 5.1 interpreter over the status the operator computes in each phase (the way Argo CD tests its own
resource customizations: script, fixture object, expected status and message)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qbo_operator.core.models import parse_rfc3339
from tests.support import lua, phases
from tests.support.paths import ROOT

SUSPENDED_MESSAGE = "Scheduled syncs are suspended by spec.suspend; the QuickBooks connection is kept alive."
WAITING = (
    "Waiting for a person at the company to open the Connect link in status.authorizationURL and grant access "
    "at Intuit."
)
RELINK = "Send the Connect link in status.authorizationURL to a person at the company to connect again."

# object id -> (Argo CD health status, message)
HEALTH: dict[str, tuple[str, str]] = {
    "just created": ("Progressing", "Waiting for the operator to reconcile the integration."),
    "spec edited, not yet reconciled": ("Progressing", "Waiting for the operator to reconcile generation 3."),
    "pending": ("Suspended", WAITING),
    "pending, suspended": ("Suspended", WAITING),
    "connected, never synced": ("Healthy", "Connected to QuickBooks company 9130355357483456. Syncs run on schedule."),
    "connected, synced": ("Healthy", "Connected to QuickBooks company 9130355357483456. Syncs run on schedule."),
    "connected, last sync failed": ("Degraded", "QuickBooks Online did not answer."),
    "connected, suspended": ("Suspended", SUSPENDED_MESSAGE),
    "disconnected, refresh token expired": (
        "Degraded",
        f"The refresh token expired at 2026-11-25T11:59:00Z and Intuit no longer accepts it. {RELINK}",
    ),
    "disconnected, secret deleted": ("Degraded", f"The token Secret acme-qbo-tokens is missing. {RELINK}"),
    "error, environment changed": (
        "Degraded",
        "spec.environment changed from production to sandbox after a QuickBooks company was connected in "
        "production. Set spec.environment back to production, or create a new QuickbooksIntegration for sandbox.",
    ),
    "error, duplicate realm": (
        "Degraded",
        "QuickBooks company 9130355357483456 already belongs to QuickbooksIntegration tenants/first; one company "
        "can be connected to one integration only. Delete this integration or its token Secret acme-qbo-tokens, "
        "or connect a different company.",
    ),
}


def fixture(case: str) -> dict[str, Any]:
    if case == "just created":
        return phases.just_created()
    if case == "spec edited, not yet reconciled":
        return phases.unobserved_generation()
    return phases.served(case)


def test_the_table_covers_every_phase_row() -> None:
    assert set(phases.STATES) <= set(HEALTH)


@pytest.mark.parametrize("case", HEALTH)
def test_health(case: str) -> None:
    assert lua.health(fixture(case)) == HEALTH[case]


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"type": "Stalled", "status": "True", "reason": "InvalidSchedule", "message": "fix it"}, "Degraded"),
        ({"type": "Reconciling", "status": "True", "reason": "Progressing", "message": "working"}, "Progressing"),
        ({"type": "Reconciling", "status": "False", "reason": "Reconciled", "message": "done"}, "Healthy"),
    ],
)
def test_kstatus_conditions_take_precedence(condition: dict[str, Any], expected: str) -> None:
    """Reconciling/Stalled, where the operator writes them, decide before the phase does."""
    obj = phases.served("connected, synced")
    others = [c for c in obj["status"]["conditions"] if c["type"] != condition["type"]]
    obj["status"]["conditions"] = [*others, condition]
    status, message = lua.health(obj)
    assert status == expected
    if expected != "Healthy":
        assert message == condition["message"]


def test_a_message_with_quotes_and_non_ascii_comes_back_intact() -> None:
    obj = phases.served("connected, last sync failed")
    text = 'Green Check said "no" to café payments \\ 100%'
    obj["status"]["conditions"][0]["message"] = text
    assert lua.health(obj) == ("Degraded", text)


# --- the "sync-now" action ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "disabled"),
    [
        ("connected, synced", "false"),
        ("connected, never synced", "false"),
        ("connected, suspended", "true"),
        ("pending", "true"),
        ("disconnected, secret deleted", "true"),
        ("error, duplicate realm", "true"),
        ("just created", "true"),
    ],
)
def test_sync_now_is_offered_only_where_the_operator_runs_it(case: str, disabled: str) -> None:
    assert lua.run(lua.DISCOVERY, fixture(case), '{r["sync-now"].disabled}') == [disabled]


@pytest.mark.parametrize("annotations", [None, {"team": "payments"}])
def test_sync_now_sets_the_annotation_to_the_time(annotations: dict[str, str] | None) -> None:
    obj = phases.served("connected, synced")
    if annotations is not None:
        obj["metadata"]["annotations"] = annotations
    before = datetime.now(UTC).replace(microsecond=0)
    value, team = lua.run(
        lua.SYNC_NOW,
        obj,
        f'{{r.metadata.annotations["{phases.SYNC_REQUEST_ANNOTATION}"], r.metadata.annotations.team or "-"}}',
    )
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value)
    stamp = parse_rfc3339(value)
    assert before <= stamp <= datetime.now(UTC) + timedelta(seconds=1)
    assert team == (annotations or {}).get("team", "-")


# --- the documented argocd-cm snippet -----------------------------------------------------------------------


def test_docs_carry_the_scripts_the_chart_ships() -> None:
    """docs/operator.md's argocd-cm snippet is the chart's scripts, indented, never a drifting copy."""
    doc = (ROOT / "docs" / "operator.md").read_text()
    for script, indent in ((lua.HEALTH, 4), (lua.DISCOVERY, 6), (lua.SYNC_NOW, 8)):
        body = "\n".join((" " * indent + line).rstrip() for line in script.read_text().splitlines())
        assert body in doc, f"docs/operator.md lacks {script.relative_to(ROOT)} as shipped"

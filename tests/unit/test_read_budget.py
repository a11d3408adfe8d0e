"""The read budget (issue #20): `status.meteredReads` as each sync run adds to it, and the per-app gauges the
QuickbooksReadBudget alert compares (reconciler/metrics.py), computed at scrape time for the current month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from qbo_operator.core.models import Integration, MeteredReads
from qbo_operator.reconciler.metrics import read_budget_families, render_integrations, seen

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("previous", "at", "spent", "expected"),
    [
        (None, NOW, 7, ("2026-12", 7)),  # the first run
        (MeteredReads(month="2026-12", requests=40), NOW, 7, ("2026-12", 47)),  # added within the month
        (MeteredReads(month="2026-11", requests=40), NOW, 7, ("2026-12", 7)),  # a new month starts at 0
        (MeteredReads(month="2026-12", requests=40), NOW, 0, ("2026-12", 40)),  # a run that read nothing
        # the month is UTC's: 23:30 on Nov 30 in Los Angeles is already December
        (
            MeteredReads(month="2026-11", requests=40),
            datetime(2026, 11, 30, 23, 30, tzinfo=timezone(timedelta(hours=-8))),
            3,
            ("2026-12", 3),
        ),
    ],
)
def test_a_run_adds_its_reads_to_the_month(
    previous: MeteredReads | None, at: datetime, spent: int, expected: tuple[str, int]
) -> None:
    after = MeteredReads.after(previous, at, spent)
    assert (after.month, after.requests) == expected


def integ(name: str, environment: str, reads: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "t", "name": name, "uid": "u"},
        "spec": {"companyId": "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10", "environment": environment},
        "status": {"meteredReads": reads} if reads is not None else {},
    }


BODIES = [
    integ("a", "production", {"month": "2026-12", "requests": 120}),
    integ("b", "production", {"month": "2026-12", "requests": 30}),
    integ("c", "production", {"month": "2026-11", "requests": 9000}),  # last month's count is not this month's
    integ("d", "sandbox", {"month": "2026-12", "requests": 5}),
    integ("e", "sandbox", None),  # never synced
]


def samples(families: list[Any], name: str) -> dict[tuple[str, ...], float]:
    family = next(f for f in families if f.name == name)
    return {tuple(s.labels.values()): s.value for s in family.samples}


SEEN = [seen(Integration.from_object(b), realm_ids=False) for b in BODIES]


def test_each_integration_shows_this_months_reads() -> None:
    families = list(text_string_to_metric_families(render_integrations(SEEN, now=NOW)))
    got = samples(families, "qbo_integration_metered_reads")
    assert got == {("t", "a"): 120, ("t", "b"): 30, ("t", "c"): 0, ("t", "d"): 5, ("t", "e"): 0}


@pytest.mark.parametrize("budget", [500_000, 1_000])
def test_each_app_sums_its_integrations_against_the_budget(budget: int) -> None:
    families = read_budget_families(SEEN, budget, now=NOW)
    assert samples(families, "qbo_app_metered_reads") == {("production",): 150, ("sandbox",): 5}
    assert samples(families, "qbo_app_read_budget") == {("production",): budget, ("sandbox",): budget}

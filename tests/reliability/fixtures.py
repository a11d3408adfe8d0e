"""Fixtures shared by tests/reliability and tests/security (each conftest imports them)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability import ledger

_reported: list[bool] = []


@pytest.fixture
def report(request: pytest.FixtureRequest) -> ledger.Report:
    """Record what this test tried and what held: `report.row(area, check, tried=..., held=..., **figures)`."""
    return ledger.Report(request.node.nodeid)


@pytest.fixture(autouse=True)
def _hygiene_snapshot(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that ran a stack (it registered secrets or output) on the control plane: the cluster's
    Events, every CR status and the token Secrets' values into the ledger."""
    before = ledger.SECRETS.changes
    yield
    if ledger.SECRETS.changes != before and "cluster" in request.fixturenames:
        cluster = request.getfixturevalue("cluster")
        if getattr(cluster, "local", False):
            ledger.snapshot_cluster(cluster, request.node.nodeid)


@pytest.fixture(scope="session", autouse=True)
def _secret_hygiene() -> Iterator[None]:
    """The session-level check: no secret value a stack used appears in anything the stacks produced."""
    yield
    if _reported or ledger.SECRETS.scanned:
        return  # tests/security/test_secret_hygiene.py ran the scan (and failed there, if it found a leak)
    _reported.append(True)
    hits = ledger.SECRETS.final_scan()
    if hits:
        where = "\n".join(f"  {h.label} in {h.source}" for h in hits[:40])
        pytest.fail(f"{len(hits)} secret leaks (values never printed):\n{where}", pytrace=False)

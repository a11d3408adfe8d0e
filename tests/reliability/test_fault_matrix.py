"""The fault matrix: every kind of failure of both external APIs, one parametrized cell each, run against
`qbo-operator sync` as a real process with the real control plane.

Each cell states its expected outcome: the exit code, the Synced condition (status, reason) and what the
error line says. Every cell, whatever its outcome, must keep the delivery invariants (`faults.check_delivery`,
Green Check's current records against the projection): no (payment, invoice) held twice, the watermark never
past a change not yet delivered; a run that succeeds also leaves nothing lost and nothing false (a record QBO
does not have, or whose amount, credit or invoice fields differ). A cell whose run fails is followed by a run
without faults that must then leave Green Check holding exactly the projection. Green Check's hooks see
`(crb_id, payment sets)` before a request and `(crb_id, payment results)` after it.

The cells share one integration (and its growing history): each starts from a fully delivered state and
adds fresh payments, so a cell's runs read about one cell's worth of data, while the delivery invariants are
checked over everything so far. The sync never moves its watermark past its own start less the settle time
(by its own clock); the cells run with a settle time of one second (`faults.TUNING`) and the next payments
come at least `GAP` seconds after the last run started, stamped within the last second (the generator
otherwise spreads them over the last minute), so they are stamped after its watermark and the
watermark invariant bites (moving the sandbox's clock ahead of the sync's would leave every watermark
behind every change)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from qbo_operator.harness.controlplane import ControlPlane
from qbo_operator.harness.sandbox.qbo_store import parse_time
from tests.support import ledger
from tests.support.faults import (
    TUNING,
    bearer_tokens_in,
    check_delivery,
    condition,
    echo_bearer_on_ingest,
    garble_amount,
    no_traceback,
    run_sync,
    stage,
)
from tests.support.ledger import Report
from tests.support.proxies import Proxy
from tests.support.sync import E2E, Run

pytestmark = pytest.mark.e2e

QUERY = r"/v3/company/\d+/(query|cdc)$"  # every metered read: keyset pages, bulk reads, CDC
INGEST = r"/invoice-payments$"
OK = (0, ("True", "Succeeded"), "")


@dataclass(frozen=True)
class Cell:
    id: str
    api: str  # "qbo" | "greencheck"
    rules: tuple[dict[str, Any], ...]
    rc: int
    synced: tuple[str, str] | None  # (status, reason) of the Synced condition afterwards; None: left alone
    says: str = ""  # words the one error line must contain
    env: dict[str, str] = field(default_factory=dict)


def q(kind: str, **rule: Any) -> dict[str, Any]:
    return {"kind": kind, "path": QUERY, **rule}


def g(kind: str, **rule: Any) -> dict[str, Any]:
    return {"kind": kind, "path": INGEST, **rule}


QBO_DOWN = ("False", "QuickbooksUnavailable")
GC_DOWN = ("False", "GreenCheckUnavailable")

CELLS = [
    # QuickBooks Online -----------------------------------------------------------------------------
    Cell("qbo-latency", "qbo", (q("latency", seconds=0.15),), *OK),
    Cell("qbo-timeout-once", "qbo", (q("latency", seconds=2.5, count=1),), *OK),
    Cell("qbo-timeout-always", "qbo", (q("latency", seconds=2.5, skip=2),), 1, QBO_DOWN, "timed out"),
    Cell("qbo-5xx-transient", "qbo", (q("status", status=503, count=2),), *OK),
    Cell("qbo-5xx-persistent", "qbo", (q("status", status=500, skip=2),), 1, QBO_DOWN, "HTTP 500"),
    Cell("qbo-429-transient", "qbo", (q("throttle", retry_after=0, count=4),), *OK),
    Cell("qbo-429-persistent", "qbo", (q("throttle", retry_after=0, skip=1),), 1, QBO_DOWN, "throttling (429)"),
    Cell("qbo-429-xml", "qbo", (q("xml_fault", status=429, count=2),), *OK),
    Cell("qbo-malformed-transient", "qbo", (q("malformed", count=2),), *OK),
    Cell("qbo-malformed-persistent", "qbo", (q("malformed", skip=2),), 1, QBO_DOWN, "malformed JSON"),
    Cell("qbo-html-502-transient", "qbo", (q("html_502", count=2),), *OK),
    Cell("qbo-html-502-persistent", "qbo", (q("html_502", skip=1),), 1, QBO_DOWN, "502 Bad Gateway"),
    Cell("qbo-xml-fault-transient", "qbo", (q("xml_fault", status=500, count=2),), *OK),
    Cell("qbo-xml-fault-persistent", "qbo", (q("xml_fault", status=500, skip=2),), 1, QBO_DOWN, "HTTP 500"),
    Cell("qbo-truncated-transient", "qbo", (q("truncated", count=2),), *OK),
    Cell("qbo-truncated-persistent", "qbo", (q("truncated", skip=2),), 1, QBO_DOWN, "QuickBooks"),
    Cell("qbo-401-once", "qbo", (q("status", status=401, count=1),), *OK),
    Cell("qbo-400-refused", "qbo", (q("status", status=400, skip=1),), 1, QBO_DOWN, "refused the request"),
    Cell("qbo-token-revoked-mid-run", "qbo", (), 1, None, "invalid_grant"),
    Cell("qbo-garbled-amount", "qbo", (), 1, QBO_DOWN, "cannot be read"),
    # Green Check --------------------------------------------------------------------------------------
    Cell("gc-latency", "greencheck", (g("latency", seconds=0.15),), *OK),
    Cell("gc-timeout-once", "greencheck", (g("latency", seconds=2.5, count=1),), *OK),
    Cell("gc-timeout-always", "greencheck", (g("latency", seconds=2.5, skip=2),), 1, GC_DOWN, "timed out"),
    Cell("gc-5xx-transient", "greencheck", (g("status", status=503, count=2),), *OK),
    Cell("gc-5xx-persistent", "greencheck", (g("status", status=500, skip=2),), 1, GC_DOWN, "HTTP 500"),
    Cell("gc-429-transient", "greencheck", (g("throttle", retry_after=0, count=4),), *OK),
    Cell("gc-429-persistent", "greencheck", (g("throttle", retry_after=0, skip=1),), 1, GC_DOWN, "throttling (429)"),
    Cell("gc-malformed-transient", "greencheck", (g("malformed", count=2),), *OK),
    Cell("gc-malformed-persistent", "greencheck", (g("malformed", skip=2),), 1, GC_DOWN, "unreadable body"),
    Cell("gc-html-502-transient", "greencheck", (g("html_502", count=2),), *OK),
    Cell("gc-html-502-persistent", "greencheck", (g("html_502", skip=2),), 1, GC_DOWN, "HTTP 502"),
    Cell("gc-xml-fault-transient", "greencheck", (g("xml_fault", status=503, count=2),), *OK),
    Cell("gc-xml-fault-persistent", "greencheck", (g("xml_fault", status=500, skip=2),), 1, GC_DOWN, "HTTP 500"),
    Cell("gc-truncated-transient", "greencheck", (g("truncated", count=2),), *OK),
    Cell("gc-truncated-persistent", "greencheck", (g("truncated", skip=2),), 1, GC_DOWN, "Green Check"),
    Cell("gc-credentials-refused-mid-run", "greencheck", (g("status", status=401, skip=2),), 1, GC_DOWN, "HTTP 401"),
    Cell("gc-token-expired-mid-run", "greencheck", (), *OK),
    Cell("gc-error-page-echoes-the-token", "greencheck", (), 1, GC_DOWN, "HTTP 502"),
]


NEW_PAYMENTS = 50
GAP = 3.0  # seconds from a run's start to the next payments: whole-second stamps stay past its watermark
_last_start = [0.0]  # time.monotonic() when the last run started
_named: dict[str, str] = {}  # cell id -> the payment id its error must name


@pytest.fixture(scope="module")
def shared(cluster: ControlPlane) -> Iterator[E2E]:
    namespace = f"fault-matrix-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    try:
        with stage(cluster, namespace) as e:
            yield e
        ledger.snapshot_cluster(cluster, "fault matrix")
    finally:
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


async def _settle(e: E2E, n: int) -> None:
    """A fully delivered starting point, then fresh payments past the previous window's overlap."""
    e.qbo.faults.clear()
    e.gc.faults.clear()
    e.gc.before_ingest = e.gc.after_ingest = None
    e.qbo_api_url = None
    status = e.status()
    if status.get("phase") != "Connected":
        _reconnect(e)
    try:
        check_delivery(e, complete=True, status=status)
    except AssertionError:
        run = await _sync(e, TUNING)  # an earlier cell failed half-way: finish its work first
        assert run.rc == 0, run.stderr[-2000:]
    await asyncio.sleep(max(0.0, GAP - (time.monotonic() - _last_start[0])))
    e.qbo.generate_payments(e.realm, NEW_PAYMENTS, seed=1000 + n, seconds=1)  # stamped now, not spread back


async def _sync(e: E2E, env: dict[str, str]) -> Run:
    _last_start[0] = time.monotonic()
    return await run_sync(e, env)


def _reconnect(e: E2E) -> None:
    """What a person (Connect link) and the operator (phase) do after the grant died."""
    e.token_reply = e.qbo.issue_tokens(e.realm)
    e.write_secret()
    e.patch_status({"phase": "Connected"})


async def _run_cell(e: E2E, cell: Cell) -> Any:
    """Arm the cell's fault, run the sync once, and return the run."""
    sandbox = e.qbo if cell.api == "qbo" else e.gc
    for rule in cell.rules:
        sandbox.faults.add(rule)
    env = {**TUNING, **cell.env}
    if cell.id == "qbo-token-revoked-mid-run":
        calls = {"n": 0}

        async def revoke_after_the_first_batch(crb: str, results: list[dict[str, Any]]) -> None:
            calls["n"] += 1
            if calls["n"] == 1:  # a cell's run is a few batches: QBO is still read after the first
                e.qbo.revoke_all(e.realm)  # the person disconnects the app at Intuit during the run

        e.gc.after_ingest = revoke_after_the_first_batch
        return await _sync(e, env)
    if cell.id == "gc-token-expired-mid-run":
        calls = {"n": 0}

        async def expire_after_two_batches(crb: str, results: list[dict[str, Any]]) -> None:
            calls["n"] += 1
            if calls["n"] == 2:
                e.gc.expire_tokens()

        e.gc.after_ingest = expire_after_two_batches
        return await _sync(e, env)
    if cell.id == "qbo-garbled-amount":
        window = sorted(
            (p for p in e.qbo.companies[e.realm].payments.values() if p["Line"]),
            key=lambda p: parse_time(p["MetaData"]["LastUpdatedTime"]),
        )
        victim = window[-NEW_PAYMENTS // 3]["Id"]  # late in the run: earlier batches go out first
        _named[cell.id] = victim
        proxy = Proxy(e.qbo.api_url, garble_amount(victim))
        async with proxy.serve() as url:
            e.qbo_api_url = url
            run = await _sync(e, env)
        e.qbo_api_url = None
        return run
    if cell.id == "gc-error-page-echoes-the-token":
        proxy = Proxy(e.gc_url, echo_bearer_on_ingest(after=2))
        real_url, e.gc_url = e.gc_url, ""
        async with proxy.serve() as url:
            e.gc_url = url
            run = await _sync(e, env)
        e.gc_url = real_url
        return run
    return await _sync(e, env)


@pytest.mark.parametrize("cell", CELLS, ids=[c.id for c in CELLS])
async def test_fault_cell(shared: E2E, cell: Cell, report: Report) -> None:
    held = False
    try:
        await _settle(shared, CELLS.index(cell))
        await _cell(shared, cell)
        held = True
    finally:
        area = f"fault matrix: {'QBO' if cell.api == 'qbo' else 'Green Check'}"
        expectation = f"exit {cell.rc}" + (f", Synced {cell.synced[1]}" if cell.synced else "")
        report.row(area, cell.id, tried=expectation, held="held" if held else "did not hold", kind="fault")


async def _cell(e: E2E, cell: Cell) -> None:
    run = await _run_cell(e, cell)
    no_traceback(run)
    assert run.rc == cell.rc, f"exit code {run.rc}, expected {cell.rc}:\n{run.stderr[-2000:]}"
    if cell.rc:
        assert len(run.error_lines) == 1, run.stderr[-2000:]
        assert cell.says in run.error_lines[0], run.error_lines[0]
    if cell.id in _named:
        assert _named[cell.id] in run.error_lines[0], f"the error does not name payment {_named[cell.id]}"
    status = e.status()
    if cell.synced is not None:
        synced = condition(status, "Synced")
        assert (synced.get("status"), synced.get("reason")) == cell.synced, status.get("lastSync", {}).get("message")
    assert status["lastSync"]["result"] == ("Succeeded" if cell.rc == 0 else "Failed")
    if cell.id == "qbo-token-revoked-mid-run":
        assert status["phase"] == "Disconnected"
        assert condition(status, "Connected").get("reason") == "TokenRevoked"
    if cell.id == "gc-error-page-echoes-the-token":
        echoed = set(bearer_tokens_in(run.stderr))
        leaked = [t for t in e.gc._tokens if t in run.stderr or t in str(status) or t in str(e.events())]
        assert not leaked, (
            "a Green Check access token echoed by an error page reached the sync's output, status or Events "
            f"({len(echoed)} token(s) in the error line)"
        )
    try:
        check_delivery(e, complete=cell.rc == 0, status=status)
    except AssertionError as exc:  # what the run said is what explains a broken invariant
        raise AssertionError(f"{exc}\nthe run's output:\n{run.stderr[-4000:]}") from None
    if cell.rc:
        e.qbo.faults.clear()
        e.gc.faults.clear()
        e.gc.before_ingest = e.gc.after_ingest = None
        if cell.id == "qbo-token-revoked-mid-run":
            _reconnect(e)
        again = await _sync(e, TUNING)
        assert again.rc == 0, again.stderr[-2000:]
    check_delivery(e, complete=True)

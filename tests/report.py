"""`make reliability-report`: a pytest plugin (`-p tests.report`) that prints what the reliability and
security suites tried and what held, as a table, and as its very last line

    kills=<n> expected=<n> delivered=<n> duplicated=<n> lost=<n> faults=<passed>/<tried> fuzz_inputs=<n>
    secret_leaks=<n> nights=<n> mismatches=<n> sftp_kills=<n> sftp_faults=<passed>/<tried>
    attacks=<passed>/<tried>   (one line)

Tests record their figures through the `report` fixture (tests/support/ledger.py); this plugin adds
each test's outcome, sums the figures, and writes everything to test-artifacts/reliability-report.json.
A figure is what was measured in this run: a test that did not run contributes nothing.

`nights` and `mismatches` come from a model test that plays a month of bookkeeping: after each night's
sync it calls `report.record_night(mismatches)` (the `report` fixture, `ledger.Report.record_night`) with
how many records Green Check holds unlike the projection (`faults.audit(held, expected)`: duplicated + lost
+ false). Each call is one night; the table shows the nights tried and those that held (no mismatch).

`sftp_kills` and `sftp_faults` come from the SFTP delivery's crash and fault tests
(tests/reliability/test_sftp_delivery.py): sync runs SIGKILLed mid-delivery, and the server faults a run must
name and survive (rows of kind "sftp-fault").

`attacks` counts the attacks of issue 17's review that a test plays through the public entry points (rows of kind
"attack": a rewritten realm, a squatted Secret, a cross-site Connect press, racing gateways, a forged status, a
gateway creating a Secret, verbose logs, an echoed client secret, a lost rotation, revoke racing a refresh):
passed when the test that tried it passed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # `pytest -p tests.report` from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support import ledger
from tests.support.paths import ROOT

_OUTCOMES: dict[str, str] = {}


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Outcome per test: failed if any phase failed, skipped if skipped, passed if its call passed."""
    current = _OUTCOMES.get(report.nodeid)
    if report.failed and report.when == "teardown" and current not in (None, "passed"):
        return  # a session-level finalizer failing in the last test's teardown is not that test's result
    if report.failed:
        _OUTCOMES[report.nodeid] = "failed" if report.when == "call" else "error"
    elif report.skipped and current is None:
        _OUTCOMES[report.nodeid] = "xfailed" if hasattr(report, "wasxfail") else "skipped"
    elif report.when == "call" and report.passed and current is None:
        _OUTCOMES[report.nodeid] = "passed"


def summary() -> dict[str, Any]:
    rows = ledger.ROWS
    for row in rows:
        row.outcome = _OUTCOMES.get(row.nodeid, "not run")
    totals = {name: sum(row.figures.get(name, 0) for row in rows) for name in ledger.TOTALS}
    faults = [row for row in rows if row.kind == "fault"]
    passed = sum(1 for row in faults if row.outcome == "passed")
    sftp_faults = [row for row in rows if row.kind == "sftp-fault"]
    sftp_passed = sum(1 for row in sftp_faults if row.outcome == "passed")
    attacks = [row for row in rows if row.kind == "attack"]
    attacks_passed = sum(1 for row in attacks if row.outcome == "passed")
    leaks = len(ledger.SECRETS.hits) if ledger.SECRETS.scanned else 0
    line = (
        f"kills={totals['kills']} expected={totals['expected']} delivered={totals['delivered']} "
        f"duplicated={totals['duplicated']} lost={totals['lost']} faults={passed}/{len(faults)} "
        f"fuzz_inputs={totals['fuzz_inputs']} secret_leaks={leaks} nights={totals['nights']} "
        f"mismatches={totals['mismatches']} sftp_kills={totals['sftp_kills']} "
        f"sftp_faults={sftp_passed}/{len(sftp_faults)} attacks={attacks_passed}/{len(attacks)}"
    )
    return {"totals": totals, "faults": {"passed": passed, "tried": len(faults)}, "secret_leaks": leaks, "line": line}


_RANK = {"failed": 0, "error": 1, "not run": 2, "running": 2, "xfailed": 3, "skipped": 3, "passed": 4}


def _merged(rows: list[ledger.Row]) -> list[tuple[str, str, str, str, str]]:
    """Rows of one (area, check) from several tests (parametrized cases) as one line: counts added up,
    the worst outcome shown (e.g. "22 passed", or "1 failed of 22")."""
    groups: dict[tuple[str, str], list[ledger.Row]] = {}
    for row in rows:
        groups.setdefault((row.area, row.check), []).append(row)
    out = []
    for (area, check), group in sorted(groups.items()):

        def total(values: list[str]) -> str:
            return str(sum(int(v) for v in values)) if all(v.isdigit() for v in values) else "; ".join(values)

        tried, held = total([r.tried for r in group]), total([r.held for r in group])
        outcomes = [r.outcome for r in group]
        worst = min(outcomes, key=lambda o: _RANK.get(o, 0))
        if len(group) == 1:
            result = worst
        elif worst == "passed":
            result = f"{len(group)} passed"
        else:
            result = f"{outcomes.count(worst)} {worst} of {len(group)}"
        out.append((area, check, tried, held, result))
    return out


def _table(rows: list[ledger.Row]) -> list[str]:
    head = ("area", "what was tried", "tried", "held", "result")
    cells = _merged(rows)
    widths = [min(70, max([len(h), *(len(c[i]) for c in cells)])) for i, h in enumerate(head)]

    def fmt(values: tuple[str, ...]) -> str:
        return "  ".join(
            (v if len(v) <= w else v[: w - 1] + "…").ljust(w) for v, w in zip(values, widths, strict=True)
        ).rstrip()

    return [fmt(head), fmt(tuple("-" * w for w in widths)), *(fmt(c) for c in cells)]


def pytest_unconfigure(config: pytest.Config) -> None:
    """Runs after everything else has printed, so the figures line is the last line of the output."""
    out = summary()
    ledger.write_report_file({"summary": out, "outcomes": _OUTCOMES})
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    write = reporter.write_line if reporter is not None else print
    write("")
    write("reliability and security report (what was tried, what held)")
    for line in _table(ledger.ROWS):
        write(line)
    if ledger.SECRETS.scanned:
        write(
            f"secret hygiene: {len(ledger.SECRETS.values)} secret values searched for in "
            f"{len(ledger.SECRETS.sources())} captured logs, Events, statuses, metrics and exception texts"
        )
        for hit in ledger.SECRETS.hits:
            write(f"  LEAK: {hit.label} found in {hit.source}")
    write(f"report written to {ledger.REPORT_FILE.relative_to(ROOT)}")
    write(out["line"])

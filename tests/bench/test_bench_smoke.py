"""The bench machinery at tiny sizes: every suite runs end to end as in `make bench`, results.json has the
agreed shape, and the count-based ratios are computed from the counts. No time is asserted anywhere."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bench.gateway_fleet import NAMESPACE as FLEET_NAMESPACE
from bench.gateway_fleet import coalescing_bound, count_writes, spread_indices
from bench.nights_bench import changed_indices
from bench.operator_bench import spread, start_minute
from bench.sync_bench import throttle_floor_seconds, throttle_suite
from bench.sync_census import expected_record_ids, qbo_lower_bound

from bench import RESULT_KEYS, Measure, Target, ratio, table
from tests.support.paths import ROOT

Run = tuple[subprocess.CompletedProcess[str], dict[str, dict[str, Any]]]

# Measures whose value and baseline are counts (requests, records, writes, integrations): their ratio must be
# exactly value / baseline, whatever the machine.
COUNT_MEASURES = (
    "sync.40.qbo_requests_per_1000_payments",
    "sync.40.qbo_requests_vs_naive",
    "sync.40.greencheck_requests_per_1000_records",
    "sync.40.records_delivered",
    "sync.quiet.qbo_requests",
    "throttle.40.requests",
    "operator.3.settled",
    "operator.3.writes_per_integration",
    "schedule.120.busiest_minute",
    "operator.3.cronjob_busiest_minute",
    "gateway.webhooks_accepted",
    "gateway.20.webhooks_recorded",
    "nights.20.changed_qbo_requests",
    "nights.20.skipped",
    "nights.20.read",
)


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Run:
    if not Path("/usr/bin/wrk").exists() or shutil.which("taskset") is None:
        pytest.skip("the gateway measure needs wrk and taskset (`make system-packages`)")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the gateway measure needs two CPUs")
    out = tmp_path_factory.mktemp("bench") / "results.json"
    argv = [
        sys.executable, "-m", "bench", "--quick", "--output", str(out),
        "--sync-sizes", "40", "--integrations", "3", "--idle-seconds", "2", "--spread-names", "120",
        "--load-seconds", "1", "--throttled", "40", "--nights", "20", "--gateway-integrations", "20",
    ]  # fmt: skip
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    assert out.exists(), proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_the_run_exits_zero_and_prints_the_table(results: Run) -> None:
    proc, data = results
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "measure" in proc.stdout and "baseline" in proc.stdout and "ratio" in proc.stdout
    for entry in data.values():
        assert entry["label"] in proc.stdout


def test_every_measure_has_the_agreed_shape(results: Run) -> None:
    _, data = results
    assert data, "no measures written"
    for name, entry in data.items():
        assert set(RESULT_KEYS) <= set(entry), name
        assert entry["met"] in (True, False, None), name
        assert entry["target"] is None or isinstance(entry["target"], str), name
        for key in ("value", "baseline", "ratio"):
            assert entry[key] is None or isinstance(entry[key], int | float), (name, key)
        if entry["target"] is not None and entry["value"] is not None:
            assert isinstance(entry["met"], bool), name


def test_count_ratios_are_value_over_baseline(results: Run) -> None:
    _, data = results
    for name in COUNT_MEASURES:
        entry = data[name]
        assert isinstance(entry["value"], int | float) and isinstance(entry["baseline"], int | float), name
        assert entry["baseline"] > 0, name
        assert entry["ratio"] == pytest.approx(entry["value"] / entry["baseline"], rel=1e-3, abs=1e-3), name


def test_counts_come_from_the_servers(results: Run) -> None:
    """The naive peer makes more QBO requests than ours, and every record and webhook arrived."""
    _, data = results
    assert data["sync.40.qbo_requests_vs_naive"]["value"] < data["sync.40.qbo_requests_vs_naive"]["baseline"]
    assert data["sync.40.records_delivered"]["met"] is True
    assert data["sync.quiet.greencheck_requests"]["value"] == 0
    assert data["sync.quiet.qbo_requests"]["baseline"] == 1
    assert data["operator.3.settled"]["value"] == 3
    assert data["gateway.webhooks_accepted"]["met"] is True
    assert data["gateway.20.webhooks_recorded"]["met"] is True  # every delivery to 20 integrations is in status


def test_a_night_reads_only_the_companies_with_webhooks(results: Run) -> None:
    """20 companies, 1 with webhooks: the other 19 skip (gate NoWebhooks) at 0 metered calls, the one reads."""
    _, data = results
    assert data["nights.20.unchanged_qbo_requests"]["value"] == 0
    assert data["nights.20.skipped"]["value"] == data["nights.20.skipped"]["baseline"] == 19
    assert data["nights.20.read"]["value"] == data["nights.20.read"]["baseline"] == 1
    changed = data["nights.20.changed_qbo_requests"]
    assert changed["value"] >= changed["baseline"] >= 1  # the floor is a floor: 1 CDC call at least
    month = data["nights.20.monthly_projection"]
    assert month["value"] == changed["value"] * 30 and month["met"] is True


def test_five_percent_of_the_companies_change_spread_over_the_fleet() -> None:
    assert len(changed_indices(10_000)) == 500
    assert len(changed_indices(200)) == 10
    assert changed_indices(20) == {0}
    assert max(changed_indices(10_000)) < 10_000


def test_the_throttled_run_compares_added_time_with_the_forced_time(results: Run) -> None:
    """`--throttled 40`: the forced time is computed from the throttled run's admitted requests; at 40 payments
    the throttle forces nothing (a handful of requests fit in one second), so there is no ratio to judge."""
    _, data = results
    added, requests = data["throttle.40.added_seconds_vs_forced"], data["throttle.40.requests"]
    throttled = data["throttle.40.throttled_responses"]["value"]
    assert requests["met"] is True  # the same company, the same requests with and without the throttle
    assert added["baseline"] == throttle_floor_seconds(requests["value"] - throttled)
    assert isinstance(added["value"], float)
    if added["baseline"] == 0:
        assert added["ratio"] is None and added["target"] is None and added["met"] is None
    else:
        assert added["ratio"] == pytest.approx(added["value"] / added["baseline"], rel=1e-3, abs=1e-3)
        assert isinstance(added["met"], bool)


def test_quick_mode_prints_the_throttle_rows_as_skipped() -> None:
    rows = throttle_suite(None, None)
    assert [m.name for m in rows] == [
        "throttle.100000.added_seconds_vs_forced",
        "throttle.100000.requests",
        "throttle.100000.throttled_responses",
    ]
    for m in rows:
        assert m.value is None and m.met is None and m.to_json()["note"] == "skipped (quick)"


# --- the pure parts -----------------------------------------------------------------------------------


def test_the_gateway_fleet_spreads_deliveries_over_distinct_realms() -> None:
    assert spread_indices(10_000) == [i * 5 for i in range(2_000)]
    assert spread_indices(200) == list(range(200))
    assert coalescing_bound(2_000, 12.0, 5.0) == 6_000  # written in at most 3 flush intervals each
    assert coalescing_bound(0, 0.0, 5.0) == 0


def _audit(name: str, at: str, code: int, verb: str = "patch", user: str = "gw") -> bytes:
    ref = {"resource": "quickbooksintegrations", "namespace": FLEET_NAMESPACE, "name": name}
    if verb == "patch":
        ref["subresource"] = "status"
    event = {"stage": "ResponseComplete", "user": {"username": user}, "verb": verb, "objectRef": ref,
             "responseStatus": {"code": code}, "requestReceivedTimestamp": at}  # fmt: skip
    return json.dumps(event).encode() + b"\n"


def _lease(at: str) -> bytes:
    ref = {"resource": "leases", "namespace": "qbo-system", "name": "qbo-webhooks-production"}
    event = {"stage": "ResponseComplete", "user": {"username": "gw"}, "verb": "update", "objectRef": ref,
             "responseStatus": {"code": 200}, "requestReceivedTimestamp": at}  # fmt: skip
    return json.dumps(event).encode() + b"\n"


def test_the_gateway_fleet_counts_status_writes_per_integration() -> None:
    lines = [
        _audit("a", "2026-01-01T00:00:00.100000Z", 200),
        _audit("b", "2026-01-01T00:00:00.200000Z", 409),
        _audit("b", "2026-01-01T00:00:00.250000Z", 200, verb="get"),
        _audit("b", "2026-01-01T00:00:00.300000Z", 200),
        _audit("a", "2026-01-01T00:00:05.600000Z", 200),
        _audit("a", "2026-01-01T00:00:09.000000Z", 200, user="someone-else"),
        _lease("2026-01-01T00:00:01.000000Z"),
        _lease("2026-01-01T00:00:31.500000Z"),
        b"not json\n",
    ]
    w = count_writes(lines, "gw")
    assert (w.ok, w.conflicts, w.reads, w.objects, w.most) == (3, 1, 1, 2, 2)
    assert w.min_gap == pytest.approx(5.5) and w.span == pytest.approx(5.5)
    assert dict(w.by_writes) == {2: 1, 1: 1}
    assert w.flushes == [(2, pytest.approx(0.2)), (1, 0.0)]  # writes more than 2 s apart are another flush
    assert (w.lease_renewals, w.lease_max_gap) == (2, pytest.approx(30.5))


@pytest.mark.parametrize(
    ("requests", "expected"),
    [(0, 0.0), (1, 0.0), (10, 0.0), (11, 1.0), (500, 49.0), (501, 60.0), (1_000, 99.0), (1_001, 120.0)],
)
def test_throttle_floor(requests: int, expected: float) -> None:
    assert throttle_floor_seconds(requests) == expected


@pytest.mark.parametrize(
    ("payment_objects", "changed_invoices", "invoice_reads", "payment_reads", "methods", "expected"),
    [
        (0, 0, 0, 0, False, 1),  # a quiet night: one CDC call
        (40, 40, 0, 0, True, 2),  # CDC holds it all, the method names once
        (300, 200, 1_500, 0, False, 1 + 2),  # one CDC answer + ⌈1500/1000⌉ invoice reads
        (998, 1, 0, 0, False, 1),  # 999 objects: the answer is short, so it was the last
        (999, 1, 0, 0, False, 2),  # a full answer needs one more to prove it is the last (issue #20)
        (1_000, 1_005, 0, 29, True, 3 + 1 + 1),  # the deletes come with the changes; + L reads + methods
        (10_000, 9_000, 20, 0, False, 20 + 1),
        (100_000, 0, 0, 0, False, 101),
    ],
)
def test_qbo_lower_bound(
    payment_objects: int, changed_invoices: int, invoice_reads: int, payment_reads: int, methods: bool, expected: int
) -> None:
    bound = qbo_lower_bound(payment_objects, changed_invoices, invoice_reads, payment_reads, methods)
    assert bound.requests == expected


def _payment(lines: list[tuple[str, list[tuple[str, str]]]], note: str = "", total: str = "10") -> dict[str, Any]:
    return {
        "TotalAmt": total,
        "PrivateNote": note,
        "Line": [{"Amount": a, "LinkedTxn": [{"TxnId": i, "TxnType": t} for i, t in links]} for a, links in lines],
    }


@pytest.mark.parametrize(
    ("payment", "invoices", "expected"),
    [
        (_payment([("10", [("1", "Invoice")])]), {"1"}, ["1"]),
        (_payment([("6", [("1", "Invoice")]), ("4", [("2", "Invoice")])]), {"1", "2"}, ["1", "2"]),
        (_payment([("6", [("1", "Invoice")]), ("4", [("2", "Invoice")])]), {"2"}, ["2"]),  # invoice 1 deleted
        (_payment([("10", [("1", "Invoice")])], note="Voided", total="0"), {"1"}, []),
        (_payment([("10", [("1", "Invoice")]), ("10", [("7", "CreditMemo")])], total="0"), {"1"}, []),  # credit only
        (_payment([("10", [("1", "Invoice")]), ("4", [("7", "CreditMemo")])]), {"1"}, ["1"]),  # 6 cash, 4 credit
        (_payment([("5", [("1", "Invoice")]), ("5", [("2", "Invoice")]), ("5", [("7", "CreditMemo")])]),
         {"1", "2"}, ["1", "2"]),  # the credit takes invoice 1 whole: a 0-cash record still goes with the set
        (_payment([]), set(), []),
    ],
)  # fmt: skip
def test_expected_records_money_is_cash(payment: dict[str, Any], invoices: set[str], expected: list[str]) -> None:
    assert expected_record_ids(payment, {i: {} for i in invoices}) == expected


@pytest.mark.parametrize(
    ("target", "value", "rat", "met"),
    [
        (Target("ratio", "<=", 1.1), 11, 1.1, True),
        (Target("ratio", "<=", 1.1), 12, 1.2, False),
        (Target("ratio", ">=", 0.4), 40, 0.4, True),
        (Target("ratio", ">=", 0.4), 39, 0.39, False),
        (Target("value", "==", 0), 0, None, True),
        (Target("value", "==", 0), 3, None, False),
        (Target("ratio", "<=", 1.5), 10, None, None),
        (Target("ratio", "<=", 1.5), 10, math.nan, None),
    ],
)
def test_targets(target: Target, value: float, rat: float | None, met: bool | None) -> None:
    assert target.met(value, rat) is met


def test_measure_computes_ratio_and_met() -> None:
    m = Measure("x", "x", 21, 19, target=Target("ratio", "<=", 1.1))
    assert m.ratio == pytest.approx(21 / 19)
    assert m.met is False
    assert ratio(5, 0) is None and ratio(None, 3) is None
    assert set(RESULT_KEYS) <= set(m.to_json())


def test_skipped_rows_print_their_reason() -> None:
    rows = [Measure("a", "first row", 1.0, 2.0), Measure("b", "second row", None, skipped="skipped (quick)")]
    text = table(rows)
    assert "skipped (quick)" in text and "first row" in text and "0.5" in text


@pytest.mark.parametrize(
    ("expanded", "minute"),
    [("7 2 * * *", (2, 7)), ("59 23 * * *", (23, 59)), ("*/5 2 * * *", None), ("@daily", None)],
)
def test_start_minute(expanded: str, minute: tuple[int, int] | None) -> None:
    assert start_minute(expanded) == minute


def test_spread_counts_the_busiest_minute() -> None:
    s = spread(["1 2 * * *", "1 2 * * *", "3 2 * * *", "@daily"], "H 2 * * *")
    assert (s.integrations, s.slots, s.busiest, s.unparsed) == (4, 60, 2, 1)
    assert s.even_share == pytest.approx(4 / 60)


def test_a_crashed_measurement_exits_non_zero_and_the_rest_still_reports(tmp_path: Path) -> None:
    """No control plane binaries: the sync measurement cannot run, the pure schedule measure still does."""
    out = tmp_path / "results.json"
    env = {**os.environ, "KUBEBUILDER_ASSETS": str(tmp_path / "no-binaries-here")}
    argv = [sys.executable, "-m", "bench", "--only", "sync", "--only", "schedule", "--sync-sizes", "10",
            "--spread-names", "60", "--output", str(out)]  # fmt: skip
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "measurements that crashed: sync" in proc.stderr
    data = json.loads(out.read_text())
    assert data["sync.crashed"]["value"] is None and data["sync.crashed"]["note"].startswith("CRASHED")
    assert isinstance(data["schedule.60.busiest_minute"]["met"], bool)
    assert "CRASHED" in proc.stdout

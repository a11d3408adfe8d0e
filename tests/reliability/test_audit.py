"""The delivery audit every reliability test judges Green Check by (`faults.audit`), and the report's night hook:
re-sends and a record retracted then created again are not duplicates; lost and false are read from the
current records against the projection. Pure, so it runs without the control plane."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support import ledger
from tests.support.faults import PAYMENT_SIDE, audit, payments_projection

REALM = "9130"


def eid(payment: str, invoice: str) -> str:
    return f"qbo:{REALM}:payment:{payment}:invoice:{invoice}"


def want(payment: str, invoice: str, amount: int, credit: int = 0) -> dict[str, Any]:
    return {"payment": payment, "invoice": invoice, "amount": amount, "credit": credit, "doc_number": "1001",
            "total": 5000, "balance": 0}  # fmt: skip


def held(payment: str, invoice: str, amount: int, credit: int = 0, *, number: str = "1001") -> dict[str, Any]:
    return {
        "external_id": eid(payment, invoice),
        "payment": {"id": payment, "amount": amount, "credit_applied": credit},
        "invoice": {"id": invoice, "number": number, "total": 5000, "open_balance": 0},
    }


def by_id(*records: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["external_id"]: r for r in records}


EXPECTED = {eid("1", "10"): want("1", "10", 3000), eid("2", "20"): want("2", "20", 1500, credit=500)}
EXACT = by_id(held("1", "10", 3000), held("2", "20", 1500, 500))
ALIAS = {**held("1", "10", 3000), "external_id": "qbo:9130:payment:1:invoice:10:copy"}

CASES = [
    # id, what Green Check holds, (duplicated, lost, invented, wrong)
    ("exact (re-sends and re-creations leave one current record)", EXACT, (0, (), (), ())),
    ("nothing held", {}, (0, tuple(sorted(EXPECTED)), (), ())),
    ("one lost", by_id(held("2", "20", 1500, 500)), (0, (eid("1", "10"),), (), ())),
    ("one invented", {**EXACT, **by_id(held("3", "30", 100))}, (0, (), (eid("3", "30"),), ())),
    ("amount differs", by_id(held("1", "10", 3100), held("2", "20", 1500, 500)), (0, (), (), (eid("1", "10"),))),
    ("credit counted as cash", by_id(held("1", "10", 3000), held("2", "20", 2000)), (0, (), (), (eid("2", "20"),))),
    ("invoice field differs", {**EXACT, **by_id(held("1", "10", 3000, number="9"))}, (0, (), (), (eid("1", "10"),))),
    ("one pair held twice", {**EXACT, ALIAS["external_id"]: ALIAS}, (1, (), (ALIAS["external_id"],), ())),
]


@pytest.mark.parametrize(("records", "figures"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_audit(records: dict[str, dict[str, Any]], figures: tuple[Any, ...]) -> None:
    a = audit(records, EXPECTED)
    assert (a.duplicated, a.lost, a.invented, a.wrong) == figures
    assert a.mismatches == figures[0] + len(figures[1]) + len(figures[2]) + len(figures[3])
    assert a.delivered == len(set(records) & set(EXPECTED))


def test_payment_side_ignores_invoice_fields_it_cannot_know() -> None:
    records = {**EXACT, **by_id(held("1", "10", 3000, number="9"))}
    assert audit(records, EXPECTED, PAYMENT_SIDE).mismatches == 0
    assert audit(by_id(held("1", "10", 1), held("2", "20", 1500, 500)), EXPECTED, PAYMENT_SIDE).wrong == (
        eid("1", "10"),
    )


def _payment(pid: str, lines: list[tuple[str, str, str]], created: str = "2026-03-02T10:00:00-08:00") -> dict[str, Any]:
    """A raw Intuit payment: lines of (amount, TxnType, TxnId)."""
    return {
        "Id": pid,
        "TotalAmt": "0",
        "MetaData": {"CreateTime": created, "LastUpdatedTime": created},
        "Line": [{"Amount": a, "LinkedTxn": [{"TxnType": t, "TxnId": i}]} for a, t, i in lines],
    }


def test_payments_projection_is_cash_with_credits_apart() -> None:
    payments = [
        _payment("1", [("50.00", "Invoice", "10"), ("20.00", "CreditMemo", "7")]),
        _payment("2", [("20.00", "Invoice", "20"), ("20.00", "CreditMemo", "8")]),  # credit only: nothing
        _payment("3", [("5.00", "Invoice", "30")], created="2026-02-01T10:00:00-08:00"),  # before connectedAt
    ]
    got = payments_projection(REALM, payments, datetime(2026, 3, 1, tzinfo=UTC))
    assert {k: (v["amount"], v["credit"]) for k, v in got.items()} == {eid("1", "10"): (3000, 2000)}


def test_record_night_adds_to_the_totals(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ledger, "ROWS", [])
    report = ledger.Report("tests/x.py::test_month")
    for mismatches in (0, 2, 0):
        report.record_night(mismatches)
    assert {n: sum(r.figures.get(n, 0) for r in ledger.ROWS) for n in ("nights", "mismatches")} == {
        "nights": 3,
        "mismatches": 2,
    }
    assert [r.held for r in ledger.ROWS] == ["1", "0", "1"]
    assert {"nights", "mismatches"} <= set(ledger.TOTALS)

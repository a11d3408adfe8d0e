"""The demo's own projection of QuickBooks' books: what Green Check must hold, and the comparison."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from qbo_operator.harness.demo_books import compare, created, expected_cash, invoices_only, payment_cash
from qbo_operator.harness.demo_sftp import HEADER, LOCATION, check
from tests.support.sync import expected_records, make_qbo

REALM = "9130"
CONNECTED = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
AFTER = "2026-03-02T05:00:00-08:00"  # 13:00Z
BEFORE = "2026-03-02T03:59:59-08:00"  # 11:59:59Z


def line(amount: str, *links: tuple[str, str]) -> dict[str, Any]:
    return {"Amount": float(amount), "LinkedTxn": [{"TxnType": kind, "TxnId": txn} for kind, txn in links]}


def payment(pid: str, total: str, *lines: dict[str, Any], at: str = AFTER, note: str | None = None) -> dict[str, Any]:
    pay: dict[str, Any] = {"Id": pid, "TotalAmt": float(total), "Line": list(lines), "MetaData": {"CreateTime": at}}
    if note is not None:
        pay["PrivateNote"] = note
    return pay


def ext(pid: str, invoice: str) -> str:
    return f"qbo:{REALM}:payment:{pid}:invoice:{invoice}"


@pytest.mark.parametrize(
    ("pay", "cash"),
    [
        (payment("1", "100", line("100", ("Invoice", "10"))), {"10": 10000}),
        (payment("1", "150", line("100", ("Invoice", "10")), line("50", ("Invoice", "11"))), {"10": 10000, "11": 5000}),
        # the credit is taken by the invoices in line order, each as much as it owes; the rest is cash
        (
            payment(
                "1", "70", line("60", ("Invoice", "10")), line("40", ("Invoice", "11")), line("30", ("CreditMemo", "7"))
            ),
            {"10": 3000, "11": 4000},
        ),
        (
            payment(
                "1", "10", line("20", ("Invoice", "10")), line("25", ("Invoice", "11")), line("35", ("Deposit", "8"))
            ),
            {"10": 0, "11": 1000},
        ),
        # auto-applied credit: a $0 payment linking an invoice and a credit settles no cash at all
        (payment("1", "0", line("40", ("Invoice", "10")), line("40", ("JournalEntry", "9"))), {}),
        # two lines on one invoice add up
        (payment("1", "30", line("10.10", ("Invoice", "10")), line("19.90", ("Invoice", "10"))), {"10": 3000}),
        (payment("1", "250"), {}),  # unapplied: no invoice
    ],
)
def test_payment_cash(pay: dict[str, Any], cash: dict[str, int]) -> None:
    assert payment_cash(pay) == cash


@pytest.mark.parametrize(
    ("payments", "expected"),
    [
        ([payment("1", "100", line("100", ("Invoice", "10")))], {ext("1", "10"): 10000}),
        ([payment("1", "100", line("100", ("Invoice", "10")), at=BEFORE)], {}),
        ([payment("1", "0", note="Voided")], {}),
        ([payment("1", "0", note="Voided paid by cheque")], {}),
        # a note that merely starts with "Voided" on a live payment is still a payment
        ([payment("1", "5", line("5", ("Invoice", "10")), note="Voided cheque replaced")], {ext("1", "10"): 500}),
        (
            [
                payment(
                    "1",
                    "10",
                    line("20", ("Invoice", "10")),
                    line("25", ("Invoice", "11")),
                    line("35", ("Deposit", "8")),
                ),
                payment("2", "0", line("5", ("Invoice", "12")), line("5", ("CreditMemo", "3"))),
            ],
            {ext("1", "10"): 0, ext("1", "11"): 1000},
        ),
    ],
)
def test_expected_cash(payments: list[dict[str, Any]], expected: dict[str, int]) -> None:
    assert expected_cash(REALM, payments, CONNECTED) == expected


@pytest.mark.parametrize(
    ("pay", "only"),
    [
        (payment("1", "100", line("100", ("Invoice", "10"))), True),
        (payment("1", "0", line("40", ("Invoice", "10")), line("40", ("CreditMemo", "9"))), False),
        (payment("1", "250"), True),
    ],
)
def test_invoices_only(pay: dict[str, Any], only: bool) -> None:
    assert invoices_only(pay) is only


@pytest.mark.parametrize(
    ("held", "line_", "exact"),
    [
        ([("a", 1), ("b", 2)], "expected=2 delivered=2 missing=0 unexpected=0 duplicated=0 misstated=0", True),
        ([("a", 1)], "expected=2 delivered=1 missing=1 unexpected=0 duplicated=0 misstated=0", False),
        (
            [("a", 1), ("b", 2), ("c", 3)],
            "expected=2 delivered=3 missing=0 unexpected=1 duplicated=0 misstated=0",
            False,
        ),
        (
            [("a", 1), ("b", 2), ("b", 2)],
            "expected=2 delivered=3 missing=0 unexpected=0 duplicated=1 misstated=0",
            False,
        ),
        ([("a", 1), ("b", 9)], "expected=2 delivered=2 missing=0 unexpected=0 duplicated=0 misstated=1", False),
    ],
)
def test_compare(held: list[tuple[str, int]], line_: str, exact: bool) -> None:
    result = compare({"a": 1, "b": 2}, held)
    assert result.line() == line_ and result.exact is exact


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_demo_projection_agrees_with_the_tests_projection_over_a_bookkeepers_days(seed: int) -> None:
    """The same rule written twice (the product may not import tests): over random books they must agree."""
    sb = make_qbo()
    realm = sb.add_company("Agreement", seed=seed, payments=30, history_days=10)
    new = sb.generate_payments(realm, 40, seed)
    connected_at = created(new[20])  # half of today's payments came before the connection
    for day in range(3):
        sb.bookkeep(realm, seed * 10 + day, 40)
        # the rows as the control API sends them: JSON, amounts as numbers
        payments = json.loads(json.dumps(sb.company(realm).tables["Payment"].ordered(), default=float))
        theirs = {k: v["amount"] for k, v in expected_records(sb, realm, connected_at).items()}
        assert expected_cash(realm, payments, connected_at) == theirs
        assert theirs and any(created(p) < connected_at for p in payments)


# --- the SFTP company: files read as a receiver would, against the books ------------------------


def sftp_books() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    pay = payment("7", "100", line("100", ("Invoice", "10")))
    pay.update(TxnDate="2026-03-02", CustomerRef={"value": "3", "name": "Klamath Remedies"})
    invoice = {"Id": "10", "DocNumber": "1042", "TxnDate": "2026-02-27", "TotalAmt": 250.0, "Balance": 150.0}
    return [pay], [invoice]


def sftp_row(**over: str) -> dict[str, str]:
    row = dict.fromkeys(HEADER, "")
    row.update({"Date": "2026-02-27", "Invoice Number": "1042", "Customer": "Klamath Remedies",
                "Invoice Total": "250.00", "Payment Date": "2026-03-02", "Payment ID": "7", "Payment Amount": "100.00",
                "Open Balance": "150.00", "location_id": LOCATION})  # fmt: skip
    row.update(over)
    return row


RETRACTION = {"Payment Amount": "0.00", "Memo/Description": "Retracted: voided"}


@pytest.mark.parametrize(
    ("rows", "counts"),  # counts: delivered, missing, unexpected, duplicated, misstated (1 expected)
    [
        ([sftp_row()], (1, 0, 0, 0, 0)),
        ([sftp_row(), sftp_row()], (1, 0, 0, 1, 0)),  # the same row twice: a repeat
        ([sftp_row(**{"Payment Amount": "90.00"}), sftp_row()], (1, 0, 0, 0, 0)),  # corrected by a later row
        ([sftp_row(), sftp_row(**RETRACTION)], (0, 1, 0, 0, 0)),  # retracted although the books still hold it
        ([sftp_row(Date="2026-02-28")], (1, 0, 0, 0, 1)),
        ([sftp_row(location_id="elsewhere")], (1, 0, 0, 0, 1)),
        ([sftp_row(Customer="")], (1, 0, 0, 0, 1)),
        ([sftp_row(**{"Open Balance": "0.00"})], (1, 0, 0, 0, 1)),
        ([sftp_row(**{"Invoice Number": "9"})], (1, 1, 1, 0, 0)),
    ],
)
def test_the_sftp_files_are_checked_row_by_row_against_the_books(
    rows: list[dict[str, str]], counts: tuple[int, ...]
) -> None:
    payments, invoices = sftp_books()
    r, _ = check(rows, REALM, payments, invoices, CONNECTED)
    assert (r.expected, r.delivered, len(r.missing), len(r.unexpected), r.duplicated, len(r.misstated)) == (1, *counts)

"""The books check: a consistent company passes, and each kind of corruption is named."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_books import check_books
from tests.support.sandbox import realm_of


@pytest.mark.parametrize(
    ("corrupt", "fragment"),
    [
        (lambda c: c.invoices[next(iter(c.invoices))].update(Balance=Decimal("-1.00")), "Balance"),
        (lambda c: next(p for p in c.payments.values() if p["Line"]).update(TotalAmt=Decimal("1.23")), "TotalAmt"),
        (lambda c: next(iter(c.customers.values())).update(Balance=Decimal("0.01")), "customer"),
        (
            lambda c: next(iter(c.invoices.values()))["LinkedTxn"].append({"TxnId": "0", "TxnType": "Payment"}),
            "LinkedTxn",
        ),
        (lambda c: next(iter(c.payments.values())).update(UnappliedAmt=Decimal("0.001")), "two places"),
    ],
)
def test_check_books_notices_corruption(sandbox: QboSandbox, corrupt: Any, fragment: str) -> None:
    company = sandbox.companies[realm_of(sandbox)]
    assert check_books(company) == []
    corrupt(company)
    assert any(fragment in problem for problem in check_books(company))

"""A Green Check sandbox on 127.0.0.1 per test, and records to send it."""

from __future__ import annotations

import pytest

from qbo_operator.harness.sandbox.greencheck import GreenCheckSandbox
from qbo_operator.sync.records import LineItem, Record, RecordCustomer, RecordInvoice, RecordPayment

CLIENT_ID = "gc-client"
CLIENT_SECRET = "gc-secret-4f1b2c9d8e7a6b5c"
SP_ID = "sp-7d1e"
CRB = "5f0c3a2e-8d1b-4c7e-9a61-2b7f3c9d4e10"
REALM = "9130355357483456"


def make_record(n: int, realm: str = REALM, **invoice_over: object) -> Record:
    inv = {"id": str(1000 + n), "number": str(5000 + n), "date": "2026-11-01", "total": 10_000 + n,
           "open_balance": 0, "memo": None, **invoice_over}  # fmt: skip
    return Record(
        external_id=f"qbo:{realm}:payment:{n}:invoice:{1000 + n}",
        payment=RecordPayment(
            id=str(n),
            date=f"2026-11-{1 + n % 28:02d}",
            amount=10_000 + n,
            total_amount=10_000 + n,
            type="check",
            reference=f"R{n}",
            created_at="2026-11-24T17:03:11-08:00",
        ),
        invoice=RecordInvoice.model_validate(inv),
        customer=RecordCustomer(id="24", name="Sonnenschein Family Store"),
        currency="USD",
        line_items=[
            LineItem(product_id="5", product_name="Rock Fountain", quantity="2.5", unit_price=4000, amount=10_000)
        ],
    )


@pytest.fixture
def sandbox() -> GreenCheckSandbox:
    return GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID)

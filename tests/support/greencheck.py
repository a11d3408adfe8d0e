"""Green Check records for the client and sandbox tests, and the smallest valid record for the properties
and the fuzz targets."""

from __future__ import annotations

from qbo_operator.core.models import OPTIONAL_TOKEN_KEYS, TOKEN_KEYS
from qbo_operator.sync.records import (
    LineItem,
    PaymentSet,
    Record,
    RecordCustomer,
    RecordInvoice,
    RecordPayment,
)
from tests.support.objects import COMPANY_ID

CLIENT_ID = "gc-client"
CLIENT_SECRET = "gc-secret-4f1b2c9d8e7a6b5c"
SP_ID = "sp-7d1e"
CRB = COMPANY_ID
REALM = "9130355357483456"
# Every key a token Secret may hold, required ones first.
ALL_TOKEN_KEYS: tuple[str, ...] = TOKEN_KEYS + OPTIONAL_TOKEN_KEYS


def make_record(n: int, realm: str = REALM, **invoice_over: object) -> Record:
    """A full record of payment `n` applied to invoice `1000 + n` alone, every field filled as a real
    payment's would be."""
    return _record(n, realm, str(n), invoice_over)


def _record(n: int, realm: str, pid: str, invoice_over: dict[str, object]) -> Record:
    inv = {"id": str(1000 + n), "number": str(5000 + n), "date": "2026-11-01", "total": 10_000 + n,
           "open_balance": 0, "memo": None, **invoice_over}  # fmt: skip
    return Record(
        external_id=f"qbo:{realm}:payment:{pid}:invoice:{1000 + n}",
        payment=RecordPayment(
            id=pid,
            date=f"2026-11-{1 + n % 28:02d}",
            amount=10_000 + n,
            total_amount=10_000 + n,
            credit_applied=0,
            unapplied_amount=0,
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


def make_set(payment_id: str | int, *invoices: int, realm: str = REALM, **invoice_over: object) -> PaymentSet:
    """Payment `payment_id` applied to invoices `1000 + n` for each n (no n: an empty set, a retraction);
    `total_amount` is the sum of the amounts, as for a payment fully applied in cash."""
    pid = str(payment_id)
    total = sum(10_000 + n for n in invoices)
    records = []
    for n in invoices:
        rec = _record(n, realm, pid, invoice_over)
        records.append(rec.model_copy(update={"payment": rec.payment.model_copy(update={"total_amount": total})}))
    return PaymentSet(payment_id=pid, records=records)


def minimal_record(i: int) -> Record:
    """The smallest valid Green Check record, numbered `i` (its external id is qbo:1:payment:<i>:invoice:1)."""
    return Record.model_validate(
        {
            "external_id": f"qbo:1:payment:{i}:invoice:1",
            "payment": {
                "id": str(i),
                "date": None,
                "amount": 1,
                "total_amount": 1,
                "credit_applied": 0,
                "unapplied_amount": 0,
                "type": "cash",
                "reference": None,
                "created_at": "2026-11-01T00:00:00+00:00",
            },
            "invoice": {"id": "1", "number": "1", "date": None, "total": 1, "open_balance": 0, "memo": None},
            "customer": {"id": None, "name": None},
            "currency": "USD",
            "line_items": [],
        }
    )


def minimal_set(i: int) -> PaymentSet:
    """Payment `i` holding `minimal_record(i)` alone: the smallest valid payment set."""
    return PaymentSet(payment_id=str(i), records=[minimal_record(i)])

"""The Green Check ingestion contract's records (docs/greencheck.md §2), their exact encoding and batching.

A request carries payment sets: every record of one QBO payment, which replaces what Green Check holds for that
payment as a unit (an empty set retracts it). Pure: what is measured is exactly what is sent, so a batch is cut
by the bytes of its body. A request holds ≤ 500 payment sets and ≤ 500 records, and stays under 5 MB;
`Idempotency-Key` = hex sha256 of the exact body bytes."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, model_validator

from qbo_operator.core.config import GREENCHECK_MAX_RECORDS

MAX_ITEMS = GREENCHECK_MAX_RECORDS  # payment sets in one request, and records in one request
MAX_BODY_BYTES = 5_000_000  # "5 MB": stay under both the decimal and the binary reading
PaymentType = Literal["cash", "check", "ach", "debit", "credit", "other", "unknown"]
RecordStatus = Literal["created", "updated", "unchanged", "retracted"]

# ---------------------------------------------------------------------------------------------
# The record (docs/greencheck.md §2). Strict types: money is integer cents, never a float or a string.


class _Gc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordPayment(_Gc):
    """`amount` is the cash applied to this invoice (Σ over a payment's records = TotalAmt − UnappliedAmt);
    credits applied to the same invoice within this payment are `credit_applied`, never counted as cash."""

    id: StrictStr
    date: StrictStr | None
    amount: StrictInt
    total_amount: StrictInt
    credit_applied: StrictInt
    unapplied_amount: StrictInt
    type: PaymentType
    reference: StrictStr | None
    created_at: StrictStr


class RecordInvoice(_Gc):
    id: StrictStr
    number: StrictStr | None
    date: StrictStr | None
    total: StrictInt
    open_balance: StrictInt
    memo: StrictStr | None


class RecordCustomer(_Gc):
    id: StrictStr | None
    name: StrictStr | None


class LineItem(_Gc):
    product_id: StrictStr | None
    product_name: StrictStr | None
    quantity: StrictStr  # a decimal string: QBO quantities can be fractional
    unit_price: StrictInt
    amount: StrictInt


class Record(_Gc):
    external_id: StrictStr
    payment: RecordPayment
    invoice: RecordInvoice
    customer: RecordCustomer
    currency: StrictStr
    line_items: list[LineItem]


class PaymentSet(_Gc):
    """Every current record of one payment: Green Check makes exactly these current for (crb, realm,
    payment_id), retracting the rest; an empty set retracts the payment."""

    payment_id: StrictStr
    records: list[Record]


class IngestRequest(_Gc):
    source: Literal["quickbooks"]
    realm_id: StrictStr
    payments: list[PaymentSet] = Field(max_length=MAX_ITEMS)

    @model_validator(mode="after")
    def _limits(self) -> IngestRequest:
        """A request's limits that span its sets: records in total, and one set per payment (two sets
        for one payment would make the result depend on their order)."""
        total = sum(len(p.records) for p in self.payments)
        if total > MAX_ITEMS:
            raise ValueError(f"at most {MAX_ITEMS} records in one request, got {total}")
        ids = [p.payment_id for p in self.payments]
        if len(set(ids)) != len(ids):
            raise ValueError("a payment_id appears in more than one payment set")
        return self


class ResultError(BaseModel):
    field: str | None = None
    message: str


class RecordResult(BaseModel):
    external_id: str
    status: RecordStatus


class PaymentResult(BaseModel):
    """`applied`: the set is now current (records say what changed); `rejected`: nothing of it changed."""

    payment_id: str
    status: Literal["applied", "rejected"]
    records: list[RecordResult] = Field(default_factory=list)
    errors: list[ResultError] = Field(default_factory=list)


class IngestResponse(BaseModel):
    results: list[PaymentResult]


class TokenReply(BaseModel):
    access_token: str = Field(repr=False)
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a secret
    expires_at: float
    scope: list[str] | str | None = None


@dataclass(frozen=True)
class Batch:
    """Payment sets for one CRB, all from one QBO realm, sent as one request. `encoded`, when the Batcher
    made the batch, holds each set's bytes as measured, so they are not encoded twice."""

    crb_id: str
    realm_id: str
    payments: Sequence[PaymentSet]
    encoded: Sequence[bytes] | None = None

    @property
    def records_count(self) -> int:
        return sum(len(p.records) for p in self.payments)


class Delivery(Protocol):
    """What the run delivers through: the JSON API (`greencheck.GreenCheckClient`) or the documented SFTP
    intake (`sftp.SftpClient`). One result per payment set; a failure for good is a `GreenCheckError`."""

    @property
    def requests(self) -> int: ...

    async def deliver(self, batch: Batch) -> list[PaymentResult]: ...

    async def aclose(self) -> None: ...


# ---------------------------------------------------------------------------------------------
# Encoding and batching (pure)


def encode_payment_set(payment_set: PaymentSet) -> bytes:
    """Compact UTF-8 JSON: what is measured is exactly what is sent."""
    return payment_set.model_dump_json().encode()


def _envelope(realm_id: str) -> tuple[bytes, bytes]:
    head = json.dumps({"source": "quickbooks", "realm_id": realm_id}, separators=(",", ":")).encode()
    return head[:-1] + b',"payments":[', b"]}"


def encode_body(realm_id: str, encoded_sets: Sequence[bytes]) -> bytes:
    head, tail = _envelope(realm_id)
    return head + b",".join(encoded_sets) + tail


def idempotency_key(body: bytes, run_id: str = "") -> str:
    """Hex sha256 of the run's id and the exact body bytes. Within a run a retry of the same body is answered
    from the first answer. A later run's identical body must be applied again, never replayed: a set replaces
    a payment's records, and the payment may have changed in between and back (unapplied, then re-applied)."""
    return hashlib.sha256(run_id.encode() + b"\n" + body if run_id else body).hexdigest()


@dataclass
class Batcher:
    """Cuts a stream of payment sets into batches of ≤ `max_items` sets and ≤ `max_items` records whose
    encoded body is < `max_bytes`.

    `add` returns the full batch the new set did not fit in (the set starts the next one). A payment already in
    the open batch also closes it, so a later set for the same payment replaces the earlier one in order."""

    crb_id: str
    realm_id: str
    max_items: int = MAX_ITEMS
    max_bytes: int = MAX_BODY_BYTES
    _sets: list[PaymentSet] = field(default_factory=list)
    _encoded: list[bytes] = field(default_factory=list)
    _ids: set[str] = field(default_factory=set)
    _records: int = 0
    _size: int = 0

    def __post_init__(self) -> None:
        head, tail = _envelope(self.realm_id)
        self._overhead = len(head) + len(tail)
        self._size = self._overhead

    def add(self, payment_set: PaymentSet) -> Batch | None:
        data = encode_payment_set(payment_set)
        size, count = len(data), len(payment_set.records)
        if count > MAX_ITEMS:  # the contract's limit; a smaller tuned batch size still sends a larger set alone
            raise ValueError(f"payment {payment_set.payment_id} has {count} records, over the {MAX_ITEMS} limit")
        if self._overhead + size >= self.max_bytes:
            raise ValueError(f"payment {payment_set.payment_id} alone encodes to {size} bytes, over the body limit")
        out = None
        extra = size + (1 if self._sets else 0)
        if self._sets and (
            len(self._sets) >= self.max_items
            or self._records + count > self.max_items
            or self._size + extra >= self.max_bytes
            or payment_set.payment_id in self._ids
        ):
            out = self.flush()
            extra = size
        self._sets.append(payment_set)
        self._encoded.append(data)
        self._ids.add(payment_set.payment_id)
        self._records += count
        self._size += extra
        return out

    def flush(self) -> Batch | None:
        if not self._sets:
            return None
        batch = Batch(self.crb_id, self.realm_id, tuple(self._sets), tuple(self._encoded))
        self._sets, self._encoded, self._ids = [], [], set()
        self._records = 0
        self._size = self._overhead
        return batch

    def __len__(self) -> int:
        return len(self._sets)


def batches(
    payment_sets: Sequence[PaymentSet],
    crb_id: str,
    realm_id: str,
    max_items: int = MAX_ITEMS,
    max_bytes: int = MAX_BODY_BYTES,
) -> Iterator[Batch]:
    b = Batcher(crb_id, realm_id, max_items, max_bytes)
    for s in payment_sets:
        if (out := b.add(s)) is not None:
            yield out
    if (out := b.flush()) is not None:
        yield out

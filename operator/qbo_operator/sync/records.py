"""The Green Check ingestion contract's records (docs/greencheck.md §2), their exact encoding and batching.

Pure: what is measured is exactly what is sent, so a batch is cut by the bytes of its body.
Batches hold ≤ 500 records and stay under 5 MB; `Idempotency-Key` = hex sha256 of the sorted external ids."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from qbo_operator.core.config import GREENCHECK_MAX_RECORDS

MAX_RECORDS = GREENCHECK_MAX_RECORDS
MAX_BODY_BYTES = 5_000_000  # "5 MB": stay under both the decimal and the binary reading
PaymentType = Literal["cash", "check", "ach", "debit", "credit", "other", "unknown"]

# ---------------------------------------------------------------------------------------------
# The record (docs/greencheck.md §2). Strict types: money is integer cents, never a float or a string.


class _Gc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordPayment(_Gc):
    id: StrictStr
    date: StrictStr | None
    amount: StrictInt
    total_amount: StrictInt
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


class IngestRequest(_Gc):
    source: Literal["quickbooks"]
    realm_id: StrictStr
    records: list[Record] = Field(max_length=MAX_RECORDS)


class ResultError(BaseModel):
    field: str | None = None
    message: str


class Result(BaseModel):
    external_id: str
    status: Literal["created", "duplicate", "rejected"]
    errors: list[ResultError] = Field(default_factory=list)


class IngestResponse(BaseModel):
    results: list[Result]


class TokenReply(BaseModel):
    access_token: str = Field(repr=False)
    token_type: str = "Bearer"  # noqa: S105 - a token type, not a secret
    expires_at: float
    scope: list[str] | str | None = None


@dataclass(frozen=True)
class Batch:
    """Records for one CRB, all from one QBO realm, sent as one request. `encoded`, when the Batcher
    made the batch, holds each record's bytes as measured, so they are not encoded twice."""

    crb_id: str
    realm_id: str
    records: Sequence[Record]
    encoded: Sequence[bytes] | None = None


# ---------------------------------------------------------------------------------------------
# Encoding and batching (pure)


def encode_record(record: Record) -> bytes:
    """Compact UTF-8 JSON: what is measured is exactly what is sent."""
    return record.model_dump_json().encode()


def _envelope(realm_id: str) -> tuple[bytes, bytes]:
    head = json.dumps({"source": "quickbooks", "realm_id": realm_id}, separators=(",", ":")).encode()
    return head[:-1] + b',"records":[', b"]}"


def encode_body(realm_id: str, encoded_records: Sequence[bytes]) -> bytes:
    head, tail = _envelope(realm_id)
    return head + b",".join(encoded_records) + tail


def idempotency_key(external_ids: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(sorted(external_ids)).encode()).hexdigest()


@dataclass
class Batcher:
    """Cuts a record stream into batches of ≤ `max_records` whose encoded body is < `max_bytes`.

    `add` returns a full batch when the new record does not fit (the record starts the next one)."""

    crb_id: str
    realm_id: str
    max_records: int = MAX_RECORDS
    max_bytes: int = MAX_BODY_BYTES
    _records: list[Record] = field(default_factory=list)
    _encoded: list[bytes] = field(default_factory=list)
    _size: int = 0

    def __post_init__(self) -> None:
        head, tail = _envelope(self.realm_id)
        self._overhead = len(head) + len(tail)
        self._size = self._overhead

    def add(self, record: Record) -> Batch | None:
        data = encode_record(record)
        size = len(data)
        if self._overhead + size >= self.max_bytes:
            raise ValueError(f"record {record.external_id} alone encodes to {size} bytes, over the body limit")
        out = None
        extra = size + (1 if self._records else 0)
        if self._records and (len(self._records) >= self.max_records or self._size + extra >= self.max_bytes):
            out = self.flush()
            extra = size
        self._records.append(record)
        self._encoded.append(data)
        self._size += extra
        return out

    def flush(self) -> Batch | None:
        if not self._records:
            return None
        batch = Batch(self.crb_id, self.realm_id, tuple(self._records), tuple(self._encoded))
        self._records, self._encoded = [], []
        self._size = self._overhead
        return batch

    def __len__(self) -> int:
        return len(self._records)


def batches(
    records: Sequence[Record],
    crb_id: str,
    realm_id: str,
    max_records: int = MAX_RECORDS,
    max_bytes: int = MAX_BODY_BYTES,
) -> Iterator[Batch]:
    b = Batcher(crb_id, realm_id, max_records, max_bytes)
    for r in records:
        if (out := b.add(r)) is not None:
            yield out
    if (out := b.flush()) is not None:
        yield out

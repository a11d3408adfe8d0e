"""QuickBooks Online entities the sync reads (docs/qbo.md §3), and Intuit's fault envelopes.

Only the fields the Green Check contract needs are modelled; pydantic drops everything else
(addresses, e-mails, phone numbers, private notes) at this boundary, so it can never leave QBO.
Money is parsed as `Decimal` (never float) so cents stay exact."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from qbo_operator.core.redaction import redact

# Money and quantities as exact decimals, bounded: an absurd value (1E+10000000) is a data error that
# names the entity, not an arithmetic overflow deep in the mapping.
Money = Annotated[Decimal, Field(max_digits=30, allow_inf_nan=False)]


class _Qbo(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)


class Ref(_Qbo):
    value: str
    name: str | None = None


class MetaData(_Qbo):
    create_time: datetime = Field(alias="CreateTime")
    last_updated_time: datetime | None = Field(default=None, alias="LastUpdatedTime")


class Changing(_Qbo):
    """What every entity the sync reads by change has: an Id, a SyncToken and the two MetaData times."""

    id: str = Field(alias="Id")
    sync_token: str = Field(default="0", alias="SyncToken")
    meta: MetaData = Field(alias="MetaData")

    @property
    def create_time(self) -> datetime:
        return self.meta.create_time

    @property
    def changed_at(self) -> datetime:
        """LastUpdatedTime (QBO always sends it; a row without one changed when it was created)."""
        return self.meta.last_updated_time or self.meta.create_time


class LinkedTxn(_Qbo):
    txn_id: str = Field(alias="TxnId")
    txn_type: str = Field(alias="TxnType")


class PaymentLine(_Qbo):
    amount: Money = Field(default=Decimal(0), alias="Amount")
    linked_txn: list[LinkedTxn] = Field(default_factory=list, alias="LinkedTxn")


class Payment(Changing):
    txn_date: date | None = Field(default=None, alias="TxnDate")
    total_amt: Money = Field(default=Decimal(0), alias="TotalAmt")
    unapplied_amt: Money | None = Field(default=None, alias="UnappliedAmt")
    customer_ref: Ref | None = Field(default=None, alias="CustomerRef")
    currency_ref: Ref | None = Field(default=None, alias="CurrencyRef")
    payment_method_ref: Ref | None = Field(default=None, alias="PaymentMethodRef")
    payment_ref_num: str | None = Field(default=None, alias="PaymentRefNum")
    # Read only to recognise a void ("Voided" is prepended by QBO); never sent anywhere.
    private_note: str | None = Field(default=None, alias="PrivateNote", repr=False)
    txn_status: str | None = Field(default=None, alias="TxnStatus")
    line: list[PaymentLine] = Field(default_factory=list, alias="Line")

    def invoice_ids(self) -> list[str]:
        """Ids of the invoices this payment is applied to, in line order, without repeats."""
        seen: dict[str, None] = {}
        for line in self.line:
            for link in line.linked_txn:
                if link.txn_type == "Invoice":
                    seen.setdefault(link.txn_id, None)
        return list(seen)


class SalesItemLineDetail(_Qbo):
    item_ref: Ref | None = Field(default=None, alias="ItemRef")
    qty: Money | None = Field(default=None, alias="Qty")
    unit_price: Money | None = Field(default=None, alias="UnitPrice")


class GroupLineDetail(_Qbo):
    line: list[InvoiceLine] = Field(default_factory=list, alias="Line")


class InvoiceLine(_Qbo):
    amount: Money | None = Field(default=None, alias="Amount")
    description: str | None = Field(default=None, alias="Description")
    detail_type: str | None = Field(default=None, alias="DetailType")
    sales_item_line_detail: SalesItemLineDetail | None = Field(default=None, alias="SalesItemLineDetail")
    group_line_detail: GroupLineDetail | None = Field(default=None, alias="GroupLineDetail")


class Memo(_Qbo):
    value: str | None = None


class Invoice(Changing):
    doc_number: str | None = Field(default=None, alias="DocNumber")
    txn_date: date | None = Field(default=None, alias="TxnDate")
    total_amt: Money = Field(default=Decimal(0), alias="TotalAmt")
    balance: Money = Field(default=Decimal(0), alias="Balance")
    customer_ref: Ref | None = Field(default=None, alias="CustomerRef")
    currency_ref: Ref | None = Field(default=None, alias="CurrencyRef")
    customer_memo: Memo | None = Field(default=None, alias="CustomerMemo")
    line: list[InvoiceLine] = Field(default_factory=list, alias="Line")
    linked_txn: list[LinkedTxn] = Field(default_factory=list, alias="LinkedTxn")

    def payment_ids(self) -> list[str]:
        """The payments applied to this invoice (QBO lists them in the invoice's LinkedTxn)."""
        return list(dict.fromkeys(t.txn_id for t in self.linked_txn if t.txn_type == "Payment"))


def _validate(model: type[Any], row: dict[str, Any]) -> Any:
    return model.model_validate(row)


CDC_CAP = 1000  # objects in one CDC answer, across all its entities (docs/qbo.md §2.4)


@dataclass(frozen=True)
class Changes:
    """One CDC answer: changed payments and invoices (full payloads) and the ids of deleted ones.

    `complete` is False when the answer holds Intuit's cap of objects: more changes may exist."""

    payments: list[Payment]
    invoices: list[Invoice]
    deleted: dict[str, list[str]]  # entity → ids
    objects: int

    @property
    def complete(self) -> bool:
        return self.objects < CDC_CAP

    @classmethod
    def parse(
        cls,
        body: dict[str, Any],
        entities: Sequence[str],
        read: Callable[[type[Any], dict[str, Any]], Any] | None = None,
    ) -> Changes:
        """`{"CDCResponse": [{"QueryResponse": [{"Payment": […]}, {"Invoice": […]}]}]}`; `read(model, row)`
        validates a row (the client passes its own, which names a row it cannot read)."""
        if read is None:
            read = _validate
        groups: dict[str, list[dict[str, Any]]] = {e: [] for e in entities}
        for response in body.get("CDCResponse") or []:
            for qr in (response or {}).get("QueryResponse") or []:
                for entity in entities:
                    rows = (qr or {}).get(entity)
                    if isinstance(rows, list):
                        groups[entity].extend(r for r in rows if isinstance(r, dict))
        deleted: dict[str, list[str]] = {e: [] for e in entities}
        live: dict[str, list[dict[str, Any]]] = {e: [] for e in entities}
        for entity, rows in groups.items():
            for row in rows:
                if str(row.get("status", "")).lower() == "deleted":
                    deleted[entity].append(str(row.get("Id")))
                else:
                    live[entity].append(row)
        return cls(
            payments=[read(Payment, r) for r in live.get("Payment", [])],
            invoices=[read(Invoice, r) for r in live.get("Invoice", [])],
            deleted=deleted,
            objects=sum(len(rows) for rows in groups.values()),
        )


GroupLineDetail.model_rebuild()


class FaultError(_Qbo):
    message: str | None = None
    detail: str | None = None
    code: str | None = None


class Fault(_Qbo):
    """Both envelopes: `{"Fault":{"Error":[{"Message",…}],"type"}}` and 401's `{"fault":{"error":[…]}}`."""

    type: str | None = None
    errors: list[FaultError] = Field(default_factory=list)

    @classmethod
    def from_json(cls, body: Any) -> Fault | None:
        if not isinstance(body, dict):
            return None
        raw = next((v for k, v in body.items() if k.lower() == "fault" and isinstance(v, dict)), None)
        if raw is None:
            return None
        errors_raw = next((v for k, v in raw.items() if k.lower() == "error" and isinstance(v, list)), [])
        errors = [
            FaultError(
                **{
                    k.lower(): (str(v) if v is not None else None)
                    for k, v in e.items()
                    if k.lower() in ("message", "detail", "code")
                }
            )
            for e in errors_raw
            if isinstance(e, dict)
        ]
        fault_type = raw.get("type")
        return cls(type=str(fault_type) if fault_type is not None else None, errors=errors)

    @classmethod
    def from_xml(cls, text: str) -> Fault | None:
        """Intuit's XML faults (auth and throttling paths), read tolerantly without an XML parser."""
        if "<Fault" not in text:
            return None
        type_m = re.search(r"<Fault[^>]*\btype=\"([^\"]*)\"", text)
        errors = []
        for m in re.finditer(r"<Error\b([^>]*)>(.*?)</Error>", text, re.S):
            code_m = re.search(r"\bcode=\"([^\"]*)\"", m.group(1))
            msg_m = re.search(r"<Message>(.*?)</Message>", m.group(2), re.S)
            det_m = re.search(r"<Detail>(.*?)</Detail>", m.group(2), re.S)
            errors.append(
                FaultError(
                    code=code_m.group(1) if code_m else None,
                    message=msg_m.group(1).strip() if msg_m else None,
                    detail=det_m.group(1).strip() if det_m else None,
                )
            )
        return cls(type=type_m.group(1) if type_m else None, errors=errors)

    @property
    def codes(self) -> set[str]:
        return {e.code.lstrip("0") for e in self.errors if e.code}

    def summary(self) -> str:
        parts = []
        for e in self.errors[:3]:
            text = "; ".join(x for x in (e.message, e.detail) if x)
            parts.append(f"{text} (code {e.code})" if e.code else text)
        return redact(" | ".join(parts) or (self.type or "fault without details"))

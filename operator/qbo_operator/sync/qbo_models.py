"""QuickBooks Online entities the sync reads (docs/qbo.md §3), and Intuit's fault envelopes.

Only the fields the Green Check contract needs are modelled; pydantic drops everything else
(addresses, e-mails, phone numbers, private notes) at this boundary, so it can never leave QBO.
Money is parsed as `Decimal` (never float) so cents stay exact."""

from __future__ import annotations

import re
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


class LinkedTxn(_Qbo):
    txn_id: str = Field(alias="TxnId")
    txn_type: str = Field(alias="TxnType")


class PaymentLine(_Qbo):
    amount: Money = Field(default=Decimal(0), alias="Amount")
    linked_txn: list[LinkedTxn] = Field(default_factory=list, alias="LinkedTxn")


class Payment(_Qbo):
    id: str = Field(alias="Id")
    meta: MetaData = Field(alias="MetaData")
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

    @property
    def create_time(self) -> datetime:
        return self.meta.create_time

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


class Invoice(_Qbo):
    id: str = Field(alias="Id")
    doc_number: str | None = Field(default=None, alias="DocNumber")
    txn_date: date | None = Field(default=None, alias="TxnDate")
    total_amt: Money = Field(default=Decimal(0), alias="TotalAmt")
    balance: Money = Field(default=Decimal(0), alias="Balance")
    customer_ref: Ref | None = Field(default=None, alias="CustomerRef")
    currency_ref: Ref | None = Field(default=None, alias="CurrencyRef")
    customer_memo: Memo | None = Field(default=None, alias="CustomerMemo")
    line: list[InvoiceLine] = Field(default_factory=list, alias="Line")


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

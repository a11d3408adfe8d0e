"""Intuit's write API for Payment, Invoice and CreditMemo (docs/qbo.md §3), so any QBO client can be
the bookkeeper: `POST /v3/company/{realm}/payment|invoice|creditmemo` creates (no Id), fully
updates (Id + SyncToken) or sparsely updates (`"sparse": true`); `?operation=delete` and
`?operation=void` (or `?operation=update&include=void`) delete and void payments and invoices.

A stale SyncToken is refused with Intuit's 5010 "Stale Object Error". Each request calls the same
`QboSandbox` operation as the Python API, so the books, SyncToken, LastUpdatedTime and webhooks
behave identically. The guard middleware of `qbo_api` has already checked the access token, the
realm and the throttle."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, ValidationError

from qbo_operator.harness.sandbox.qbo_api import fault, qbo_json
from qbo_operator.harness.sandbox.qbo_store import Company
from qbo_operator.harness.sandbox.qbo_values import Entity, SandboxError, envelope_time

if TYPE_CHECKING:
    from qbo_operator.harness.sandbox.qbo import QboSandbox

_STALE = (
    "Stale Object Error : You and root were working on this at the same time. root finished before you "
    "did, so your work was not saved."
)


class _Loose(BaseModel):
    """Intuit's entities carry many fields the sandbox does not change; they are accepted and ignored."""

    model_config = ConfigDict(extra="allow")


class _Ref(_Loose):
    value: str


class _Linked(_Loose):
    TxnId: str
    TxnType: str


class _PaymentLine(_Loose):
    Amount: Decimal
    LinkedTxn: list[_Linked] = []


class _SalesDetail(_Loose):
    ItemRef: _Ref | None = None
    Qty: Decimal | None = None
    UnitPrice: Decimal | None = None


class _SalesLine(_Loose):
    Amount: Decimal | None = None
    DetailType: str = "SalesItemLineDetail"
    SalesItemLineDetail: _SalesDetail | None = None


class _Memo(_Loose):
    value: str


class _Body(_Loose):
    """What the sandbox reads of a Payment, Invoice or CreditMemo request body."""

    Id: str | None = None
    SyncToken: str | None = None
    sparse: bool = False
    CustomerRef: _Ref | None = None
    TotalAmt: Decimal | None = None
    TxnDate: str | None = None
    DocNumber: str | None = None
    PaymentRefNum: str | None = None
    PaymentMethodRef: _Ref | None = None
    PrivateNote: str | None = None
    CustomerMemo: _Memo | None = None


class _PaymentBody(_Body):
    Line: list[_PaymentLine] | None = None


class _SalesBody(_Body):
    Line: list[_SalesLine] | None = None


class _Refusal(Exception):
    """A request Intuit answers with a fault: (status, code, message, detail)."""

    def __init__(self, status: int, code: str, message: str, detail: str) -> None:
        super().__init__(detail)
        self.args4 = (status, code, message, detail)


def _business(detail: str) -> _Refusal:
    return _Refusal(
        400, "6000", "A business validation error has occurred while processing your request",
        f"Business Validation Error: {detail}",
    )  # fmt: skip


def _current(company: Company, entity: str, body: _Body) -> Entity:
    """The row an update, delete or void names, once its SyncToken is the current one."""
    row = company.tables[entity].rows.get(body.Id or "")
    if row is None:
        detail = f"Object Not Found : Something you're trying to use has been made inactive. ({entity} {body.Id})"
        raise _Refusal(400, "610", "Object Not Found", detail)
    if body.SyncToken is None:
        raise _Refusal(400, "2020", "Required param missing, need to supply the required value for the API",
                       "Required parameter SyncToken is missing in the request")  # fmt: skip
    if body.SyncToken != row["SyncToken"]:
        raise _Refusal(400, "5010", "Stale Object Error", _STALE)
    return row


def _given(body: BaseModel, name: str, sparse: bool) -> bool:
    """Whether an update sets a field: a sparse update only the fields sent, a full one every field."""
    return not sparse or name in body.model_fields_set


# --- payments ---------------------------------------------------------------------------------


def _applications(lines: list[_PaymentLine]) -> tuple[list[tuple[str, Decimal]], list[tuple[str, Decimal]]]:
    invoices: list[tuple[str, Decimal]] = []
    credits: list[tuple[str, Decimal]] = []
    for line in lines:
        for link in line.LinkedTxn:
            (invoices if link.TxnType == "Invoice" else credits).append((link.TxnId, line.Amount))
    return invoices, credits


def _write_payment(sb: QboSandbox, realm: str, body: _PaymentBody) -> Entity:
    company = sb.company(realm)
    method = company.method_name(body.PaymentMethodRef.model_dump()) if body.PaymentMethodRef else None
    if body.PaymentMethodRef is not None and method is None:
        raise _business(f"PaymentMethodRef {body.PaymentMethodRef.value} does not exist")
    if body.Id is None:
        if body.CustomerRef is None:
            raise _business("a payment needs a CustomerRef")
        invoices, credits = _applications(body.Line or [])
        applied = sum((a for _, a in invoices), Decimal(0)) - sum((a for _, a in credits), Decimal(0))
        total = applied if body.TotalAmt is None else body.TotalAmt
        return sb.create_payment(
            realm, [i for i, _ in invoices], [a for _, a in invoices], method,
            customer_id=body.CustomerRef.value, credit_memo_ids=[c for c, _ in credits],
            credit_amounts=[a for _, a in credits], unapplied=total - applied,
            ref_num=body.PaymentRefNum, private_note=body.PrivateNote, txn_date=body.TxnDate,
        )  # fmt: skip
    row = _current(company, "Payment", body)
    if body.CustomerRef is not None and body.CustomerRef.value != row["CustomerRef"]["value"]:
        raise _business("a payment's customer cannot change")
    sparse = body.sparse
    if not sparse and body.TotalAmt is None:
        raise _business("a full update needs TotalAmt")
    invoices, credits = _applications(body.Line or [])
    lines = _given(body, "Line", sparse)
    return sb.update_payment(
        realm, row["Id"], invoices=invoices if lines else None, credits=credits if lines else None,
        total=body.TotalAmt, txn_date=body.TxnDate, ref_num=body.PaymentRefNum, method=method,
    )  # fmt: skip


# --- invoices and credit memos ----------------------------------------------------------------


def _invoice_lines(lines: list[_SalesLine] | None) -> list[tuple[str | None, Decimal, Decimal]] | None:
    """Sales lines as (item id, qty, unit price); SubTotal and other lines are QBO's to compute."""
    if lines is None:
        return None
    out: list[tuple[str | None, Decimal, Decimal]] = []
    for line in lines:
        if line.DetailType != "SalesItemLineDetail":
            continue
        detail = line.SalesItemLineDetail or _SalesDetail()
        qty = detail.Qty if detail.Qty is not None else Decimal(1)
        price = detail.UnitPrice if detail.UnitPrice is not None else (line.Amount or Decimal(0)) / qty
        out.append((detail.ItemRef.value if detail.ItemRef else None, qty, price.quantize(Decimal("0.01"))))
    return out


def _write_invoice(sb: QboSandbox, realm: str, body: _SalesBody) -> Entity:
    lines = _invoice_lines(body.Line)
    if body.Id is None:
        if body.CustomerRef is None:
            raise _business("an invoice needs a CustomerRef")
        return sb.create_invoice(
            realm, customer_id=body.CustomerRef.value, lines=lines, doc_number=body.DocNumber, txn_date=body.TxnDate
        )
    row = _current(sb.company(realm), "Invoice", body)
    sparse = body.sparse
    if not sparse and not lines:
        raise _business("a full update of an invoice needs its lines")
    return sb.update_invoice(
        realm, row["Id"], lines=lines if _given(body, "Line", sparse) else None, doc_number=body.DocNumber,
        txn_date=body.TxnDate, customer_memo=body.CustomerMemo.value if body.CustomerMemo else None,
    )  # fmt: skip


def _write_credit_memo(sb: QboSandbox, realm: str, body: _SalesBody) -> Entity:
    if body.Id is None:
        if body.CustomerRef is None:
            raise _business("a credit memo needs a CustomerRef")
        amount = sum((q * p for _, q, p in _invoice_lines(body.Line) or []), Decimal(0))
        return sb.create_credit(realm, "CreditMemo", customer_id=body.CustomerRef.value, amount=amount)
    company = sb.company(realm)
    row = _current(company, "CreditMemo", body)
    if body.Line is not None and _given(body, "Line", body.sparse):
        raise _business("the sandbox changes a credit memo's DocNumber and PrivateNote only")
    if body.DocNumber is not None:
        row["DocNumber"] = body.DocNumber
    if body.PrivateNote is not None:
        row["PrivateNote"] = body.PrivateNote
    now = sb.now()
    company.touch("CreditMemo", row, now)
    company.notify("CreditMemo", row["Id"], "Update", now)
    return row


# --- the endpoint -----------------------------------------------------------------------------

_Writer = Callable[["QboSandbox", str, Any], Entity]
_WRITERS: dict[str, tuple[str, type[_Body], _Writer]] = {
    "payment": ("Payment", _PaymentBody, _write_payment),
    "invoice": ("Invoice", _SalesBody, _write_invoice),
    "creditmemo": ("CreditMemo", _SalesBody, _write_credit_memo),
}


def _operate(sb: QboSandbox, realm: str, entity: str, operation: str, body: _Body) -> dict[str, Any]:
    """`?operation=delete|void` of a Payment or Invoice; the answer's entity part."""
    if entity == "CreditMemo" or operation not in ("delete", "void"):
        raise _Refusal(400, "2010", "Request has invalid or unsupported property",
                       f"operation={operation} is not supported for {entity}")  # fmt: skip
    row = _current(sb.company(realm), entity, body)
    if operation == "void":
        return sb.void_payment(realm, row["Id"]) if entity == "Payment" else sb.void_invoice(realm, row["Id"])
    if entity == "Payment":
        sb.delete_payment(realm, row["Id"])
    else:
        sb.delete_invoice(realm, row["Id"])
    return {"domain": "QBO", "status": "Deleted", "Id": row["Id"]}


def _handler(sb: QboSandbox, segment: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    entity, model, write = _WRITERS[segment]

    async def handle(request: web.Request) -> web.Response:
        raw = await request.read()
        realm = request.match_info["realm"]
        operation = request.query.get("operation", "")
        if operation == "update" and request.query.get("include") == "void":
            operation = "void"
        with sb.lock:
            try:
                body = model.model_validate(json.loads(raw or b"{}", parse_float=Decimal))
                if operation in ("", "create", "update"):
                    answer: dict[str, Any] = write(sb, realm, body)
                else:
                    answer = _operate(sb, realm, entity, operation, body)
            except (ValueError, ValidationError) as exc:
                if isinstance(exc, SandboxError):
                    refusal = _business(str(exc))
                else:
                    refusal = _Refusal(400, "2010", "Request has invalid or unsupported property", str(exc)[:300])
                return fault(*refusal.args4, "ValidationFault", sb.now())
            except _Refusal as exc:
                return fault(*exc.args4, "ValidationFault", sb.now())
            return qbo_json({entity: answer, "time": envelope_time(sb.now(), sb.company(realm).tz)})

    return handle


def routes(sb: QboSandbox) -> list[web.RouteDef]:
    """`POST /v3/company/{realm}/payment|invoice|creditmemo`, bound to one sandbox."""
    return [web.post(f"/v3/company/{{realm}}/{segment}", _handler(sb, segment)) for segment in _WRITERS]

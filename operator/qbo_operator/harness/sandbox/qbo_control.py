"""The QBO sandbox's control API under `/_sandbox/`: what tests do through `QboSandbox`'s Python
methods, over HTTP for other processes (the demo, the chaos tests, a person with curl).

Requests are validated with pydantic models and refused as `{"error": ...}` 400s (404 for an
unknown realm), never half-applied. Generating a company or many payments runs in a worker thread
so the sandbox keeps answering the clients under test meanwhile."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qbo_operator.harness.sandbox.faults import FaultRule
from qbo_operator.harness.sandbox.qbo_api import ThrottleLimits, limits_json
from qbo_operator.harness.sandbox.qbo_changes import CreditKind
from qbo_operator.harness.sandbox.qbo_values import SandboxError, dumps, intuit_time
from qbo_operator.harness.sandbox.qbo_webhooks import WebhookFormat

if TYPE_CHECKING:
    from qbo_operator.harness.sandbox.qbo import QboSandbox

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --- request bodies -------------------------------------------------------------------------


class _NewCompany(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    seed: int = 1
    payments: int = Field(default=200, ge=0, le=1_000_000)
    history_days: int = Field(default=90, ge=1, le=3650)
    multicurrency: bool = False


class _NewPayments(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int | None = Field(default=None, ge=0, le=1_000_000)
    seed: int | None = None
    seconds: int = Field(default=60, ge=0, le=86400)
    invoice_ids: list[str] | None = None
    amounts: list[str] | None = None
    method: str | None = "Check"
    customer_id: str | None = None
    credit_memo_ids: list[str] = []
    credit_amounts: list[str] | None = None
    unapplied: str = "0"
    ref_num: str | None = None
    private_note: str | None = None


class _PaymentChange(BaseModel):
    """`update_payment`'s arguments; an absent field keeps the payment's value."""

    model_config = ConfigDict(extra="forbid")
    invoices: list[tuple[str, Decimal]] | None = None
    credits: list[tuple[str, Decimal]] | None = None
    total: Decimal | None = None
    txn_date: str | None = None
    ref_num: str | None = None
    method: str | None = None


class _Invoice(BaseModel):
    """`create_invoice`'s and `update_invoice`'s arguments; lines are [item id or null, qty, unit price]."""

    model_config = ConfigDict(extra="forbid")
    customer_id: str | None = None
    amount: Decimal | None = None
    lines: list[tuple[str | None, Decimal, Decimal]] | None = None
    doc_number: str | None = None
    txn_date: str | None = None
    customer_memo: str | None = None


class _Credit(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: CreditKind = "CreditMemo"
    customer_id: str
    amount: Decimal


class _Apply(BaseModel):
    model_config = ConfigDict(extra="forbid")
    invoice_id: str
    amount: Decimal | None = None


class _Ties(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int | None


class _Bookkeeping(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = 0
    changes: int = Field(default=20, ge=0, le=100_000)


class _Throttle(BaseModel):
    model_config = ConfigDict(extra="forbid")
    enabled: bool = True
    per_minute: int | None = Field(default=500, ge=1)
    per_second: int | None = Field(default=10, ge=1)
    concurrent: int | None = Field(default=10, ge=1)
    format: Literal["json", "xml"] = "json"
    retry_after: int | None = Field(default=None, ge=0)


class _Webhooks(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str | None
    format: WebhookFormat | None = None


class _Approve(BaseModel):
    model_config = ConfigDict(extra="forbid")
    state: str = Field(min_length=1)
    realmId: str | None = None  # Intuit's spelling
    redirect_uri: str | None = None


class _Clock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    advance: float = Field(ge=0)


# --- handlers -------------------------------------------------------------------------------


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(payload), status=status, content_type="application/json")


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise web.HTTPBadRequest(text='{"error": "the body is not JSON"}', content_type="application/json") from None


def _refusing(fn: _Handler) -> _Handler:
    """A handler whose invalid requests answer 400 (404 for an unknown realm) with what is wrong."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await fn(request)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            return _json({"error": problems}, 400)
        except SandboxError as exc:
            return _json({"error": str(exc)}, 404 if str(exc).startswith("no company") else 400)

    return wrapped


class _Control:
    """The control API's handlers, bound to one sandbox."""

    def __init__(self, sb: QboSandbox) -> None:
        self.sb = sb

    async def state(self, request: web.Request) -> web.Response:
        return _json(self.sb.state())

    async def new_company(self, request: web.Request) -> web.Response:
        sb = self.sb
        spec = _NewCompany.model_validate(await _body(request))
        realm = await asyncio.to_thread(
            sb.add_company, spec.name, spec.seed, spec.payments, spec.history_days, spec.multicurrency
        )
        return _json({"realmId": realm, "name": spec.name, "counts": sb.company(realm).counts()}, 201)

    async def company(self, request: web.Request) -> web.Response:
        c = self.sb.company(request.match_info["realm"])
        return _json({"realmId": c.realm_id, "name": c.name, "counts": c.counts()})

    async def new_payments(self, request: web.Request) -> web.Response:
        sb = self.sb
        realm = request.match_info["realm"]
        spec = _NewPayments.model_validate(await _body(request))
        if spec.invoice_ids is not None or spec.customer_id is not None:
            payment = sb.create_payment(
                realm,
                spec.invoice_ids or [],
                spec.amounts,
                spec.method,
                customer_id=spec.customer_id,
                credit_memo_ids=spec.credit_memo_ids,
                credit_amounts=spec.credit_amounts,
                unapplied=spec.unapplied,
                ref_num=spec.ref_num,
                private_note=spec.private_note,
            )
            return _json({"payment": payment}, 201)
        n = 1000 if spec.n is None else spec.n
        created = await asyncio.to_thread(sb.generate_payments, realm, n, spec.seed, spec.seconds)
        return _json({"created": len(created), "ids": [p["Id"] for p in created]}, 201)

    async def list_payments(self, request: web.Request) -> web.Response:
        return self._page(request, "Payment", "payments")

    async def list_invoices(self, request: web.Request) -> web.Response:
        return self._page(request, "Invoice", "invoices")

    def _page(self, request: web.Request, entity: str, key: str) -> web.Response:
        try:
            offset = int(request.query.get("offset", "0"))
            limit = int(request.query.get("limit", "1000"))
        except ValueError:
            return _json({"error": "offset and limit must be integers"}, 400)
        with self.sb.lock:
            rows = self.sb.company(request.match_info["realm"]).tables[entity].ordered()
            return _json({"total": len(rows), key: rows[max(0, offset) : max(0, offset) + max(0, limit)]})

    async def void(self, request: web.Request) -> web.Response:
        return _json({"payment": self.sb.void_payment(request.match_info["realm"], request.match_info["id"])})

    async def delete(self, request: web.Request) -> web.Response:
        self.sb.delete_payment(request.match_info["realm"], request.match_info["id"])
        return _json({"deleted": request.match_info["id"]})

    async def update_payment(self, request: web.Request) -> web.Response:
        spec = _PaymentChange.model_validate(await _body(request))
        realm, payment_id = request.match_info["realm"], request.match_info["id"]
        return _json({"payment": self.sb.update_payment(realm, payment_id, **spec.model_dump())})

    async def new_invoice(self, request: web.Request) -> web.Response:
        spec = _Invoice.model_validate(await _body(request))
        if spec.customer_memo is not None:
            return _json({"error": "customer_memo: set it with an update"}, 400)
        fields = spec.model_dump(exclude={"customer_memo"})
        return _json({"invoice": self.sb.create_invoice(request.match_info["realm"], **fields)}, 201)

    async def update_invoice(self, request: web.Request) -> web.Response:
        spec = _Invoice.model_validate(await _body(request))
        if spec.customer_id is not None:
            return _json({"error": "customer_id: an invoice's customer cannot change"}, 400)
        realm, invoice_id = request.match_info["realm"], request.match_info["id"]
        fields = spec.model_dump(exclude={"customer_id"})
        return _json({"invoice": self.sb.update_invoice(realm, invoice_id, **fields)})

    async def void_invoice(self, request: web.Request) -> web.Response:
        return _json({"invoice": self.sb.void_invoice(request.match_info["realm"], request.match_info["id"])})

    async def delete_invoice(self, request: web.Request) -> web.Response:
        self.sb.delete_invoice(request.match_info["realm"], request.match_info["id"])
        return _json({"deleted": request.match_info["id"]})

    async def new_credit(self, request: web.Request) -> web.Response:
        spec = _Credit.model_validate(await _body(request))
        credit = self.sb.create_credit(
            request.match_info["realm"], spec.kind, customer_id=spec.customer_id, amount=spec.amount
        )
        return _json({spec.kind: credit}, 201)

    async def apply_credit(self, request: web.Request) -> web.Response:
        spec = _Apply.model_validate(await _body(request))
        realm, credit_id = request.match_info["realm"], request.match_info["id"]
        return _json({"payment": self.sb.auto_apply_credit(realm, spec.invoice_id, credit_id, spec.amount)}, 201)

    async def bookkeeping(self, request: web.Request) -> web.Response:
        spec = _Bookkeeping.model_validate(await _body(request))
        realm = request.match_info["realm"]
        self.sb.company(realm)
        log = await asyncio.to_thread(self.sb.bookkeep, realm, spec.seed, spec.changes)
        return _json({"log": log})

    async def ties(self, request: web.Request) -> web.Response:
        spec = _Ties.model_validate(await _body(request))
        self.sb.tie_shuffle_seed = spec.seed
        return _json({"tie_shuffle_seed": spec.seed})

    async def revoke(self, request: web.Request) -> web.Response:
        realm = request.match_info["realm"]
        self.sb.company(realm)
        return _json({"revoked": self.sb.revoke_all(realm)})

    async def tokens(self, request: web.Request) -> web.Response:
        return _json(self.sb.issue_tokens(request.match_info["realm"]), 201)

    async def rotate(self, request: web.Request) -> web.Response:
        body = await _body(request)
        realm = body.get("realmId") if isinstance(body, dict) else None
        return _json({"grants": self.sb.force_rotation(realm)})

    async def add_faults(self, request: web.Request) -> web.Response:
        faults = self.sb.faults
        body = await _body(request)
        specs = body.get("rules") if isinstance(body, dict) and "rules" in body else [body]
        if not isinstance(specs, list):
            return _json({"error": "rules must be a list"}, 400)
        rules = [FaultRule.model_validate(spec) for spec in specs]  # all or nothing
        if isinstance(body, dict) and isinstance(body.get("seed"), int):
            faults.seed(body["seed"])
        return _json({"ids": [faults.add(rule) for rule in rules]}, 201)

    async def list_faults(self, request: web.Request) -> web.Response:
        return _json({"rules": self.sb.faults.rules, "fired": dict(self.sb.faults.fired)})

    async def clear_faults(self, request: web.Request) -> web.Response:
        self.sb.faults.clear()
        return _json({"rules": []})

    async def remove_fault(self, request: web.Request) -> web.Response:
        if not self.sb.faults.remove(request.match_info["id"]):
            return _json({"error": "no such fault rule"}, 404)
        return _json({"removed": request.match_info["id"]})

    async def throttle(self, request: web.Request) -> web.Response:
        spec = _Throttle.model_validate(await _body(request))
        throttle = self.sb.throttle
        throttle.limits = (
            ThrottleLimits(spec.per_minute, spec.per_second, spec.concurrent, spec.format, spec.retry_after)
            if spec.enabled
            else None
        )
        return _json({"throttle": limits_json(throttle.limits)})

    async def clock(self, request: web.Request) -> web.Response:
        spec = _Clock.model_validate(await _body(request))
        return _json({"now": self.sb.advance_clock(spec.advance).isoformat()})

    async def webhooks(self, request: web.Request) -> web.Response:
        sb = self.sb
        if request.method == "POST":
            spec = _Webhooks.model_validate(await _body(request))
            sb.configure_webhooks(spec.url, spec.format)
        deliveries = [
            {
                "number": d.number,
                "attempt": d.attempt,
                "events": len(d.event_ids),
                "status": d.status,
                "error": d.error,
                "sentAt": intuit_time(d.sent_at),
            }
            for d in sb.webhook_deliveries
        ]
        sender = sb.webhooks
        return _json({"url": sender.url, "format": sender.format, "pending": sender.pending, "deliveries": deliveries})

    async def approve(self, request: web.Request) -> web.Response:
        spec = _Approve.model_validate(await _body(request))
        return _json({"location": self.sb.approve(spec.state, spec.realmId, spec.redirect_uri)})


def routes(sb: QboSandbox) -> list[web.RouteDef]:
    """The control API's routes, bound to one sandbox."""
    c = _Control(sb)
    table: list[tuple[str, str, _Handler]] = [
        ("GET", "/_sandbox/state", c.state),
        ("POST", "/_sandbox/companies", c.new_company),
        ("GET", "/_sandbox/companies/{realm}", c.company),
        ("POST", "/_sandbox/companies/{realm}/payments", c.new_payments),
        ("GET", "/_sandbox/companies/{realm}/payments", c.list_payments),
        ("POST", "/_sandbox/companies/{realm}/payments/{id}/void", c.void),
        ("DELETE", "/_sandbox/companies/{realm}/payments/{id}", c.delete),
        ("PATCH", "/_sandbox/companies/{realm}/payments/{id}", c.update_payment),
        ("GET", "/_sandbox/companies/{realm}/invoices", c.list_invoices),
        ("POST", "/_sandbox/companies/{realm}/invoices", c.new_invoice),
        ("PATCH", "/_sandbox/companies/{realm}/invoices/{id}", c.update_invoice),
        ("POST", "/_sandbox/companies/{realm}/invoices/{id}/void", c.void_invoice),
        ("DELETE", "/_sandbox/companies/{realm}/invoices/{id}", c.delete_invoice),
        ("POST", "/_sandbox/companies/{realm}/credits", c.new_credit),
        ("POST", "/_sandbox/companies/{realm}/credits/{id}/apply", c.apply_credit),
        ("POST", "/_sandbox/companies/{realm}/bookkeeping", c.bookkeeping),
        ("POST", "/_sandbox/ties", c.ties),
        ("POST", "/_sandbox/companies/{realm}/revoke", c.revoke),
        ("POST", "/_sandbox/companies/{realm}/tokens", c.tokens),
        ("POST", "/_sandbox/rotate", c.rotate),
        ("POST", "/_sandbox/faults", c.add_faults),
        ("GET", "/_sandbox/faults", c.list_faults),
        ("DELETE", "/_sandbox/faults", c.clear_faults),
        ("DELETE", "/_sandbox/faults/{id}", c.remove_fault),
        ("POST", "/_sandbox/throttle", c.throttle),
        ("POST", "/_sandbox/clock", c.clock),
        ("GET", "/_sandbox/webhooks", c.webhooks),
        ("POST", "/_sandbox/webhooks", c.webhooks),
        ("POST", "/_sandbox/approve", c.approve),
    ]
    return [web.route(method, path, _refusing(fn)) for method, path, fn in table]

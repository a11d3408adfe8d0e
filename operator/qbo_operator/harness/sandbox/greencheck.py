"""A local Green Check (docs/greencheck.md §3): a real HTTP server that follows our ingestion contract.

Token endpoint with expiry (`token_lifetime`, short for tests) and 403 `EXPIRED_TOKEN` after it; the
ingestion endpoint with schema validation (422 for a malformed body), payment sets that replace a payment's
records as a unit (`greencheck_store`: created, updated, unchanged, retracted; a set with any record breaking
a rule — negative amounts, a missing invoice number, an id outside its realm and payment, or any id in
`reject_external_ids` — is rejected whole), `Idempotency-Key` replay (same key and body → the first response;
same key, other body → 422); 429 with `X-RateLimit-*` above `rate_limit` requests per `rate_window` seconds;
413 over `max_body_bytes`; injected latency, 5xx and malformed answers through
`qbo_operator.harness.sandbox.faults`; the read-back `GET …/sales` (current records only) in the public
`WholesaleSale` shape and `GET …/sales/invoice-payments/{external_id}/versions` for audit; `x-amzn-requestid` on
every response and a count of every request served.

Python API (tests, benchmarks, demo): `sb.records[crb_id]` (external_id → current record as received),
`sb.current_records(crb_id)`, `sb.versions(crb_id, external_id)`, `sb.requests` (Counter by endpoint),
`sb.results` (Counter by record status, and `rejected` sets), `sb.reject_external_ids` and
`sb.clear_rejections()`, `sb.faults`, `sb.received` (external_id → times it arrived in a processed request),
hooks `before_ingest(crb_id, payment_sets)`/`after_ingest(crb_id, results)` (awaited around every
well-formed ingestion request, replays included: tests kill a client there).
HTTP control API for out-of-process use: `GET /_sandbox/state`, `GET /_sandbox/records/{crb_id}` (current),
`GET /_sandbox/versions/{crb_id}/{external_id}`, `POST /_sandbox/reject` `{"external_ids": [...]}`,
`DELETE /_sandbox/reject`, `POST|DELETE /_sandbox/faults`, `POST /_sandbox/expire-tokens`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, cast

from aiohttp import web
from pydantic import ValidationError

from qbo_operator.harness.sandbox.faults import FaultRule, Faults
from qbo_operator.harness.sandbox.greencheck_store import GreenCheckStore
from qbo_operator.sync.records import IngestRequest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
IngestHook = Callable[[str, list[dict[str, Any]]], Awaitable[None]]
INGEST_PATH = "/service-providers/{sp_id}/crbs/{crb_id}/sales/invoice-payments"
SALES_PATH = "/service-providers/{sp_id}/crbs/{crb_id}/sales"
VERSIONS_PATH = INGEST_PATH + "/{external_id}/versions"
DEFAULT_MAX_BODY = 5 * 1024 * 1024


def _error(status: int, message: str, details: Any = None, **extra: Any) -> web.Response:
    body: dict[str, Any] = {"message": message}
    if details is not None:
        body["details"] = details
    body.update(extra)
    return web.json_response(body, status=status)


def _render_status(request: web.Request, rule: FaultRule) -> web.StreamResponse:
    return _error(rule.status or 500, "Internal server error", "INTERNAL_ERROR")


def _render_throttle(request: web.Request, rule: FaultRule) -> web.StreamResponse:
    resp = _error(rule.status or 429, "Too Many Requests", "THROTTLED")
    reset = time.time() + (rule.retry_after if rule.retry_after is not None else 1)
    resp.headers.update({"X-RateLimit-Limit": "0", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": f"{reset:.3f}"})
    return resp


def _render_malformed(request: web.Request, rule: FaultRule) -> web.StreamResponse:
    return web.Response(
        status=rule.status or 200, body=b'{"results": [{"payment_id": ', content_type="application/json"
    )


@dataclass
class _Window:
    start: float = 0.0
    count: int = 0


class GreenCheckSandbox:
    def __init__(
        self,
        client_id: str,
        client_secret: str,
        service_provider_id: str,
        token_lifetime: float = 3600,
        rate_limit: int | None = None,
        *,
        rate_window: float = 1.0,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        expires_at_style: Literal["unix", "seconds"] = "unix",
        seed: int = 0,
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.service_provider_id = service_provider_id
        self.token_lifetime = token_lifetime
        self.rate_limit = rate_limit
        self.rate_window = rate_window
        self.max_body_bytes = max_body_bytes
        self.expires_at_style = expires_at_style
        self.store = GreenCheckStore()
        # The store's own objects, named as before so callers read them directly.
        self.records = self.store.records
        self.results = self.store.results
        self.received = self.store.received
        self.reject_external_ids = self.store.reject_external_ids
        self.requests: Counter[str] = Counter()
        self.responses: Counter[int] = Counter()  # HTTP status codes of API responses (429s, 413s, ...)
        self.replays = 0
        self.faults = Faults(
            seed=seed,
            renderers={
                "status": _render_status,
                "throttle": _render_throttle,
                "malformed": _render_malformed,
            },
        )
        self.before_ingest: IngestHook | None = None
        self.after_ingest: IngestHook | None = None
        self._tokens: dict[str, float] = {}
        self._idempotency: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self._window = _Window()
        self._lock = asyncio.Lock()

    # --- server -------------------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=self.max_body_bytes * 2 + 1024 * 1024,
            middlewares=[self._count_and_tag, cast(Any, self.faults.middleware())],
        )
        app.router.add_post("/auth/token", self._token, name="auth_token")
        app.router.add_post(INGEST_PATH, self._ingest, name="invoice_payments")
        app.router.add_get(SALES_PATH, self._sales, name="sales")
        app.router.add_get(VERSIONS_PATH, self._versions, name="versions")
        app.router.add_get("/_sandbox/state", self._state, name="control_state")
        app.router.add_get("/_sandbox/records/{crb_id}", self._records, name="control_records")
        app.router.add_get("/_sandbox/versions/{crb_id}/{external_id}", self._control_versions, name="control_versions")
        app.router.add_post("/_sandbox/reject", self._reject, name="control_reject")
        app.router.add_delete("/_sandbox/reject", self._clear_reject, name="control_reject_clear")
        app.router.add_post("/_sandbox/faults", self._add_fault, name="control_faults")
        app.router.add_delete("/_sandbox/faults", self._clear_faults, name="control_faults_clear")
        app.router.add_post("/_sandbox/expire-tokens", self._expire, name="control_expire")
        return app

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, host, port)
        await site.start()
        try:
            bound = runner.addresses[0]
            yield f"http://{host}:{bound[1]}"
        finally:
            await runner.cleanup()

    @web.middleware
    async def _count_and_tag(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name or "other"
        self.requests["control" if route.startswith("control") else route] += 1
        request_id = str(uuid.uuid4())
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            resp = _error(exc.status, exc.reason)
        if not resp.prepared:
            resp.headers["x-amzn-requestid"] = request_id
        if not route.startswith("control"):
            self.responses[resp.status] += 1
        return resp

    # --- auth ---------------------------------------------------------------------------------

    async def _token(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Invalid request body")
        if not isinstance(body, dict):
            return _error(400, "Invalid request body")
        ok_id = secrets.compare_digest(str(body.get("client_id", "")), self.client_id)
        ok_secret = secrets.compare_digest(str(body.get("client_secret", "")), self.client_secret)
        if body.get("grant_type") != "client_credentials" or not (ok_id and ok_secret):
            return web.json_response(
                {"name": "Unauthorized", "message": "Invalid client credentials", "status": 401}, status=401
            )
        now = time.time()
        token = secrets.token_urlsafe(32)
        self._tokens[token] = now + self.token_lifetime
        expires_at = self.token_lifetime if self.expires_at_style == "seconds" else now + self.token_lifetime
        return web.json_response(
            {
                "access_token": token,
                "token_type": "Bearer",
                "scope": body.get("scope") or [],
                "expires_at": int(expires_at),
                "client_id": self.client_id,
                "issued_at": int(now),
            }
        )

    def _authorize(self, request: web.Request) -> web.Response | None:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else ""
        expiry = self._tokens.get(token)
        if expiry is None:
            return web.json_response({"name": "Unauthorized", "message": "Unauthorized", "status": 401}, status=401)
        if time.time() >= expiry:
            return _error(403, "The security token included in the request is expired", "EXPIRED_TOKEN")
        return None

    def _throttle(self) -> tuple[web.Response | None, dict[str, str]]:
        if self.rate_limit is None:
            return None, {}
        now = time.time()
        if now - self._window.start >= self.rate_window:
            self._window = _Window(start=now)
        self._window.count += 1
        reset = self._window.start + self.rate_window
        headers = {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(0, self.rate_limit - self._window.count)),
            "X-RateLimit-Reset": f"{reset:.3f}",
        }
        if self._window.count > self.rate_limit:
            resp = _error(429, "Too Many Requests", "THROTTLED")
            resp.headers.update(headers)
            return resp, headers
        return None, headers

    def _gate(self, request: web.Request) -> tuple[web.Response | None, dict[str, str]]:
        if request.match_info["sp_id"] != self.service_provider_id:
            return web.json_response(
                {"name": "NotFound", "message": "Unknown service provider", "status": 404}, status=404
            ), {}
        denied = self._authorize(request)
        if denied is not None:
            return denied, {}
        return self._throttle()

    # --- ingestion ----------------------------------------------------------------------------

    async def _ingest(self, request: web.Request) -> web.StreamResponse:
        denied, rate_headers = self._gate(request)
        if denied is not None:
            return denied
        if request.content_length is not None and request.content_length > self.max_body_bytes:
            resp = _error(413, "Request Too Large", "REQUEST_TOO_LARGE")
            resp.force_close()  # the unread body must not be taken for the next request
            return resp
        raw = await request.read()
        if len(raw) > self.max_body_bytes:
            return _error(413, "Request Too Large", "REQUEST_TOO_LARGE")
        crb_id = request.match_info["crb_id"]
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _error(422, "Validation Failed", {"body": {"message": "is not valid JSON"}})
        try:
            parsed = IngestRequest.model_validate(data, strict=True)
        except ValidationError as exc:
            details = {
                ".".join(["body", *(f"[{x}]" if isinstance(x, int) else str(x) for x in e["loc"])]).replace(
                    ".[", "["
                ): {"message": e["msg"]}
                for e in exc.errors()[:20]
            }
            return _error(422, "Validation Failed", details)
        key = request.headers.get("Idempotency-Key")
        fingerprint = hashlib.sha256(raw).hexdigest()
        async with self._lock:
            if self.before_ingest is not None:
                await self.before_ingest(crb_id, data["payments"])
            stored = self._idempotency.get((crb_id, key)) if key else None
            if stored is not None and stored[0] != fingerprint:
                return _error(
                    422,
                    "Validation Failed",
                    {"header.Idempotency-Key": {"message": "was used before with a different request body"}},
                )
            if stored is not None:
                self.replays += 1
                payload = stored[1]
                rate_headers = {**rate_headers, "Idempotent-Replayed": "true"}
            else:
                results = [
                    self.store.apply(crb_id, parsed.realm_id, ps, raw_ps["records"])
                    for ps, raw_ps in zip(parsed.payments, data["payments"], strict=True)
                ]
                payload = {"results": results}
                if key:
                    self._idempotency[(crb_id, key)] = (fingerprint, payload)
            if self.after_ingest is not None:
                await self.after_ingest(crb_id, payload["results"])
        resp = web.json_response(payload)
        resp.headers.update(rate_headers)
        return resp

    # --- read-back ----------------------------------------------------------------------------

    async def _sales(self, request: web.Request) -> web.StreamResponse:
        denied, rate_headers = self._gate(request)
        if denied is not None:
            return denied
        q = request.query
        try:
            limit = int(q.get("limit", "100"))
            offset = int(q.get("offset", "0"))
        except ValueError:
            return _error(422, "Validation Failed", {"query.limit": {"message": "limit and offset are integers"}})
        if not 1 <= limit <= 1000 or offset < 0:
            return _error(422, "Validation Failed", {"query.limit": {"message": "limit 1..1000, offset ≥ 0"}})
        start, end = q.get("start_date"), q.get("end_date")
        rows = [
            r
            for r in self.records.get(request.match_info["crb_id"], {}).values()
            if (start is None or (r["payment"]["date"] or "") >= start)
            and (end is None or (r["payment"]["date"] or "") <= end)
        ]
        rows.sort(key=lambda r: (r["payment"]["date"] or "", r["external_id"]))
        resp = web.json_response(
            {
                "data": [wholesale_sale(r) for r in rows[offset : offset + limit]],
                "metadata": {"total": len(rows), "limit": limit, "offset": offset},
            }
        )
        resp.headers.update(rate_headers)
        return resp

    async def _versions(self, request: web.Request) -> web.StreamResponse:
        denied, rate_headers = self._gate(request)
        if denied is not None:
            return denied
        resp = self._versions_of(request.match_info["crb_id"], request.match_info["external_id"])
        resp.headers.update(rate_headers)
        return resp

    def _versions_of(self, crb_id: str, external_id: str) -> web.Response:
        history = self.store.versions(crb_id, external_id)
        if not history:
            return web.json_response({"name": "NotFound", "message": "Unknown record", "status": 404}, status=404)
        return web.json_response({"external_id": external_id, "versions": history})

    def current_records(self, crb_id: str) -> dict[str, dict[str, Any]]:
        """external_id → the record held now (retracted records are gone)."""
        return self.store.current_records(crb_id)

    def versions(self, crb_id: str, external_id: str) -> list[dict[str, Any]]:
        """The record's versions, oldest first: `{version, status, record (None when retracted), at}`."""
        return self.store.versions(crb_id, external_id)

    def clear_rejections(self) -> None:
        """Accept again what `reject_external_ids` refused (a CRB fixed its data)."""
        self.reject_external_ids.clear()

    # --- control API --------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "requests": dict(self.requests),
            "results": dict(self.results),
            "records": {crb: len(recs) for crb, recs in self.records.items()},
            "replays": self.replays,
            "responses": {str(k): v for k, v in self.responses.items()},
            "reject_external_ids": sorted(self.reject_external_ids),
            "faults": self.faults.rules,
        }

    async def _state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.state())

    async def _records(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"records": list(self.records.get(request.match_info["crb_id"], {}).values())})

    async def _reject(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        ids = body.get("external_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            return _error(400, "external_ids must be a list of strings")
        self.reject_external_ids.update(ids)
        return web.json_response({"reject_external_ids": sorted(self.reject_external_ids)})

    async def _clear_reject(self, request: web.Request) -> web.StreamResponse:
        self.clear_rejections()
        return web.json_response({"reject_external_ids": []})

    async def _control_versions(self, request: web.Request) -> web.StreamResponse:
        return self._versions_of(request.match_info["crb_id"], request.match_info["external_id"])

    async def _add_fault(self, request: web.Request) -> web.StreamResponse:
        try:
            rule_id = self.faults.add(await request.json())
        except (ValueError, ValidationError) as exc:
            return _error(400, f"bad fault rule: {exc}")
        return web.json_response({"id": rule_id})

    async def _clear_faults(self, request: web.Request) -> web.StreamResponse:
        self.faults.clear()
        return web.json_response({"faults": []})

    @property
    def idempotency_keys(self) -> set[tuple[str, str]]:
        """(crb_id, Idempotency-Key) pairs whose first response is stored."""
        return set(self._idempotency)

    def expire_tokens(self) -> None:
        """Every issued token is expired from now on (the next call gets 403 EXPIRED_TOKEN)."""
        self._tokens = dict.fromkeys(self._tokens, 0.0)

    async def _expire(self, request: web.Request) -> web.StreamResponse:
        self.expire_tokens()
        return web.json_response({"expired": len(self._tokens)})


def wholesale_sale(record: dict[str, Any]) -> dict[str, Any]:
    """An ingested record as the public read API shows it (`WholesaleSale`)."""
    pay, inv = record["payment"], record["invoice"]
    return {
        "pos_sale_id": record["external_id"],
        "pos_name": "Quickbooks",
        "date": pay["date"],
        "total_paid": pay["amount"],
        "payments": [{"type": pay["type"], "amount_paid": pay["amount"]}],
        "line_items": [
            {
                "product_name": li["product_name"],
                "pos_product_id": li["product_id"],
                "num_units": float(li["quantity"]),
                "price_per_unit": li["unit_price"],
            }
            for li in record["line_items"]
        ],
        "invoice": {
            "id": inv["id"],
            "number": inv["number"],
            "total": inv["total"],
            "open_balance": inv["open_balance"],
            "memo": inv["memo"],
        },
        "customer": record["customer"],
        "currency": record["currency"],
    }

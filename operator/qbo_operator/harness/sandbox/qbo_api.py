"""The Accounting API under `/v3/company/{realmId}/` (docs/qbo.md §2, §4): query, read, CDC, faults, throttling.

The guard middleware does what Intuit's gateway does before any handler: the bearer token (401 in
the lower-case `fault` shape), the realm (403 AuthorizationFailed), and the limits (429
ThrottleExceeded above 500 requests/min, 10 requests/s or 10 concurrent requests per realm)."""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
from xml.sax.saxutils import escape

from aiohttp import web
from aiohttp.typedefs import Middleware

from qbo_operator.harness.sandbox.faults import FaultRule, Handler, Renderer
from qbo_operator.harness.sandbox.qbo_oauth import AccessDenied
from qbo_operator.harness.sandbox.qbo_query import Condition, QueryError, execute, parse, parse_datetime, to_micros
from qbo_operator.harness.sandbox.qbo_store import Company
from qbo_operator.harness.sandbox.qbo_values import ENTITIES, dumps, envelope_time, intuit_time

if TYPE_CHECKING:
    from qbo_operator.harness.sandbox.qbo import QboSandbox

CDC_CAP = 1000
CDC_LOOKBACK = timedelta(days=30)
_BY_PATH = {segment: name for name, segment in ENTITIES.items()}
_BY_NAME = {name.lower(): name for name in ENTITIES}


# --- throttling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThrottleLimits:
    """Per-realm limits; None turns one off. Defaults are Intuit's (docs/qbo.md §4.2)."""

    per_minute: int | None = 500
    per_second: int | None = 10
    concurrent: int | None = 10
    format: Literal["json", "xml"] = "json"
    retry_after: int | None = None  # seconds for a Retry-After header; Intuit sends none


INTUIT_LIMITS = ThrottleLimits()


def limits_json(limits: ThrottleLimits | None) -> dict[str, Any] | None:
    """The limits as the control API and `state()` show them (None: no throttling)."""
    return None if limits is None else asdict(limits)


@dataclass
class _RealmLoad:
    recent: deque[float] = field(default_factory=deque)
    in_flight: int = 0


class Throttle:
    """Sliding-window counters per realm on a monotonic clock (injectable for tests)."""

    def __init__(self, limits: ThrottleLimits | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        self._load: dict[str, _RealmLoad] = {}

    def enter(self, realm_id: str) -> str | None:
        """Admit a request (and count it) or return which limit it breaks."""
        limits = self.limits
        load = self._load.setdefault(realm_id, _RealmLoad())
        if limits is None:
            load.in_flight += 1
            return None
        now = self.clock()
        recent = load.recent
        while recent and recent[0] <= now - 60.0:
            recent.popleft()
        if limits.concurrent is not None and load.in_flight >= limits.concurrent:
            return "concurrent"
        if limits.per_minute is not None and len(recent) >= limits.per_minute:
            return "per_minute"
        if limits.per_second is not None:
            last_second = 0
            for stamp in reversed(recent):
                if stamp <= now - 1.0:
                    break
                last_second += 1
            if last_second >= limits.per_second:
                return "per_second"
        recent.append(now)
        load.in_flight += 1
        return None

    def leave(self, realm_id: str) -> None:
        self._load[realm_id].in_flight -= 1

    def in_flight(self, realm_id: str) -> int:
        load = self._load.get(realm_id)
        return load.in_flight if load else 0


# --- envelopes --------------------------------------------------------------------------------


def qbo_json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=dumps(payload), status=status, content_type="application/json", charset="UTF-8")


def fault(
    status: int, code: str, message: str, detail: str, kind: str, now: datetime, element: str | None = None
) -> web.Response:
    error: dict[str, Any] = {"Message": message, "Detail": detail, "code": code}
    if element is not None:
        error["element"] = element
    return qbo_json({"Fault": {"Error": [error], "type": kind}, "time": envelope_time(now)}, status)


def auth_fault(reason: str, now: datetime) -> web.Response:
    """The lower-case 401 shape Intuit's gateway returns for bad or expired access tokens."""
    detail = {
        "expired": "Token expired",
        "malformed": "Malformed bearer token: too short or too long",
        "invalid": "Token revoked or invalid",
    }[reason]
    body: dict[str, Any] = {
        "warnings": None,
        "intuitObject": None,
        "fault": {
            "error": [
                {
                    "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                    "detail": detail,
                    "code": "3200",
                    "element": None,
                }
            ],
            "type": "AUTHENTICATION",
        },
        "report": None,
        "queryResponse": None,
        "batchItemResponse": [],
        "attachableResponse": [],
        "syncErrorResponse": None,
        "requestId": None,
        "time": int(now.timestamp() * 1000),
        "status": None,
        "cdcresponse": [],
    }
    resp = qbo_json(body, 401)
    resp.headers["WWW-Authenticate"] = 'Bearer realm="Intuit", error="invalid_token"'
    return resp


def _xml(status: int, kind: str, code: str, message: str, detail: str, now: datetime) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="{envelope_time(now)}">'
        f'<Fault type="{kind}"><Error code="{code}"><Message>{escape(message)}</Message>'
        f"<Detail>{escape(detail)}</Detail></Error></Fault></IntuitResponse>"
    )
    return web.Response(text=body, status=status, content_type="application/xml", charset="UTF-8")


_THROTTLE = (
    "message=ThrottleExceeded; errorCode=003001; statusCode=429",
    "The request limit was reached. Try again later",
)
_SYSTEM = (
    "An application error has occurred while processing your request",
    "System Failure Error: An unexpected error occurred while accessing or saving your data. "
    "Please wait a few minutes and try again. If the problem persists, contact customer support.",
)


def throttle_fault(now: datetime, fmt: str = "json", retry_after: int | None = None) -> web.Response:
    if fmt == "xml":
        resp = _xml(429, "SERVICE", "3001", *_THROTTLE, now)
    else:
        resp = fault(429, "3001", *_THROTTLE, "SERVICE", now)
    if retry_after is not None:
        resp.headers["Retry-After"] = str(retry_after)
    return resp


def renderers(sb: QboSandbox) -> dict[str, Renderer]:
    """Fault-injection renderers in Intuit's shapes (OAuth paths get OAuth-style bodies)."""

    def status(request: web.Request, rule: FaultRule) -> web.StreamResponse:
        code = rule.status or 500
        if not request.path.startswith("/v3/"):
            word = "temporarily_unavailable" if code >= 500 else "invalid_request"
            return web.json_response({"error": word}, status=code)
        if code == 401:
            return auth_fault("expired", sb.now())
        if code >= 500:
            return fault(code, "10000", *_SYSTEM, "SystemFault", sb.now())
        return fault(
            code,
            "6000",
            "A business validation error has occurred while processing your request",
            "Business Validation Error: injected",
            "ValidationFault",
            sb.now(),
        )

    def throttle(request: web.Request, rule: FaultRule) -> web.StreamResponse:
        fmt = sb.throttle.limits.format if sb.throttle.limits else "json"
        return throttle_fault(sb.now(), fmt, rule.retry_after)

    def xml_fault(request: web.Request, rule: FaultRule) -> web.StreamResponse:
        code = rule.status or 500
        if code == 401:
            return _xml(
                401,
                "AuthenticationFault",
                "100",
                "General Authentication Error",
                "AuthenticationErrorGeneral: SRV-110-Authentication Failure , statusCode: 401",
                sb.now(),
            )
        if code == 429:
            return _xml(429, "SERVICE", "3001", *_THROTTLE, sb.now())
        return _xml(code, "SystemFault", "10000", *_SYSTEM, sb.now())

    return {"status": status, "throttle": throttle, "xml_fault": xml_fault}


# --- the guard --------------------------------------------------------------------------------


def guard_middleware(sb: QboSandbox) -> Middleware:
    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        realm_id = request.match_info.get("realm")
        if realm_id is None or not request.path.startswith("/v3/company/"):
            return await handler(request)
        with sb.lock:
            now = sb.now()
            try:
                grant = sb.authority.authenticate(request.headers.get("Authorization"), now)
            except AccessDenied as exc:
                sb.requests["unauthorized"] += 1
                return auth_fault(exc.reason, now)
            if grant.realm_id != realm_id or realm_id not in sb.companies:
                sb.requests["forbidden"] += 1
                return fault(
                    403,
                    "3100",
                    "message=AuthorizationFailed; errorCode=003100; statusCode=403",
                    "Authorization failed: the token does not grant access to this company",
                    "SERVICE",
                    now,
                )
            broken = sb.throttle.enter(realm_id)
        if broken is not None:
            sb.requests["throttled"] += 1
            sb.realm_requests[realm_id]["throttled"] += 1
            limits = sb.throttle.limits
            return throttle_fault(now, limits.format if limits else "json", limits.retry_after if limits else None)
        try:
            return await handler(request)
        finally:
            sb.throttle.leave(realm_id)

    return guard


# --- handlers ---------------------------------------------------------------------------------


def _company(sb: QboSandbox, request: web.Request) -> Company:
    return sb.companies[request.match_info["realm"]]


def _query_fault(exc: QueryError, now: datetime) -> web.Response:
    message = "Error parsing query" if exc.code == "4000" else "Invalid query"
    return fault(400, exc.code, message, exc.detail, "ValidationFault", now)


# Name lists whose inactive rows a query returns only when its WHERE asks about `Active` (Singer's
# `Active IN (true, false)`); docs/qbo.md correction 7.
_ACTIVE_ONLY = ("PaymentMethod", "Customer", "Item")


def run_query(company: Company, statement: str, tie_rng: random.Random | None = None) -> dict[str, Any]:
    """The QueryResponse body for one statement (raises QueryError); ties shuffled by `tie_rng` if given."""
    query = parse(statement)
    entity = _BY_NAME.get(query.entity.lower())
    if entity is None:
        raise QueryError(f"Invalid entity name: {query.entity}", code="4001")
    if entity in _ACTIVE_ONLY and not any(c.path == "active" for c in query.where):
        query = replace(query, where=(*query.where, Condition("active", "=", (True,))))
    result = execute(query, company.tables[entity], company.tz, tie_rng)
    if query.count:
        return {"totalCount": result.total}
    if not result.rows:
        return {}
    return {entity: result.rows, "startPosition": query.start_position, "maxResults": len(result.rows)}


class _AccountingApi:
    """The Accounting API's handlers, bound to one sandbox (the guard middleware has already let the request in)."""

    def __init__(self, sb: QboSandbox) -> None:
        self.sb = sb

    async def query(self, request: web.Request) -> web.Response:
        sb = self.sb
        if request.method == "POST":
            statement = (await request.read()).decode("utf-8", errors="replace")
        else:
            statement = request.query.get("query", "")
        with sb.lock:
            company = _company(sb, request)
            try:
                body = run_query(company, statement, sb.tie_rng())
            except QueryError as exc:
                return _query_fault(exc, sb.now())
            # Serialise under the lock: rows are live dicts another thread may be writing.
            return qbo_json({"QueryResponse": body, "time": envelope_time(sb.now(), company.tz)})

    async def read(self, request: web.Request) -> web.Response:
        segment = request.match_info["entity"]
        row_id = request.match_info["id"]
        with self.sb.lock:
            now = self.sb.now()
            entity = _BY_PATH.get(segment)
            if entity is None:
                detail = (
                    f"Operation Could not find resource for relative : /{segment}/{row_id} of full path: "
                    f"{request.path} is not supported."
                )
                return fault(400, "500", "Unsupported Operation", detail, "ValidationFault", now)
            company = _company(self.sb, request)
            if entity == "CompanyInfo" and row_id == company.realm_id:
                row_id = "1"  # Intuit reads CompanyInfo by the realm id; the entity's own Id is "1"
            row = company.tables[entity].rows.get(row_id)
            if row is None:
                detail = (
                    "Object Not Found : Something you're trying to use has been made inactive. Check the "
                    f"fields with accounts, customers, items, vendors or employees. ({entity} {row_id})"
                )
                return fault(400, "610", "Object Not Found", detail, "ValidationFault", now, element="")
            return qbo_json({entity: row, "time": envelope_time(now, company.tz)})

    async def cdc(self, request: web.Request) -> web.Response:
        with self.sb.lock:
            now = self.sb.now()
            company = _company(self.sb, request)
            names = [n.strip() for n in request.query.get("entities", "").split(",") if n.strip()]
            since_text = request.query.get("changedSince", "")
            since = parse_datetime(since_text, company.tz) if since_text else None
            refusal = cdc_refusal(names, since_text, since, now)
            if refusal is not None:
                return fault(400, *refusal, "ValidationFault", now)
            assert since is not None  # cdc_refusal refuses a missing changedSince
            return qbo_json(
                {
                    "CDCResponse": [{"QueryResponse": changes(company, names, since)}],
                    "time": envelope_time(now, company.tz),
                }
            )


def cdc_refusal(
    names: list[str], since_text: str, since: datetime | None, now: datetime
) -> tuple[str, str, str] | None:
    """Why Intuit refuses a CDC request, as (code, message, detail); None when it answers it."""
    if not names:
        return "4000", "Error parsing query", "QueryParserError: entities is required"
    unknown = [n for n in names if n.lower() not in _BY_NAME or n.lower() == "companyinfo"]
    if unknown:
        return "4001", "Invalid query", f"QueryValidationError: Invalid entity name: {unknown[0]}"
    if since is None:
        return "4000", "Error parsing query", f"QueryParserError: changedSince {since_text!r} is not a date-time"
    if since < now - CDC_LOOKBACK:
        return "4001", "Invalid query", "QueryValidationError: changedSince must be within the last 30 days"
    return None


def routes(sb: QboSandbox) -> list[web.RouteDef]:
    api = _AccountingApi(sb)
    realm = "/v3/company/{realm}"
    return [
        web.get(f"{realm}/query", api.query),
        web.post(f"{realm}/query", api.query),
        web.get(f"{realm}/cdc", api.cdc),
        web.get(realm + "/{entity}/{id}", api.read),
    ]


def changes(company: Company, names: list[str], since: datetime) -> list[dict[str, Any]]:
    """One QueryResponse per entity named: the rows changed at or after `since` (full payloads, voided
    and updated ones included) and Deleted stubs, by LastUpdatedTime. At most 1000 objects in all,
    shared across the entities: when more changed, the oldest 1000 by LastUpdatedTime (then by entity
    as named, then by Id) are returned (docs/qbo.md §2.4 says which parts of this are assumed)."""
    since_us = to_micros(since)
    found: list[tuple[int, int, int, str, Mapping[str, Any]]] = []
    entities = [_BY_NAME[name.lower()] for name in names]
    for rank, entity in enumerate(entities):
        table = company.tables[entity]
        for row in table.rows.values():
            updated = table.updated_of(row)
            if updated >= since_us:
                found.append((updated, rank, int(row["Id"]), entity, row))
        for stub in company.deleted:
            if stub.entity == entity and to_micros(stub.time) >= since_us:
                body = {
                    "domain": "QBO",
                    "status": "Deleted",
                    "Id": stub.id,
                    "MetaData": {"LastUpdatedTime": intuit_time(stub.time, company.tz)},
                }
                found.append((to_micros(stub.time), rank, int(stub.id), entity, body))
    found.sort(key=lambda t: t[:3])
    kept: dict[str, list[Mapping[str, Any]]] = {entity: [] for entity in entities}
    for _, _, _, entity, changed in found[:CDC_CAP]:
        kept[entity].append(changed)
    return [
        {entity: rows, "startPosition": 1, "maxResults": len(rows)} if rows else {} for entity, rows in kept.items()
    ]

"""QuickBooks Online Accounting API client (QBO.md §2-§4): payment pages and bulk invoice reads.

Only the fields the Green Check contract needs are modelled; pydantic drops everything else
(addresses, e-mails, phone numbers, private notes) at this boundary, so it can never leave QBO.
Money is parsed from JSON as `Decimal` (never float) so cents stay exact.

Transport rules (DESIGN §5.7): POST `application/text` queries with `minorversion=75`; at most 10
concurrent requests, under 500 a minute and 10 a second per realm, enforced here; 429 waits `Retry-After` (else
60 s, configurable) and retries; 5xx, timeouts and malformed bodies back off exponentially with
jitter, bounded; 401 asks the token source for a refreshed token once and retries."""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_random_exponential

from qbo_operator.core.redaction import redact

log = logging.getLogger(__name__)

MINOR_VERSION = "75"
MAX_RESULTS = 1000
# QBO ids are digit strings; anything else is refused before it reaches a query statement.
_ID_RE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


# ---------------------------------------------------------------------------------------------
# Models (QBO.md §3): the subset we read.


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


# ---------------------------------------------------------------------------------------------
# Errors


class QboError(Exception):
    """A QBO call that failed for good. Messages name what happened and never carry a token."""

    def __init__(self, message: str, intuit_tid: str | None = None) -> None:
        super().__init__(message + (f" (intuit_tid {intuit_tid})" if intuit_tid else ""))
        self.intuit_tid = intuit_tid


class QboUnavailable(QboError):
    """Throttling, 5xx, timeouts or malformed answers that outlasted the retry budget."""


class QboAuthError(QboError):
    """401 after a fresh token, or 403: the grant does not allow the call."""


class QboRequestError(QboError):
    """Intuit refused the request itself (400 ValidationFault, other 4xx): a bug or bad data, not a fault."""


class QboDataError(QboError):
    """An entity we cannot read (a required field missing or garbled): the run stops rather than guess."""


class _Transient(Exception):
    def __init__(self, reason: str, intuit_tid: str | None = None) -> None:
        super().__init__(reason)
        self.intuit_tid = intuit_tid


class _Throttled(_Transient):
    def __init__(self, reason: str, delay: float, intuit_tid: str | None = None) -> None:
        super().__init__(reason, intuit_tid)
        self.delay = delay


class _Unauthorized(Exception):
    def __init__(self, token: str, reason: str, intuit_tid: str | None) -> None:
        super().__init__(reason)
        self.token = token
        self.intuit_tid = intuit_tid


# ---------------------------------------------------------------------------------------------
# Client


class TokenSource(Protocol):
    """Where the client gets its bearer token; the sync's TokenManager implements it."""

    async def access_token(self) -> str: ...

    async def refreshed_access_token(self, rejected: str) -> str:
        """A token newer than `rejected` (refreshing once, persisted first); raises if the grant is dead."""
        ...


@dataclass(frozen=True)
class QboPolicy:
    """Retry and pacing knobs; defaults follow Intuit's limits, tests shorten the waits."""

    throttle_wait: float = 60.0  # 429 without Retry-After ("wait 60 seconds", QBO.md §4.2)
    max_throttle_wait: float = 300.0
    throttle_retries: int = 8
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    transient_retries: int = 5  # 5xx, timeouts, malformed bodies
    timeout: float = 60.0
    max_concurrency: int = 10
    max_per_minute: int = 480  # under Intuit's 500/min per realm
    max_per_second: int = 8  # under Intuit's 10/s per realm and app


class RateLimiter:
    """Sliding one-minute window: never more than `limit` request starts in any 60 s."""

    def __init__(
        self,
        limit: int,
        window: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.sleep = sleep
        self._starts: collections.deque[float] = collections.deque()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:
            while True:
                now = self.clock()
                while self._starts and now - self._starts[0] >= self.window:
                    self._starts.popleft()
                if len(self._starts) < self.limit:
                    self._starts.append(now)
                    return
                await self.sleep(self.window - (now - self._starts[0]))


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def qbo_time(value: datetime) -> str:
    """A query literal: ISO 8601 in UTC with an explicit offset (QBO.md §2.3)."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


def _second(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(microsecond=0)


class QboClient:
    """One realm's Accounting API. `requests` counts every HTTP attempt (retries included)."""

    def __init__(
        self,
        api_url: str,
        realm_id: str,
        tokens: TokenSource,
        policy: QboPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.check_realm_id(realm_id)
        self.policy = policy or QboPolicy()
        self.realm_id = realm_id
        self._base = f"{api_url.rstrip('/')}/v3/company/{realm_id}"
        self._tokens = tokens
        self._sleep = sleep
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(self.policy.timeout, connect=10.0))
        self._sem = asyncio.Semaphore(self.policy.max_concurrency)
        self._limiters = (RateLimiter(self.policy.max_per_minute), RateLimiter(self.policy.max_per_second, 1.0))
        self.requests = 0

    @staticmethod
    def check_realm_id(realm_id: str) -> None:
        if not _ID_RE.match(realm_id):
            raise ValueError("realm id must be an Intuit company id (digits)")

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> QboClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- queries ------------------------------------------------------------------------------

    async def query(self, statement: str) -> dict[str, Any]:
        """Run one query statement; returns the `QueryResponse` object (`{}` when nothing matched)."""
        body = await self._request(statement)
        qr = body.get("QueryResponse")
        if not isinstance(qr, dict):
            raise QboUnavailable("QuickBooks answered a query without a QueryResponse object")
        return qr

    async def _entities(self, entity: str, statement: str) -> list[dict[str, Any]]:
        qr = await self.query(statement)
        rows = qr.get(entity, [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise QboUnavailable(f"QuickBooks answered a {entity} query with a malformed {entity} list")
        return rows

    async def payment_pages(self, since: datetime, page_size: int = MAX_RESULTS) -> AsyncIterator[list[Payment]]:
        """Payments created at or after `since`, oldest first, one page at a time (memory stays flat).

        Keyset paging on CreateTime: each next page starts at the last page's final second, so a
        payment deleted in QBO during the run cannot shift an unseen one past a STARTPOSITION offset.
        The payments of that second already seen are re-read and dropped by id when they are few (≤ 1%
        of a page: robust even if Intuit orders equal CreateTimes differently from one query to the
        next); when many share the second (bulk imports) they are skipped with an offset inside it."""
        if not 1 <= page_size <= MAX_RESULTS:
            raise ValueError(f"page size must be 1..{MAX_RESULTS}")
        lower = _second(since)
        seen_at_lower: set[str] = set()
        position = 1
        while True:
            statement = (
                f"SELECT * FROM Payment WHERE MetaData.CreateTime >= '{qbo_time(lower)}' "  # noqa: S608
                f"ORDERBY MetaData.CreateTime STARTPOSITION {position} MAXRESULTS {page_size}"
            )
            rows = await self._entities("Payment", statement)
            page = [_parse(Payment, row) for row in rows]
            fresh = [p for p in page if p.id not in seen_at_lower]
            if fresh:
                yield fresh
            if len(rows) < page_size:
                return
            last = _second(page[-1].create_time)
            if last != lower:
                lower, seen_at_lower = last, set()
            seen_at_lower.update(p.id for p in page if _second(p.create_time) == lower)
            reread = len(seen_at_lower) <= max(1, page_size // 100)
            position = 1 if reread else len(seen_at_lower) + 1

    async def read_invoices(self, ids: Sequence[str], chunk: int = MAX_RESULTS) -> dict[str, Invoice]:
        """The invoices among `ids`, read in bulk (`Id IN (...)`, up to `chunk` ids a request).

        Ids that are missing, deleted or not id-shaped are simply absent from the result."""
        wanted = [i for i in dict.fromkeys(ids) if _ID_RE.match(i)]
        found: dict[str, Invoice] = {}
        for start in range(0, len(wanted), chunk):
            part = wanted[start : start + chunk]
            in_list = ",".join(f"'{i}'" for i in part)
            statement = f"SELECT * FROM Invoice WHERE Id IN ({in_list}) STARTPOSITION 1 MAXRESULTS {MAX_RESULTS}"  # noqa: S608
            for row in await self._entities("Invoice", statement):
                invoice = _parse(Invoice, row)
                found[invoice.id] = invoice
        return found

    # --- transport ----------------------------------------------------------------------------

    async def _request(self, statement: str) -> dict[str, Any]:
        token = await self._tokens.access_token()
        for attempt in range(2):
            try:
                return await self._with_retries(statement, token)
            except _Unauthorized as exc:
                if attempt:
                    raise QboAuthError(
                        f"QuickBooks rejected the access token even after a refresh: {exc}", exc.intuit_tid
                    ) from None
                log.info("QuickBooks answered 401 (%s); refreshing the access token once", exc)
                token = await self._tokens.refreshed_access_token(exc.token)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _with_retries(self, statement: str, token: str) -> dict[str, Any]:
        counts = {"throttled": 0, "transient": 0}
        p = self.policy
        backoff = wait_random_exponential(multiplier=p.backoff_initial, max=p.backoff_max)

        def stop(state: RetryCallState) -> bool:
            exc = state.outcome.exception() if state.outcome else None
            kind = "throttled" if isinstance(exc, _Throttled) else "transient"
            counts[kind] += 1
            limit = p.throttle_retries if kind == "throttled" else p.transient_retries
            return counts[kind] > limit

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            if isinstance(exc, _Throttled):
                return min(exc.delay, p.max_throttle_wait)
            return float(backoff(state))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            wait_s = state.next_action.sleep if state.next_action else 0.0
            tid = getattr(exc, "intuit_tid", None)
            log.warning("QuickBooks: %s%s; retrying in %.1fs", exc, f" (intuit_tid {tid})" if tid else "", wait_s)

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop,
            wait=wait,
            sleep=self._sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            result: dict[str, Any] = await retrying(self._send, statement, token)
        except _Throttled as exc:
            raise QboUnavailable(
                f"QuickBooks kept throttling (429) after {p.throttle_retries} waits: {exc}", exc.intuit_tid
            ) from None
        except _Transient as exc:
            raise QboUnavailable(
                f"QuickBooks is unavailable after {p.transient_retries + 1} attempts: {exc}", exc.intuit_tid
            ) from None
        return result

    async def _send(self, statement: str, token: str) -> dict[str, Any]:
        async with self._sem:
            for limiter in self._limiters:
                await limiter.acquire()
            self.requests += 1
            try:
                resp = await self._http.post(
                    f"{self._base}/query",
                    params={"minorversion": MINOR_VERSION},
                    content=statement.encode(),
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Accept": "application/json",
                        "Content-Type": "application/text",
                    },
                )
            except httpx.TimeoutException:
                raise _Transient("the request timed out") from None
            except httpx.TransportError as exc:
                raise _Transient(f"connection failed ({type(exc).__name__})") from None
        return self._interpret(resp, token)

    def _interpret(self, resp: httpx.Response, token: str) -> dict[str, Any]:
        tid = resp.headers.get("intuit_tid")
        status = resp.status_code
        body, fault = _decode(resp)
        if status == 200 and isinstance(body, dict) and fault is None:
            return body
        what = fault.summary() if fault else _describe_body(resp)
        if status == 200:
            if fault is not None:
                raise QboRequestError(f"QuickBooks answered with a fault: {what}", tid)
            raise _Transient(f"QuickBooks answered 200 with {what}", tid)
        if status == 401:
            raise _Unauthorized(token, f"HTTP 401: {what}", tid)
        if status == 429 or (fault is not None and "3001" in fault.codes):
            delay = _retry_after(resp.headers.get("Retry-After"))
            raise _Throttled(
                f"HTTP {status} throttled: {what}", self.policy.throttle_wait if delay is None else delay, tid
            )
        if status == 403:
            raise QboAuthError(
                f"QuickBooks refused access (HTTP 403: {what}); the app may no longer be authorized for this company",
                tid,
            )
        if status >= 500:
            raise _Transient(f"HTTP {status}: {what}", tid)
        raise QboRequestError(f"QuickBooks refused the request (HTTP {status}): {what}", tid)


def _decode(resp: httpx.Response) -> tuple[Any, Fault | None]:
    """The JSON body (money as Decimal) and any fault in it; (None, fault|None) when not JSON."""
    text = resp.text
    try:
        body = json.loads(resp.content, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError):
        return None, Fault.from_xml(text)
    return body, Fault.from_json(body)


def _describe_body(resp: httpx.Response) -> str:
    text = resp.text.strip()
    ctype = resp.headers.get("content-type", "")
    if not text:
        return "an empty body"
    if "html" in ctype or text[:15].lower().startswith(("<!doctype", "<html")):
        title = re.search(r"<title>(.*?)</title>", text, re.S | re.I)
        return f"an HTML page ({redact(title.group(1), 80)})" if title else "an HTML page"
    if text[:1] in "{[":
        return f"malformed JSON (truncated?), {len(resp.content)} bytes"
    return f"an unexpected body: {redact(text, 120)!r}"


M = TypeVar("M", bound=BaseModel)


def _parse(model: type[M], row: dict[str, Any]) -> M:
    try:
        return model.model_validate(row)
    except ValidationError as exc:
        ident = row.get("Id", "?")
        problems = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()[:3])
        raise QboDataError(
            f"QuickBooks returned a {model.__name__} (Id {redact(str(ident), 40)}) that cannot be read: {problems}"
        ) from None

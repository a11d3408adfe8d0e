"""QuickBooks Online Accounting API client (docs/qbo.md §2-§4): payment pages and bulk invoice reads.

The entities it reads, and why only a subset, are in `qbo_models`; money is parsed from JSON as
`Decimal` (never float) so cents stay exact.

Transport rules (docs/design.md §5, item 7): POST `application/text` queries with `minorversion=75`; at most 10
concurrent requests, under 500 a minute and 10 a second per realm, enforced here; 429 waits `Retry-After` (else
60 s, configurable) and retries; 5xx, timeouts and malformed bodies back off exponentially with
jitter, bounded (`transport.Transport`); 401 asks the token source for a refreshed token once and retries."""

from __future__ import annotations

import asyncio
import collections
import functools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from qbo_operator.core import names
from qbo_operator.core.config import QBO_MAX_RESULTS, Tuning
from qbo_operator.core.redaction import redact
from qbo_operator.sync.qbo_models import Changes, Changing, Fault, Invoice
from qbo_operator.sync.transport import Throttled, TimedOut, Transient, Transport, TransportClient, retry_after

log = logging.getLogger(__name__)

MAX_RESULTS = QBO_MAX_RESULTS
MIN_PAGE = 10  # a 504 halves a page down to this, then retries it as it is
MAX_SECOND_PASSES = 5  # reads of one saturated second while rows keep leaving it
C = TypeVar("C", bound=Changing)
# QBO ids are digit strings; anything else is refused before it reaches a query statement.
_ID_RE = re.compile(r"^[0-9A-Za-z_-]{1,64}$")


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


class _TooSlow(Exception):
    """A 504 or a timeout on a request that can be made smaller (a page, a bulk read): not retried as is."""


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

    throttle_wait: float = 60.0  # 429 without Retry-After ("wait 60 seconds", docs/qbo.md §4.2)
    max_throttle_wait: float = 300.0
    throttle_retries: int = 8
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    transient_retries: int = 5  # 5xx, timeouts, malformed bodies
    timeout: float = 60.0
    max_concurrency: int = 10
    max_per_minute: int = 480  # under Intuit's 500/min per realm
    max_per_second: int = 8  # under Intuit's 10/s per realm and app

    @classmethod
    def from_tuning(cls, tuning: Tuning) -> QboPolicy:
        return cls(throttle_wait=tuning.throttle_wait, **tuning.retry())


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


def qbo_time(value: datetime) -> str:
    """A query literal: ISO 8601 in UTC with an explicit offset (docs/qbo.md §2.3)."""
    return value.astimezone(UTC).replace(microsecond=0).isoformat()


def _second(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(microsecond=0)


class QboClient(TransportClient):
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
        self._transport = Transport("QuickBooks", self.policy, QboUnavailable, id_label="intuit_tid", sleep=sleep)
        self._sem = asyncio.Semaphore(self.policy.max_concurrency)
        self._limiters = (RateLimiter(self.policy.max_per_minute), RateLimiter(self.policy.max_per_second, 1.0))
        self._size = 0  # the page size in use: halved for the rest of the run after a 504 or a timeout

    @staticmethod
    def check_realm_id(realm_id: str) -> None:
        if not _ID_RE.match(realm_id):
            raise ValueError("realm id must be an Intuit company id (digits)")

    # --- queries ------------------------------------------------------------------------------

    async def query(self, statement: str, *, shrinkable: bool = False) -> dict[str, Any]:
        """Run one query statement; returns the `QueryResponse` object (`{}` when nothing matched)."""
        body = await self._request("POST", "/query", content=statement.encode(), shrinkable=shrinkable)
        qr = body.get("QueryResponse")
        if not isinstance(qr, dict):
            raise QboUnavailable("QuickBooks answered a query without a QueryResponse object")
        return qr

    async def _entities(self, entity: str, statement: str, *, shrinkable: bool = False) -> list[dict[str, Any]]:
        qr = await self.query(statement, shrinkable=shrinkable)
        rows = qr.get(entity, [])
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise QboUnavailable(f"QuickBooks answered a {entity} query with a malformed {entity} list")
        return rows

    async def changed(
        self, model: type[C], since: datetime, *, created_since: datetime | None = None, page_size: int = MAX_RESULTS
    ) -> AsyncIterator[list[C]]:
        """Entities whose LastUpdatedTime is at or after `since`, oldest change first, one page at a time.

        Keyset paging on LastUpdatedTime (whole seconds at Intuit): each next query starts at the previous
        page's last second and drops the rows of that second already seen, so neither a row deleted during
        the run nor ties returned in a different order by each query (Intuit documents no tiebreaker) can
        shift an unseen row past an offset. A second holding a whole page is read on its own, ordered by
        Id, and its row count is checked. `created_since` also filters on CreateTime."""
        if not 1 <= page_size <= MAX_RESULTS:
            raise ValueError(f"page size must be 1..{MAX_RESULTS}")
        entity = model.__name__
        created = f" AND Metadata.CreateTime >= '{qbo_time(created_since)}'" if created_since else ""
        lower, seen = _second(since), set[str]()
        self._size = min(self._size, page_size) if self._size else page_size
        while True:
            rows, asked = await self._shrinking(
                entity,
                f"SELECT * FROM {entity} WHERE Metadata.LastUpdatedTime >= '{qbo_time(lower)}'{created} "  # noqa: S608
                "ORDERBY Metadata.LastUpdatedTime STARTPOSITION 1",
            )
            page = [_parse(model, row) for row in rows]
            if fresh := [r for r in page if r.id not in seen]:
                yield fresh
            if len(rows) < asked:
                return
            last = _second(page[-1].changed_at)
            if last != lower:
                lower, seen = last, set()
            seen.update(r.id for r in page if _second(r.changed_at) == lower)
            if _second(page[0].changed_at) == last:  # a whole page in one second: read it alone, by Id
                async for part in self._one_second(model, lower, created, seen):
                    yield part
                lower, seen = lower + timedelta(seconds=1), set()

    async def _one_second(
        self, model: type[C], second: datetime, created: str, seen: set[str]
    ) -> AsyncIterator[list[C]]:
        """Every row changed in one second, paged by Id (offsets are stable while nothing in the second
        changes). A row changed again during the pass leaves the second (to be read later at its new time)
        and shifts the offsets behind it, so the pass is repeated until Intuit's count of the second is the
        same before and after it; a pass that returns fewer rows than counted stops the run."""
        entity, at = model.__name__, qbo_time(second)
        where = f"WHERE Metadata.LastUpdatedTime = '{at}'{created}"
        ids = set(seen)
        count = await self._count(entity, where)
        for _ in range(MAX_SECOND_PASSES):
            position, this_pass = 1, set[str]()
            while True:
                rows, asked = await self._shrinking(
                    entity,
                    f"SELECT * FROM {entity} {where} ORDERBY Id STARTPOSITION {position}",  # noqa: S608
                )
                page = [_parse(model, row) for row in rows]
                if fresh := [r for r in page if r.id not in ids]:
                    yield fresh
                ids.update(r.id for r in page)
                this_pass.update(r.id for r in page)
                position += len(rows)
                if len(rows) < asked:
                    break
            before, count = count, await self._count(entity, where)
            if count == before:
                if len(this_pass) < count:
                    raise QboDataError(
                        f"QuickBooks counts {count} {entity} rows changed at {at} but paging by Id returned "
                        f"{len(this_pass)}; the run stops rather than skip any (the watermark stays before it)"
                    )
                return
        raise QboUnavailable(f"{entity} rows changed at {at} kept changing while read; the next run reads them")

    async def _count(self, entity: str, where: str) -> int:
        qr = await self.query(f"SELECT COUNT(*) FROM {entity} {where}")  # noqa: S608
        total = qr.get("totalCount")
        if not isinstance(total, int):
            raise QboUnavailable(f"QuickBooks answered a {entity} count without a totalCount")
        return total

    async def _shrinking(self, entity: str, head: str) -> tuple[list[dict[str, Any]], int]:
        """One page of `head MAXRESULTS size` and the size asked (a shorter answer is the last page); a 504 or
        a timeout halves the size, kept for the rest of the run."""
        while True:
            asked = self._size
            try:
                rows = await self._entities(entity, f"{head} MAXRESULTS {asked}", shrinkable=asked > MIN_PAGE)
            except _TooSlow as exc:
                self._size = max(MIN_PAGE, asked // 2)
                log.warning("QuickBooks: %s on a %d-row page; asking for %d rows a page", exc, asked, self._size)
                continue
            return rows, asked

    async def read(self, model: type[C], ids: Sequence[str], chunk: int = MAX_RESULTS) -> dict[str, C]:
        """The entities among `ids`, read in bulk (`Id IN (...)`, up to `chunk` ids a request; a 504 or a
        timeout halves the chunk). Ids that are missing, deleted or not id-shaped are absent from the result."""
        entity = model.__name__
        wanted = [i for i in dict.fromkeys(ids) if _ID_RE.match(i)]
        found: dict[str, C] = {}
        start = 0
        while start < len(wanted):
            part = wanted[start : start + chunk]
            in_list = ",".join(f"'{i}'" for i in part)
            statement = f"SELECT * FROM {entity} WHERE Id IN ({in_list}) STARTPOSITION 1 MAXRESULTS {MAX_RESULTS}"  # noqa: S608
            try:
                rows = await self._entities(entity, statement, shrinkable=len(part) > 1)
            except _TooSlow as exc:
                chunk = max(1, len(part) // 2)
                log.warning("QuickBooks: %s reading %d ids; reading %d at a time", exc, len(part), chunk)
                continue
            for row in rows:
                item = _parse(model, row)
                found[item.id] = item
            start += len(part)
        return found

    async def read_invoices(self, ids: Sequence[str], chunk: int = MAX_RESULTS) -> dict[str, Invoice]:
        return await self.read(Invoice, ids, chunk)

    async def cdc(self, entities: Sequence[str], since: datetime) -> Changes:
        """Change Data Capture: every listed entity changed at or after `since` (full payloads, deletes as stubs).

        Intuit caps one answer at 1,000 objects across all entities (`Changes.complete` says whether it was
        reached) and refuses a `since` older than 30 days."""
        body = await self._request(
            "GET", "/cdc", params={"entities": ",".join(entities), "changedSince": qbo_time(since)}
        )
        return Changes.parse(body, entities, _parse)

    # --- transport    # --- transport ----------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        shrinkable: bool = False,
    ) -> dict[str, Any]:
        token = await self._tokens.access_token()
        call = functools.partial(self._send, method, path, content, params or {}, shrinkable)
        for attempt in range(2):
            try:
                return await self._transport.retrying(functools.partial(call, token))
            except _Unauthorized as exc:
                if attempt:
                    raise QboAuthError(
                        f"QuickBooks rejected the access token even after a refresh: {exc}", exc.intuit_tid
                    ) from None
                log.info("QuickBooks answered 401 (%s); refreshing the access token once", exc)
                token = await self._tokens.refreshed_access_token(exc.token)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send(
        self, method: str, path: str, content: bytes | None, params: dict[str, str], shrinkable: bool, token: str
    ) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        if content is not None:
            headers["Content-Type"] = "application/text"
        async with self._sem:
            for limiter in self._limiters:
                await limiter.acquire()
            try:
                resp = await self._transport.send(
                    method,
                    f"{self._base}{path}",
                    params={**params, "minorversion": names.QBO_MINOR_VERSION},
                    content=content,
                    headers=headers,
                )
            except TimedOut as exc:
                if shrinkable:
                    raise _TooSlow(str(exc)) from None
                raise
        return self._interpret(resp, token, shrinkable)

    def _interpret(self, resp: httpx.Response, token: str, shrinkable: bool = False) -> dict[str, Any]:
        tid = resp.headers.get("intuit_tid")
        status = resp.status_code
        body, fault = _decode(resp)
        if shrinkable and (status == 504 or (fault is not None and "6002" in fault.codes)):
            raise _TooSlow(f"HTTP {status} gateway timeout")
        if status == 200 and isinstance(body, dict) and fault is None:
            return body
        what = fault.summary() if fault else _describe_body(resp)
        if status == 200:
            if fault is not None:
                raise QboRequestError(f"QuickBooks answered with a fault: {what}", tid)
            raise Transient(f"QuickBooks answered 200 with {what}", tid)
        if status == 401:
            raise _Unauthorized(token, f"HTTP 401: {what}", tid)
        if status == 429 or (fault is not None and "3001" in fault.codes):
            delay = retry_after(resp.headers.get("Retry-After"))
            raise Throttled(
                f"HTTP {status} throttled: {what}", self.policy.throttle_wait if delay is None else delay, tid
            )
        if status == 403:
            raise QboAuthError(
                f"QuickBooks refused access (HTTP 403: {what}); the app may no longer be authorized for this company",
                tid,
            )
        if status >= 500:
            raise Transient(f"HTTP {status}: {what}", tid)
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

"""Fault injection shared by the QBO and Green Check sandboxes (docs/qbo.md §4.2, "Fault injection").

A `Faults` object holds rules (path regex, kind, how often) and an aiohttp middleware applies them.
It is deterministic: the first `skip` matching requests pass, then the rule fires for the next
`count` matches; a `probability` below 1 draws from a `random.Random(seed)`, so a seed replays the
same failures. Each sandbox supplies renderers for its own error shapes; the defaults are generic.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from aiohttp.typedefs import Middleware
from pydantic import BaseModel, ConfigDict, Field, field_validator

FaultKind = Literal["latency", "status", "html_502", "malformed", "truncated", "xml_fault", "throttle"]
FAULT_KINDS: tuple[str, ...] = ("latency", "status", "html_502", "malformed", "truncated", "xml_fault", "throttle")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Renderer = Callable[[web.Request, "FaultRule"], web.StreamResponse]

NGINX_502 = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


class FaultRule(BaseModel):
    """One injected failure. `path` is searched (re.search) in the request path."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: FaultKind
    path: str = ".*"
    method: str | None = None
    count: int | None = Field(default=None, ge=1)
    probability: float = Field(default=1.0, ge=0.0, le=1.0)
    skip: int = Field(default=0, ge=0)
    seconds: float = Field(default=0.0, ge=0.0, le=600.0)
    status: int | None = Field(default=None, ge=100, le=599)
    retry_after: int | None = Field(default=None, ge=0)

    @field_validator("path")
    @classmethod
    def _regex(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"path is not a regular expression: {exc}") from None
        return value

    @field_validator("method")
    @classmethod
    def _upper(cls, value: str | None) -> str | None:
        return value.upper() if value else None


@dataclass
class _Active:
    id: str
    rule: FaultRule
    pattern: re.Pattern[str]
    seen: int = 0
    fired: int = 0

    @property
    def exhausted(self) -> bool:
        return self.rule.count is not None and self.fired >= self.rule.count


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": "injected_fault", "message": message}, status=status)


def _default_status(request: web.Request, rule: FaultRule) -> web.StreamResponse:
    return _json_error(rule.status or 500, "injected server error")


def _default_throttle(request: web.Request, rule: FaultRule) -> web.StreamResponse:
    resp = _json_error(rule.status or 429, "injected rate limit")
    if rule.retry_after is not None:
        resp.headers["Retry-After"] = str(rule.retry_after)
    return resp


def _default_xml(request: web.Request, rule: FaultRule) -> web.StreamResponse:
    body = '<?xml version="1.0" encoding="UTF-8"?><Fault><Error code="500"><Message>injected</Message></Error></Fault>'
    return web.Response(status=rule.status or 500, text=body, content_type="application/xml")


def _html_502(request: web.Request, rule: FaultRule) -> web.StreamResponse:
    return web.Response(status=rule.status or 502, text=NGINX_502, content_type="text/html")


def _malformed(request: web.Request, rule: FaultRule) -> web.StreamResponse:
    body = b'{"QueryResponse": {"Payment": [{"Id": "1",, "TotalAmt": 1.0.0}]'
    return web.Response(status=rule.status or 200, body=body, content_type="application/json")


DEFAULT_RENDERERS: dict[str, Renderer] = {
    "status": _default_status,
    "throttle": _default_throttle,
    "xml_fault": _default_xml,
    "html_502": _html_502,
    "malformed": _malformed,
}


class Faults:
    """Rules plus the middleware that applies them. Thread-safe; exempt paths are never faulted."""

    def __init__(
        self,
        seed: int = 0,
        renderers: Mapping[str, Renderer] | None = None,
        exempt_prefixes: Iterable[str] = ("/_sandbox/",),
    ) -> None:
        self._rng = random.Random(seed)
        self._rules: list[_Active] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.renderers: dict[str, Renderer] = {**DEFAULT_RENDERERS, **(renderers or {})}
        self.exempt_prefixes = tuple(exempt_prefixes)
        self.fired: Counter[str] = Counter()

    def seed(self, seed: int) -> None:
        with self._lock:
            self._rng.seed(seed)

    def add(self, rule: FaultRule | Mapping[str, Any] | None = None, **fields: Any) -> str:
        """Add a rule (a FaultRule, a dict, or keyword fields); returns its id for `remove`."""
        parsed = rule if isinstance(rule, FaultRule) else FaultRule.model_validate({**(rule or {}), **fields})
        with self._lock:
            rule_id = f"f{next(self._ids)}"
            self._rules.append(_Active(rule_id, parsed, re.compile(parsed.path)))
        return rule_id

    def remove(self, rule_id: str) -> bool:
        with self._lock:
            before = len(self._rules)
            self._rules = [r for r in self._rules if r.id != rule_id]
            return len(self._rules) != before

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[dict[str, Any]]:
        """The rules with their counters, for the control API and tests."""
        with self._lock:
            return [
                {"id": r.id, **r.rule.model_dump(), "seen": r.seen, "fired": r.fired, "exhausted": r.exhausted}
                for r in self._rules
            ]

    def choose(self, method: str, path: str) -> FaultRule | None:
        """The first rule that fires for this request (updates the rule's counters)."""
        if path.startswith(self.exempt_prefixes):
            return None
        with self._lock:
            for active in self._rules:
                rule = active.rule
                if active.exhausted or (rule.method and rule.method != method.upper()):
                    continue
                if not active.pattern.search(path):
                    continue
                active.seen += 1
                if active.seen <= rule.skip:
                    continue
                if rule.probability < 1.0 and self._rng.random() >= rule.probability:
                    continue
                active.fired += 1
                self.fired[rule.kind] += 1
                return rule
        return None

    def middleware(self) -> Middleware:
        @web.middleware
        async def faults_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            rule = self.choose(request.method, request.path)
            if rule is None:
                return await handler(request)
            if rule.kind == "latency":
                await asyncio.sleep(rule.seconds)
                return await handler(request)
            if rule.kind == "truncated":
                return await _truncate(request, await handler(request))
            return self.renderers[rule.kind](request, rule)

        return faults_middleware


async def _truncate(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Announce the full Content-Length, send half the body, then drop the connection."""
    body = response.body if isinstance(response, web.Response) else None
    if not isinstance(body, bytes) or len(body) < 2:
        body = b'{"truncated": "' + b"x" * 64 + b'"}'
    stream = web.StreamResponse(status=response.status, headers=response.headers)
    stream.content_length = len(body)
    await stream.prepare(request)
    await stream.write(body[: len(body) // 2])
    transport = request.transport
    if transport is not None:
        transport.abort()
    return stream

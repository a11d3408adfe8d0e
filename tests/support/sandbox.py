"""The QBO sandbox under test: its app's credentials, a clock the test moves, and the OAuth dance over
HTTP as a browser and a client would do it (the fixtures that build sandboxes are in tests/sandbox)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sandbox.qbo_api import ThrottleLimits
from qbo_operator.harness.sandbox.qbo_values import dumps

CLIENT_ID = "ABqbo-sandbox-client-0001"
CLIENT_SECRET = "s3cr3t-qbo-client-secret-value"
REDIRECT_URI = "http://127.0.0.1:8000/oauth/callback"
VERIFIER = "00faeec4-08d0-4996-bb37-698ae19f0149"
SCOPE = "com.intuit.quickbooks.accounting"
START = datetime(2026, 11, 24, 17, 3, 11, tzinfo=UTC)


class FakeClock:
    """A wall clock that only moves when told to."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FakeMonotonic:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


SandboxFactory = Callable[..., QboSandbox]


def snapshot(sb: QboSandbox, realm: str) -> bytes:
    """A company's every table and deletion as bytes: equal bytes, equal books."""
    c = sb.companies[realm]
    return dumps(
        {name: table.ordered() for name, table in c.tables.items()} | {"deleted": [vars(d) for d in c.deleted]}
    )


def realm_of(sb: QboSandbox) -> str:
    return next(iter(sb.companies))


def auth_params(state: str = "st-123", **over: str) -> dict[str, str]:
    return {"client_id": CLIENT_ID, "response_type": "code", "scope": SCOPE, "redirect_uri": REDIRECT_URI,
            "state": state, **over}  # fmt: skip


async def consent(
    http: httpx.AsyncClient, base: str, realm: str, decision: str = "approve", state: str = "st-123"
) -> dict[str, str]:
    """Load the consent page, submit its form as a browser would, return the redirect's query."""
    page = await http.get(f"{base}/connect/oauth2", params=auth_params(state))
    assert page.status_code == 200, page.text
    form = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    assert action is not None
    resp = await http.post(f"{base}{action.group(1)}", data={**form, "realmId": realm, "decision": decision})
    assert resp.status_code == 302, resp.text
    location = resp.headers["Location"]
    assert location.startswith(REDIRECT_URI + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def token_request(
    http: httpx.AsyncClient,
    base: str,
    data: dict[str, str],
    *,
    basic: bool = True,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    url = f"{base}/oauth2/v1/tokens/bearer"
    if basic:
        return await http.post(url, data=data, auth=(CLIENT_ID, CLIENT_SECRET), headers=headers or {})
    data = {**data, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    return await http.post(url, data=data, headers=headers or {})


async def connect(http: httpx.AsyncClient, base: str, realm: str) -> dict[str, Any]:
    """The whole consent + code exchange; returns the token response."""
    query = await consent(http, base, realm)
    resp = await token_request(
        http, base, {"grant_type": "authorization_code", "code": query["code"], "redirect_uri": REDIRECT_URI}
    )
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


def limits(**kw: Any) -> ThrottleLimits:
    return ThrottleLimits(**kw)


Change = tuple[str, str, str]  # entity, id, operation: what the sandbox tells webhook subscribers


def record_changes(sb: QboSandbox, realm: str) -> list[Change]:
    """Every change the company announces from now on (what the webhooks carry), in order."""
    seen: list[Change] = []
    sb.companies[realm].listeners.append(lambda entity, row_id, op, at: seen.append((entity, row_id, op)))
    return seen


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

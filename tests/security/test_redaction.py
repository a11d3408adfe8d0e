"""Redaction (issue 17, finding 10): known secrets of any length and punctuation, also percent-encoded or
JSON-escaped, and long opaque runs, also percent-encoded; and the Green Check client, whose token endpoint
may echo the client secret it was sent, over real HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from urllib.parse import quote, quote_plus

import pytest
from aiohttp import web

from qbo_operator.core.redaction import redact
from qbo_operator.sync.greencheck import GreenCheckClient, GreenCheckError, GreenCheckPolicy
from qbo_operator.sync.records import Batch
from tests.support.greencheck import CLIENT_ID, CRB, REALM, SP_ID, make_set
from tests.support.http import serve_app
from tests.support.ledger import Report

SHORT = "Zq7pW2xK9mLs"  # 12 characters: no opaque run
PUNCTUATED = "Gc$ecret!pa55-word#2024"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXBheWxvYWQ+dmFsdWU/x"

REDACT_TABLE: list[tuple[str, str, tuple[str, ...], str]] = [
    # (case, text, known, expected)
    ("short known value", f"bad secret {SHORT}", (SHORT,), "bad secret [redacted]"),
    ("punctuated known value", f"got {PUNCTUATED}.", (PUNCTUATED,), "got [redacted]."),
    ("percent-encoded known value", f"body=client_secret%3D{quote(PUNCTUATED, safe='')}", (PUNCTUATED,),
     "body=client_secret%3D[redacted]"),
    ("lower-case percent-encoding", "s=" + quote(PUNCTUATED, safe="").lower().replace("gc", "Gc"), (PUNCTUATED,),
     "s=[redacted]"),
    ("form-encoded space", "p=" + quote_plus("open sesame 42"), ("open sesame 42",), "p=[redacted]"),
    ("JSON-escaped value", json.dumps({"echo": 'a"b\\c/d-secret'}), ('a"b\\c/d-secret',), '{"echo": "[redacted]"}'),
    ("longest known value first", f"x {SHORT}{SHORT[:4]} y", (SHORT[:4], SHORT + SHORT[:4]), "x [redacted] y"),
    ("empty known value ignored", "nothing here", ("",), "nothing here"),
    ("long opaque run", f"token {TOKEN}", (), "token [redacted]"),
    ("percent-encoded opaque run", f"token: {quote(TOKEN, safe='')}", (), "token: [redacted]"),
    ("short words stay", "HTTP 401 invalid_client", (), "HTTP 401 invalid_client"),
    ("white space folded and bounded", "a \n\t b", (), "a b"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "text", "known", "expected"), REDACT_TABLE, ids=[c[0] for c in REDACT_TABLE])
def test_redact_table(case: str, text: str, known: tuple[str, ...], expected: str) -> None:
    assert redact(text, known=known) == expected


def test_redact_bounds_the_length() -> None:
    assert redact("word " * 100, limit=20) == ("word " * 4)[:19] + "…"


# --- the Green Check token endpoint echoes the client secret ---------------------------------------------


def echoes(secret: str) -> list[Callable[[], web.Response]]:
    """Token-endpoint refusals that echo the secret: as JSON, as a text page, percent-encoded, for each status
    the client formats (401 refused, 403, 429 throttled, 502 transient)."""
    return [
        lambda: web.json_response({"message": f"invalid client_secret {secret}"}, status=401),
        lambda: web.json_response({"message": "refused", "details": f"secret={secret}"}, status=403),
        lambda: web.Response(status=401, text=f"client_secret={quote(secret, safe='')}&grant_type=client_credentials"),
        lambda: web.Response(status=502, text=f"<html><body>upstream said {secret}</body></html>"),
        lambda: web.Response(status=429, text=f"slow down {secret}", headers={"Retry-After": "0"}),
    ]


@asynccontextmanager
async def token_endpoint(answer: Callable[[], web.Response]) -> AsyncIterator[str]:
    async def token(request: web.Request) -> web.Response:
        await request.read()
        return answer()

    app = web.Application()
    app.router.add_post("/auth/token", token)
    async with serve_app(app) as url:
        yield url


@pytest.mark.parametrize("secret", [SHORT, PUNCTUATED])
@pytest.mark.parametrize("n", range(5))
async def test_a_green_check_token_refusal_that_echoes_the_client_secret_leaks_nothing(
    secret: str, n: int, caplog: pytest.LogCaptureFixture, report: Report
) -> None:
    policy = GreenCheckPolicy(backoff_initial=0.01, backoff_max=0.02, transient_retries=1, default_throttle_wait=0.01)
    async with token_endpoint(echoes(secret)[n]) as url, GreenCheckClient(url, CLIENT_ID, secret, SP_ID, policy) as gc:
        with pytest.raises(GreenCheckError) as raised:
            await gc.deliver(Batch(CRB, REALM, [make_set(1, 1)]))
    said = f"{raised.value} {raised.value!r} {caplog.text}"
    assert "HTTP" in said  # the status is still told
    for form in (secret, quote(secret, safe=""), quote(secret, safe="").lower()):
        assert form not in said, f"the client secret leaked ({form!r} form)"
    report.row(
        "attacks", f"Green Check echoes a {len(secret)}-character client secret", tried=f"answer {n}",
        held="not leaked", kind="attack",
    )  # fmt: skip

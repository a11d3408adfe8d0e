"""Intuit's OAuth 2.0 token endpoint calls (docs/qbo.md §1), through requests-oauthlib.

Blocking by design (requests): async callers use `asyncio.to_thread`. Every function returns a
validated TokenResponse or raises OAuthError, whose message never contains a token."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode, urlsplit

import requests
from oauthlib.oauth2 import OAuth2Error
from pydantic import BaseModel, Field, ValidationError
from requests.auth import HTTPBasicAuth
from requests_oauthlib import OAuth2Session

from qbo_operator.core.config import Settings
from qbo_operator.core.models import Tokens
from qbo_operator.core.names import ACCOUNTING_SCOPE

TIMEOUT = (5, 20)


class TokenErrorKind(StrEnum):
    """What a refused token request means, and so who must act (docs/qbo.md "Corrections" 5)."""

    DEAD_GRANT = "dead_grant"  # the company's grant is over: a person must click Connect again
    APP_CREDENTIALS = "app_credentials"  # the operator's own client id/secret are wrong: fix the operator
    TRANSIENT = "transient"  # anything else (network, 5xx, garbled answer): try again later


_APP_CREDENTIALS_ERRORS = frozenset({"invalid_client", "unauthorized_client"})


def classify(error: str, status: int | None) -> TokenErrorKind:
    """Pure: the OAuth error word and the HTTP status of a refused token request → its kind.

    A 5xx is transient whatever its body says (a proxy's or a failing server's answer). Only `invalid_grant`
    means a dead grant. `invalid_client` / `unauthorized_client`, or a 401 without a recognised word (RFC 6749
    §5.2: client authentication failed), mean Intuit refused our app, which no reconnect can fix."""
    if status is not None and status >= 500:
        return TokenErrorKind.TRANSIENT
    if error == "invalid_grant":
        return TokenErrorKind.DEAD_GRANT
    if error in _APP_CREDENTIALS_ERRORS or status == 401:
        return TokenErrorKind.APP_CREDENTIALS
    return TokenErrorKind.TRANSIENT


class OAuthError(Exception):
    """`error` is the OAuth error word (or `unavailable`), `status` the HTTP status when there was an answer;
    `kind` says who must act."""

    def __init__(self, error: str, message: str, intuit_tid: str | None = None, status: int | None = None) -> None:
        super().__init__(message + (f" (intuit_tid {intuit_tid})" if intuit_tid else ""))
        self.error = error
        self.intuit_tid = intuit_tid
        self.status = status

    @property
    def kind(self) -> TokenErrorKind:
        return classify(self.error, self.status)

    @property
    def dead_grant(self) -> bool:
        return self.kind is TokenErrorKind.DEAD_GRANT

    @property
    def app_credentials(self) -> bool:
        return self.kind is TokenErrorKind.APP_CREDENTIALS


class TokenResponse(BaseModel):
    access_token: str = Field(repr=False)
    refresh_token: str = Field(repr=False)
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type word
    expires_in: int
    x_refresh_token_expires_in: int
    x_refresh_token_hard_expires_in: int | None = None

    def to_tokens(self, realm_id: str, connected_at: datetime, now: datetime, scope: str = ACCOUNTING_SCOPE) -> Tokens:
        return Tokens(
            access_token=self.access_token,
            refresh_token=self.refresh_token,
            realm_id=realm_id,
            scope=scope,
            connected_at=connected_at,
            expires_at=now + timedelta(seconds=self.expires_in),
            refresh_token_expires_at=now + timedelta(seconds=self.x_refresh_token_expires_in),
            refresh_token_hard_expires_at=(
                now + timedelta(seconds=self.x_refresh_token_hard_expires_in)
                if self.x_refresh_token_hard_expires_in is not None
                else None
            ),
            refreshed_at=now,
        )


def authorization_url(settings: Settings, state: str) -> str:
    query = {
        "client_id": settings.qbo_client_id,
        "response_type": "code",
        "scope": ACCOUNTING_SCOPE,
        "redirect_uri": settings.redirect_uri,
        "state": state,
    }
    return f"{settings.qbo_auth_url}?{urlencode(query)}"


def _allow_plain_http_on_loopback(url: str) -> None:
    """oauthlib refuses http:// token endpoints (InsecureTransportError) unless
    OAUTHLIB_INSECURE_TRANSPORT is set. The local sandboxes (`make demo`, the tests) serve plain http
    on loopback, so that alone is allowed; every other endpoint must be https."""
    parts = urlsplit(url)
    if parts.scheme == "http" and parts.hostname in ("localhost", "127.0.0.1", "::1"):
        os.environ["OAUTHLIB_INSECURE_TRANSPORT"] = "1"


def _post_token(settings: Settings, data: dict[str, str]) -> TokenResponse:
    _allow_plain_http_on_loopback(settings.qbo_token_url)
    session = OAuth2Session(client_id=settings.qbo_client_id, redirect_uri=settings.redirect_uri)
    # requests-oauthlib raises from the body alone; the hook keeps the HTTP status and Intuit's request id,
    # which `classify` and support need.
    seen: dict[str, Any] = {}

    def keep(response: requests.Response) -> requests.Response:
        seen.update(status=response.status_code, tid=response.headers.get("intuit_tid"))
        return response

    session.register_compliance_hook("access_token_response", keep)
    session.register_compliance_hook("refresh_token_response", keep)
    try:
        raw = _fetch(session, settings, data)
    except OAuth2Error as exc:
        error = exc.error or "invalid_request"
        raise OAuthError(
            error, f"Intuit refused the token request: {error}", seen.get("tid"), seen.get("status")
        ) from None
    except requests.RequestException as exc:
        raise OAuthError("unavailable", f"Intuit's token endpoint is unreachable: {type(exc).__name__}") from None
    except ValueError:
        raise OAuthError(
            "unavailable",
            "Intuit's token endpoint answered with something that is not JSON",
            seen.get("tid"),
            seen.get("status"),
        ) from None
    try:
        return TokenResponse.model_validate(raw)
    except ValidationError as exc:
        fields = ", ".join(str(e["loc"][0]) for e in exc.errors())
        raise OAuthError("unavailable", f"Intuit's token response lacks or garbles: {fields}") from None


def _fetch(session: OAuth2Session, settings: Settings, data: dict[str, str]) -> dict[str, Any]:
    """The token request itself, HTTP Basic client authentication, the hard expiry asked for."""
    auth = HTTPBasicAuth(settings.qbo_client_id, settings.qbo_client_secret.get_secret_value())
    headers = {"Accept": "application/json", "x-include-refresh-token-hard-expires-in": "true"}
    if data["grant_type"] == "authorization_code":
        raw: dict[str, Any] = session.fetch_token(
            settings.qbo_token_url,
            code=data["code"],
            auth=auth,
            include_client_id=False,
            headers=headers,
            timeout=TIMEOUT,
        )
        return raw
    refreshed: dict[str, Any] = session.refresh_token(
        settings.qbo_token_url,
        refresh_token=data["refresh_token"],
        auth=auth,
        headers=headers,
        timeout=TIMEOUT,
    )
    return refreshed


def exchange_code(settings: Settings, code: str) -> TokenResponse:
    return _post_token(settings, {"grant_type": "authorization_code", "code": code})


def refresh(settings: Settings, refresh_token: str) -> TokenResponse:
    return _post_token(settings, {"grant_type": "refresh_token", "refresh_token": refresh_token})


def revoke(settings: Settings, token: str) -> None:
    """Revoke the grant (Intuit revokes access and refresh together). 200 or 400-already-dead is done."""
    try:
        resp = requests.post(
            settings.qbo_revoke_url,
            json={"token": token},
            auth=HTTPBasicAuth(settings.qbo_client_id, settings.qbo_client_secret.get_secret_value()),
            headers={"Accept": "application/json"},
            timeout=TIMEOUT,
        )
    except requests.RequestException as exc:
        raise OAuthError("unavailable", f"Intuit's revoke endpoint is unreachable: {type(exc).__name__}") from None
    if resp.status_code == 200 or (resp.status_code == 400 and "invalid" in resp.text):
        return
    raise OAuthError(
        "unavailable",
        f"Intuit's revoke endpoint answered HTTP {resp.status_code}",
        resp.headers.get("intuit_tid"),
    )


def now() -> datetime:
    return datetime.now(UTC)

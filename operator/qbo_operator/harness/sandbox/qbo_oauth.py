"""Intuit's OAuth 2.0 server, imitated (docs/qbo.md §1): discovery, consent page, token, revoke.

`Authority` is the pure token state machine (codes, grants, rotation, expiry), driven by an
explicit `now` so tests can move the clock. The aiohttp handlers around it parse requests the way
Intuit does and answer in Intuit's shapes: `{"error": "invalid_grant"}` 400, `{"error":
"invalid_client"}` 401, a consent page with a company picker, and an error page instead of a
redirect when the client id, response type, scope or redirect URI is wrong."""

from __future__ import annotations

import base64
import binascii
import hmac
import html
import json
import secrets
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from aiohttp import web

if TYPE_CHECKING:
    from qbo_operator.harness.sandbox.qbo import QboSandbox

ACCOUNTING_SCOPE = "com.intuit.quickbooks.accounting"
PAYMENT_SCOPE = "com.intuit.quickbooks.payment"
KNOWN_SCOPES = {ACCOUNTING_SCOPE, PAYMENT_SCOPE, "openid", "profile", "email", "phone", "address", "intuit_name"}
HARD_EXPIRY_HEADER = "x-include-refresh-token-hard-expires-in"
_ALNUM = string.ascii_letters + string.digits


class TokenError(Exception):
    """An OAuth error answer: `error` word, HTTP status and an optional description."""

    def __init__(self, error: str, status: int = 400, description: str | None = None) -> None:
        super().__init__(error)
        self.error = error
        self.status = status
        self.description = description

    def body(self) -> dict[str, str]:
        out = {"error": self.error}
        if self.description:
            out = {"error_description": self.description, **out}
        return out


class AccessDenied(Exception):
    """A bearer token the API refuses: `reason` is expired, malformed or invalid."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Code:
    realm_id: str
    redirect_uri: str
    scope: str
    expires_at: datetime


@dataclass
class Grant:
    """One authorization: its current refresh-token value and the access tokens issued under it."""

    id: str
    realm_id: str
    scope: str
    created_at: datetime
    hard_expires_at: datetime
    refresh_token: str
    refresh_issued_at: datetime
    refresh_expires_at: datetime
    access_tokens: dict[str, datetime] = field(default_factory=dict)
    retired: dict[str, datetime] = field(default_factory=dict)  # old refresh values in their grace window
    rotate_next: bool = False
    revoked: bool = False
    refreshes: int = 0
    rotations: int = 0


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALNUM) for _ in range(n))


def _b64u(n: int) -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(n)).rstrip(b"=").decode()


def new_access_token() -> str:
    """Opaque, shaped like Intuit's JWE access tokens (`alg: dir, enc: A128CBC-HS256`)."""
    return f"eyJlbmMiOiJBMTI4Q0JDLUhTMjU2IiwiYWxnIjoiZGlyIn0..{_b64u(16)}.{_b64u(180)}.{_b64u(16)}"


def new_refresh_token(now: datetime) -> str:
    return f"AB11{int(now.timestamp()) + 8726400}{_random(36)}"


def new_code() -> str:
    return f"AB11{_random(46)}"


class Authority:
    """Codes, grants and tokens. Every method takes `now`; nothing here reads a clock."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        redirect_uris: Iterable[str],
        *,
        rotation_seconds: float = 86400,
        refresh_token_lifetime: int = 8726400,
        hard_expiry_seconds: int = 5 * 365 * 86400,
        access_token_lifetime: int = 3600,
        code_lifetime: int = 600,
        refresh_grace_seconds: float = 0,
    ) -> None:
        self.client_id = client_id
        self._client_secret = client_secret
        self.redirect_uris = list(redirect_uris)
        self.rotation_seconds = rotation_seconds
        self.refresh_token_lifetime = refresh_token_lifetime
        self.hard_expiry_seconds = hard_expiry_seconds
        self.access_token_lifetime = access_token_lifetime
        self.code_lifetime = code_lifetime
        self.refresh_grace_seconds = refresh_grace_seconds
        self.on_grant: Callable[[Grant], None] | None = None  # called for every new grant
        self.codes: dict[str, Code] = {}
        self.grants: dict[str, Grant] = {}
        self._by_refresh: dict[str, Grant] = {}
        self._by_access: dict[str, Grant] = {}

    # --- clients ------------------------------------------------------------------------------

    def client_ok(self, client_id: str | None, client_secret: str | None) -> bool:
        if client_id is None or client_secret is None:
            return False
        id_ok = hmac.compare_digest(client_id.encode(), self.client_id.encode())
        secret_ok = hmac.compare_digest(client_secret.encode(), self._client_secret.encode())
        return id_ok and secret_ok

    def check_authorize(self, params: Mapping[str, str]) -> str | None:
        """The problem with an authorize request, as a sentence, or None if it may be shown."""
        if params.get("client_id") != self.client_id:
            return "The client_id is not a registered app (invalid_client)."
        if params.get("redirect_uri") not in self.redirect_uris:
            return "The redirect_uri does not match any redirect URI registered for this app (invalid_redirect_uri)."
        if params.get("response_type") != "code":
            return "The response_type must be 'code' (unsupported_response_type)."
        scopes = params.get("scope", "").split()
        if not scopes:
            return "The scope parameter is missing (invalid_scope)."
        unknown = [s for s in scopes if s not in KNOWN_SCOPES]
        if unknown:
            return f"Unknown scope {unknown[0]!r} (invalid_scope)."
        if ACCOUNTING_SCOPE not in scopes and PAYMENT_SCOPE not in scopes:
            return f"This sandbox grants company access only: request {ACCOUNTING_SCOPE} (invalid_scope)."
        if not params.get("state"):
            return "The state parameter is required (invalid_request)."
        return None

    # --- codes and grants ---------------------------------------------------------------------

    def issue_code(self, realm_id: str, redirect_uri: str, scope: str, now: datetime) -> str:
        code = new_code()
        self.codes[code] = Code(realm_id, redirect_uri, scope, now + timedelta(seconds=self.code_lifetime))
        return code

    def _response(self, grant: Grant, now: datetime, include_hard: bool) -> dict[str, Any]:
        access = new_access_token()
        grant.access_tokens[access] = now + timedelta(seconds=self.access_token_lifetime)
        self._by_access[access] = grant
        out: dict[str, Any] = {
            "token_type": "bearer",
            "access_token": access,
            "expires_in": self.access_token_lifetime,
            "refresh_token": grant.refresh_token,
            "x_refresh_token_expires_in": max(0, int((grant.refresh_expires_at - now).total_seconds())),
        }
        if include_hard:
            out["x_refresh_token_hard_expires_in"] = max(0, int((grant.hard_expires_at - now).total_seconds()))
        return out

    def exchange_code(
        self, code: str | None, redirect_uri: str | None, now: datetime, include_hard: bool
    ) -> dict[str, Any]:
        record = self.codes.pop(code or "", None)  # single use: gone after the first attempt
        if record is None or now >= record.expires_at:
            raise TokenError("invalid_grant")
        if redirect_uri != record.redirect_uri:
            raise TokenError("invalid_grant", description="redirect_uri mismatch")
        hard = now + timedelta(seconds=self.hard_expiry_seconds)
        grant = Grant(
            id=_random(12),
            realm_id=record.realm_id,
            scope=record.scope,
            created_at=now,
            hard_expires_at=hard,
            refresh_token=new_refresh_token(now),
            refresh_issued_at=now,
            refresh_expires_at=min(now + timedelta(seconds=self.refresh_token_lifetime), hard),
        )
        self.grants[grant.id] = grant
        self._by_refresh[grant.refresh_token] = grant
        if self.on_grant is not None:
            self.on_grant(grant)
        return self._response(grant, now, include_hard)

    def refresh(self, token: str | None, now: datetime, include_hard: bool) -> dict[str, Any]:
        """Same value within `rotation_seconds` (countdown continues), then a new value; the old dies."""
        grant = self._by_refresh.get(token or "")
        if grant is None or grant.revoked:
            raise TokenError("invalid_grant", description="Incorrect or invalid refresh token")
        if token != grant.refresh_token and now >= grant.retired.get(token or "", now):
            self._by_refresh.pop(token or "", None)
            raise TokenError("invalid_grant", description="Incorrect or invalid refresh token")
        if now >= grant.hard_expires_at or now >= grant.refresh_expires_at:
            raise TokenError("invalid_grant", description="Token expired")
        grant.refreshes += 1
        age = (now - grant.refresh_issued_at).total_seconds()
        if grant.rotate_next or age >= self.rotation_seconds:
            old = grant.refresh_token
            grant.refresh_token = new_refresh_token(now)
            grant.refresh_issued_at = now
            grant.refresh_expires_at = min(now + timedelta(seconds=self.refresh_token_lifetime), grant.hard_expires_at)
            grant.rotate_next = False
            grant.rotations += 1
            self._by_refresh[grant.refresh_token] = grant
            if self.refresh_grace_seconds > 0:
                grant.retired[old] = now + timedelta(seconds=self.refresh_grace_seconds)
            else:
                self._by_refresh.pop(old, None)
        return self._response(grant, now, include_hard)

    def _kill(self, grant: Grant) -> None:
        grant.revoked = True
        self._by_refresh.pop(grant.refresh_token, None)
        for old in grant.retired:
            self._by_refresh.pop(old, None)
        for access in grant.access_tokens:
            self._by_access.pop(access, None)

    def revoke(self, token: str) -> bool:
        """Revoke the whole grant behind a refresh or access token; False if the token is unknown."""
        grant = self._by_refresh.get(token) or self._by_access.get(token)
        if grant is None:
            return False
        self._kill(grant)
        return True

    def revoke_realm(self, realm_id: str) -> int:
        live = [g for g in self.grants.values() if g.realm_id == realm_id and not g.revoked]
        for grant in live:
            self._kill(grant)
        return len(live)

    def force_rotation(self, realm_id: str | None = None) -> int:
        live = [g for g in self.grants.values() if not g.revoked and realm_id in (None, g.realm_id)]
        for grant in live:
            grant.rotate_next = True
        return len(live)

    def authenticate(self, header: str | None, now: datetime) -> Grant:
        """The grant behind an `Authorization: Bearer …` header, or AccessDenied."""
        if not header or not header.startswith("Bearer "):
            raise AccessDenied("malformed")
        token = header[len("Bearer ") :].strip()
        if not 20 <= len(token) <= 4096:
            raise AccessDenied("malformed")
        grant = self._by_access.get(token)
        if grant is None or grant.revoked:
            raise AccessDenied("invalid")
        if now >= grant.access_tokens[token]:
            raise AccessDenied("expired")
        return grant


# --- HTTP -------------------------------------------------------------------------------------

_JSON = "application/json"
_STYLE = """
:root{--green:#2ca01c;--ink:#1f2933;--muted:#5f6b7a;--line:#d9dee4}
*{box-sizing:border-box}body{margin:0;font:16px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--ink);background:#f4f5f8;display:flex;min-height:100vh;align-items:center;justify-content:center}
main{background:#fff;border:1px solid var(--line);border-radius:12px;max-width:460px;width:92%;padding:32px;
box-shadow:0 8px 24px rgba(0,0,0,.06)}.brand{font-weight:700;color:var(--green);letter-spacing:.02em}
.tag{font-size:12px;color:#fff;background:var(--muted);border-radius:4px;padding:1px 6px;margin-left:6px}
h1{font-size:22px;margin:12px 0 8px}h2{font-size:15px;margin:20px 0 6px}p{color:var(--muted);margin:6px 0}
label{display:block;font-weight:600;margin-top:18px}select{width:100%;padding:10px;font-size:16px;
border:1px solid var(--line);border-radius:8px;margin-top:6px;background:#fff}ul{padding-left:20px;margin:6px 0}
.actions{display:flex;gap:12px;justify-content:flex-end;margin-top:24px}
button{font-size:16px;padding:10px 22px;border-radius:8px;cursor:pointer;border:1px solid var(--line);background:#fff}
button.primary{background:var(--green);border-color:var(--green);color:#fff;font-weight:600}
.error{color:#b42318;font-weight:600}.fine{font-size:12px;margin-top:24px}code{font-size:13px}
"""


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f'<body><main><div class="brand">intuit quickbooks<span class="tag">sandbox</span></div>{body}</main>'
        f"</body></html>"
    )
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


def error_page(message: str, status: int = 400) -> web.Response:
    body = (
        f'<h1>We can\'t connect this app</h1><p class="error">{html.escape(message)}</p>'
        f'<p class="fine">The app sent an authorization request this server refuses. Nothing was shared.</p>'
    )
    return _page("Error - QuickBooks sandbox", body, status)


def consent_page(sb: QboSandbox, params: Mapping[str, str], action: str) -> web.Response:
    companies = sorted(sb.companies.values(), key=lambda c: c.name)
    if not companies:
        return error_page("This sandbox has no companies yet: create one first (POST /_sandbox/companies).", 409)
    hidden = "".join(
        f'<input type="hidden" name="{k}" value="{html.escape(params.get(k, ""))}">'
        for k in ("client_id", "redirect_uri", "response_type", "scope", "state")
    )
    options = "".join(
        f'<option value="{html.escape(c.realm_id)}">{html.escape(c.name)} (realm {html.escape(c.realm_id)})</option>'
        for c in companies
    )
    app = html.escape(sb.app_name)
    grants = []
    if ACCOUNTING_SCOPE in params.get("scope", "").split():
        grants.append(
            "Read and change your company's accounting data: customers, items, invoices, payments and "
            f"sales receipts <code>({ACCOUNTING_SCOPE})</code>"
        )
    if PAYMENT_SCOPE in params.get("scope", "").split():
        grants.append(f"Process payments <code>({PAYMENT_SCOPE})</code>")
    grant_list = "".join(f"<li>{g}</li>" for g in grants)
    body = (
        f"<h1>Connect {app} to QuickBooks</h1>"
        f"<p><b>{app}</b> wants to connect to your QuickBooks company.</p>"
        f'<form method="post" action="{html.escape(action)}">{hidden}'
        f'<label for="realmId">Company</label><select id="realmId" name="realmId">{options}</select>'
        f"<h2>{app} will be able to:</h2><ul>{grant_list}</ul>"
        f'<div class="actions"><button type="submit" id="approve" name="decision" value="approve" class="primary">'
        f'Approve</button><button type="submit" id="deny" name="decision" value="deny">Deny</button></div></form>'
        f'<p class="fine">A local imitation of Intuit\'s consent page. No real QuickBooks data is involved.</p>'
    )
    return _page(f"Connect {sb.app_name} - QuickBooks sandbox", body)


def with_query(url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(params)}" if parts.query else urlencode(params)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def discovery_document(base: str) -> dict[str, Any]:
    """Intuit's discovery document (docs/qbo.md §1.1) with every endpoint on this sandbox."""
    return {
        "issuer": f"{base}/op/v1",
        "authorization_endpoint": f"{base}/connect/oauth2",
        "token_endpoint": f"{base}/oauth2/v1/tokens/bearer",
        "userinfo_endpoint": f"{base}/v1/openid_connect/userinfo",
        "revocation_endpoint": f"{base}/v2/oauth2/tokens/revoke",
        "jwks_uri": f"{base}/op/v1/jwks",
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "email", "profile", "address", "phone"],
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "claims_supported": ["aud", "exp", "iat", "iss", "realmid", "sub"],
    }


def _token_json(payload: Mapping[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(payload).encode(),
        status=status,
        content_type=_JSON,
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _basic(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    if ":" not in decoded:
        return None
    client_id, _, secret = decoded.partition(":")
    return client_id, secret


class _OAuthEndpoints:
    """The OAuth handlers, bound to one sandbox."""

    def __init__(self, sb: QboSandbox) -> None:
        self.sb = sb

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(discovery_document(str(request.url.origin())))

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": []})

    async def authorize_get(self, request: web.Request) -> web.Response:
        params = dict(request.query)
        problem = self.sb.authority.check_authorize(params)
        if problem:
            return error_page(problem)
        return consent_page(self.sb, params, request.path)

    async def authorize_post(self, request: web.Request) -> web.Response:
        sb = self.sb
        form = await request.post()
        params = {k: str(v) for k, v in form.items()}
        problem = sb.authority.check_authorize(params)
        if problem:
            return error_page(problem)
        decision = params.get("decision")
        if decision not in ("approve", "deny"):
            return error_page("Choose Approve or Deny.")
        if decision == "deny":
            location = with_query(params["redirect_uri"], {"error": "access_denied", "state": params["state"]})
        else:
            realm_id = params.get("realmId", "")
            if realm_id not in sb.companies:
                return error_page(f"There is no company with realm id {realm_id!r} in this sandbox.")
            location = sb.approve(params["state"], realm_id, params["redirect_uri"], params["scope"])
        raise web.HTTPFound(location)

    async def token(self, request: web.Request) -> web.Response:
        sb = self.sb
        if request.content_type != "application/x-www-form-urlencoded":
            return _token_json({"error": "invalid_request"}, 400)
        form = {k: str(v) for k, v in (await request.post()).items()}
        creds = _basic(request.headers.get("Authorization"))
        if creds is None and "client_id" in form:
            creds = form.get("client_id", ""), form.get("client_secret", "")
        if creds is None or not sb.authority.client_ok(*creds):
            resp = _token_json({"error": "invalid_client"}, 401)
            resp.headers["WWW-Authenticate"] = 'Basic realm="intuit"'
            return resp
        include_hard = request.headers.get(HARD_EXPIRY_HEADER, "").strip().lower() == "true"
        grant_type = form.get("grant_type")
        try:
            with sb.lock:
                now = sb.now()
                if grant_type == "authorization_code":
                    body = sb.authority.exchange_code(form.get("code"), form.get("redirect_uri"), now, include_hard)
                elif grant_type == "refresh_token":
                    body = sb.authority.refresh(form.get("refresh_token"), now, include_hard)
                else:
                    raise TokenError("unsupported_grant_type")
        except TokenError as exc:
            return _token_json(exc.body(), exc.status)
        return _token_json(body)

    async def revoke(self, request: web.Request) -> web.Response:
        creds = _basic(request.headers.get("Authorization"))
        if creds is None or not self.sb.authority.client_ok(*creds):
            return _token_json({"error": "invalid_client"}, 401)
        try:
            payload = json.loads(await request.read() or b"null")
        except (ValueError, UnicodeDecodeError):
            payload = None
        token_value = payload.get("token") if isinstance(payload, dict) else None
        if not isinstance(token_value, str) or not token_value:
            return _token_json({"error": "invalid_request"}, 400)
        with self.sb.lock:
            self.sb.authority.revoke(token_value)  # unknown tokens are not an error (RFC 7009 §2.2)
        return web.Response(status=200)

    async def userinfo(self, request: web.Request) -> web.Response:
        try:
            with self.sb.lock:
                grant = self.sb.authority.authenticate(request.headers.get("Authorization"), self.sb.now())
        except AccessDenied:
            return _token_json({"error": "invalid_token"}, 401)
        if "openid" not in grant.scope.split():
            return _token_json({"error": "insufficient_scope"}, 403)
        return web.json_response(
            {
                "sub": f"sandbox-user-{grant.realm_id}",
                "email": "admin@example.com",
                "emailVerified": True,
                "givenName": "Sandbox",
                "familyName": "Admin",
            }
        )


def routes(sb: QboSandbox) -> list[web.RouteDef]:
    """The OAuth endpoints, bound to one sandbox."""
    h = _OAuthEndpoints(sb)
    out = [
        web.get("/op/v1/jwks", h.jwks),
        web.post("/oauth2/v1/tokens/bearer", h.token),
        web.post("/v2/oauth2/tokens/revoke", h.revoke),
        web.get("/v1/openid_connect/userinfo", h.userinfo),
    ]
    for name in ("openid_configuration", "openid_sandbox_configuration"):
        out += [web.get(f"/.well-known/{name}", h.discovery), web.get(f"/.well-known/{name}/", h.discovery)]
    for path in ("/connect/oauth2", "/app/connect/oauth2"):
        out += [web.get(path, h.authorize_get), web.post(path, h.authorize_post)]
    return out

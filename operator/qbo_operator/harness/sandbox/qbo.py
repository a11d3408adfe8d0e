"""QboSandbox: a real HTTP server imitating Intuit's OAuth server, Accounting API and webhooks.

One object holds the state (companies, grants, faults, throttling, webhook queue) and offers a
Python API for tests and the same operations over HTTP under `/_sandbox/` for other processes
(the demo, chaos tests). `serve()` runs it on an aiohttp runner in the caller's event loop;
`serve_in_thread()` runs it in a thread of its own, for blocking clients such as `intuit-oauth`.
State is guarded by one re-entrant lock, so both sides may be used from different threads."""

from __future__ import annotations

import asyncio
import ipaddress
import random
import secrets
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware

from qbo_operator.harness.sandbox import qbo_api, qbo_control, qbo_oauth, qbo_write
from qbo_operator.harness.sandbox.faults import Faults, Handler
from qbo_operator.harness.sandbox.qbo_api import INTUIT_LIMITS, Throttle, ThrottleLimits, limits_json
from qbo_operator.harness.sandbox.qbo_edits import Bookkeeping
from qbo_operator.harness.sandbox.qbo_generator import (
    generate_new_payments,
    next_payment_time,
    populate_history,
    realm_id_for,
)
from qbo_operator.harness.sandbox.qbo_oauth import ACCOUNTING_SCOPE, Authority, Grant, with_query
from qbo_operator.harness.sandbox.qbo_store import Company
from qbo_operator.harness.sandbox.qbo_values import Entity, Money, SandboxError
from qbo_operator.harness.sandbox.qbo_webhooks import FAST_RETRY_DELAYS, WebhookDelivery, WebhookFormat, WebhookSender

Clock = Callable[[], datetime]
CONSENT_MARGIN = timedelta(milliseconds=250)

# Route template -> request kind, for `requests` counters.
_KINDS = {
    "/v3/company/{realm}/query": "query",
    "/v3/company/{realm}/cdc": "cdc",
    "/v3/company/{realm}/{entity}/{id}": "read",
    "/v3/company/{realm}/payment": "write",
    "/v3/company/{realm}/invoice": "write",
    "/v3/company/{realm}/creditmemo": "write",
    "/oauth2/v1/tokens/bearer": "token",
    "/v2/oauth2/tokens/revoke": "revoke",
    "/connect/oauth2": "authorize",
    "/app/connect/oauth2": "authorize",
    "/v1/openid_connect/userinfo": "userinfo",
    "/op/v1/jwks": "jwks",
}


# Label -> path of the sandbox's endpoints; `api` is the Accounting API base (QBO_API_URL): clients
# append `/v3/company/{realmId}/...`.
_ENDPOINTS = {
    "discovery": "/.well-known/openid_configuration",
    "authorize": "/connect/oauth2",
    "token": "/oauth2/v1/tokens/bearer",
    "revoke": "/v2/oauth2/tokens/revoke",
    "api": "",
    "control": "/_sandbox",
}


class _Endpoint:
    """A URL of the serving sandbox read as an attribute (`sb.token_url`); RuntimeError before `serve()`."""

    def __init__(self, label: str) -> None:
        self.path = _ENDPOINTS[label]

    def __get__(self, sb: QboSandbox, owner: type[QboSandbox]) -> str:
        return sb._url(self.path)


def _redirect_uris(client_id: str, client_secret: str, redirect_uri: str | Sequence[str]) -> list[str]:
    """The registered redirect URIs; an app without an id, a secret or a redirect URI cannot exist at Intuit."""
    redirect_uris = [redirect_uri] if isinstance(redirect_uri, str) else list(redirect_uri)
    if not client_id or not client_secret or not redirect_uris:
        raise ValueError("client_id, client_secret and redirect_uri are required")
    return redirect_uris


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _tid() -> str:
    """An `intuit_tid` in Intuit's real form, e.g. 1-6283b427-062f1d215a21a12048b92b5e."""
    return f"1-{secrets.token_hex(4)}-{secrets.token_hex(12)}"


class QboSandbox(Bookkeeping):
    """Intuit's QuickBooks Online, imitated closely enough for Intuit's own client to work unchanged."""

    def __init__(
        self,
        client_id: str,
        client_secret: str,
        redirect_uri: str | Sequence[str],
        webhook_verifier_token: str = "",
        webhook_url: str | None = None,
        webhook_format: WebhookFormat = "cloudevents",
        clock: Clock | None = None,
        rotation_seconds: float = 86400,
        refresh_token_lifetime: int = 8726400,
        hard_expiry_seconds: int = 5 * 365 * 86400,
        access_token_lifetime: int = 3600,
        webhook_retry_delays: Sequence[float] = FAST_RETRY_DELAYS,
        *,
        webhook_timeout: float = 3.0,
        webhook_batch_window: float = 0.05,
        webhook_max_batch: int = 500,
        throttle: ThrottleLimits | None = INTUIT_LIMITS,
        throttle_clock: Callable[[], float] = time.monotonic,
        refresh_grace_seconds: float = 0,
        code_lifetime: int = 600,
        fault_seed: int = 0,
        app_name: str = "Green Check for QuickBooks",
        control_from_anywhere: bool = False,
        tie_shuffle_seed: int | None = None,
    ) -> None:
        self.client_id = client_id
        self.redirect_uris = redirect_uris = _redirect_uris(client_id, client_secret, redirect_uri)
        self.app_name = app_name
        self.clock: Clock = clock or _utc_now
        self.clock_offset = timedelta(0)
        self.lock = threading.RLock()
        self.companies: dict[str, Company] = {}
        self.requests: Counter[str] = Counter()
        self.realm_requests: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self.authority = Authority(
            client_id, client_secret, redirect_uris, rotation_seconds=rotation_seconds, code_lifetime=code_lifetime,
            refresh_token_lifetime=refresh_token_lifetime, hard_expiry_seconds=hard_expiry_seconds,
            access_token_lifetime=access_token_lifetime, refresh_grace_seconds=refresh_grace_seconds,
        )  # fmt: skip
        self.authority.on_grant = self._consented
        self.throttle = Throttle(throttle, throttle_clock)
        self.faults = Faults(seed=fault_seed)
        self.faults.renderers.update(qbo_api.renderers(self))
        self.webhooks = WebhookSender(
            webhook_verifier_token,
            client_id,
            url=webhook_url,
            fmt=webhook_format,
            retry_delays=webhook_retry_delays,
            timeout=webhook_timeout,
            batch_window=webhook_batch_window,
            max_batch=webhook_max_batch,
            clock=self.now,
        )
        self.control_from_anywhere = control_from_anywhere
        self.base_url: str | None = None
        self.tie_shuffle_seed = tie_shuffle_seed
        self.queries_answered = 0  # with tie_shuffle_seed, each query shuffles ties differently

    def tie_rng(self) -> random.Random | None:
        """The order for rows that tie on the ORDERBY field in the next query: None (by Id ascending), or a
        seeded shuffle that differs on every query (Intuit documents no tiebreaker)."""
        with self.lock:
            self.queries_answered += 1
            if self.tie_shuffle_seed is None:
                return None
            return random.Random(f"{self.tie_shuffle_seed}:{self.queries_answered}")

    # --- clock --------------------------------------------------------------------------------

    def now(self) -> datetime:
        """The sandbox's time: the clock plus any `advance_clock` offset (timezone-aware)."""
        current = self.clock()
        if current.tzinfo is None:
            raise ValueError("the sandbox clock must return timezone-aware datetimes")
        return current + self.clock_offset

    def advance_clock(self, seconds: float) -> datetime:
        """Move the sandbox's time forward (tokens age, rotation windows pass); returns the new now."""
        with self.lock:
            self.clock_offset += timedelta(seconds=seconds)
            return self.now()

    # --- companies and payments ---------------------------------------------------------------

    def add_company(
        self, name: str, seed: int = 1, payments: int = 200, history_days: int = 90, multicurrency: bool = False
    ) -> str:
        """A generated company with `payments` payments (and the rest) over the past `history_days`; with
        `multicurrency`, a quarter of its customers (and their invoices and payments) are in CAD."""
        if payments < 0:
            raise SandboxError("payments must not be negative")
        with self.lock:
            realm_id = realm_id_for(name, seed, self.companies)
            company = Company(realm_id, name, multicurrency=multicurrency)
            now = self.now()
            populate_history(company, seed, payments, now, days=history_days)
            company.add_company_info(company.created_at or now)
            company.listeners.append(self._listener(realm_id))
            self.companies[realm_id] = company
            return realm_id

    def company(self, realm_id: str) -> Company:
        company = self.companies.get(realm_id)
        if company is None:
            raise SandboxError(f"no company with realm id {realm_id!r}")
        return company

    def generate_payments(
        self, realm_id: str, n: int = 1000, seed: int | None = None, seconds: int = 60
    ) -> list[Entity]:
        """n new payments created now, in a realistic mix (see `qbo_generator`); returns them as they stand.

        CreateTime is in whole seconds (as Intuit's), non-decreasing so many payments share a second,
        not before the newest payment and strictly after the second of the realm's latest consent
        (so after the gateway's `connectedAt`), spread over the last `seconds` of the sandbox clock
        (2,500 payments within 2 seconds, say) when there is room; otherwise on the first allowed second.
        A few are voided (at now). Webhooks are sent if configured."""
        with self.lock:
            company = self.company(realm_id)
            first = len(company.payments) if seed is None else seed
            return generate_new_payments(company, first, n, self.now(), seconds)

    def create_payment(
        self,
        realm_id: str,
        invoice_ids: Sequence[str] = (),
        amounts: Sequence[Money] | None = None,
        method: str | None = "Check",
        *,
        customer_id: str | None = None,
        credit_memo_ids: Sequence[str] = (),
        credit_amounts: Sequence[Money] | None = None,
        unapplied: Money = "0",
        ref_num: str | None = None,
        private_note: str | None = None,
        txn_date: str | None = None,
    ) -> Entity:
        """One payment created now. `amounts` default to each invoice's open balance (paid in full);
        `credit_memo_ids` may name any credit (CreditMemo, JournalEntry, Deposit)."""
        with self.lock:
            company = self.company(realm_id)
            invoice_ids = [str(i) for i in invoice_ids]
            if amounts is None:
                missing = [i for i in invoice_ids if i not in company.invoices]
                if missing:
                    raise SandboxError(f"invoice {missing[0]} does not exist in company {realm_id}")
                amounts = [company.invoices[i]["Balance"] for i in invoice_ids]
            if len(amounts) != len(invoice_ids):
                raise SandboxError("invoice_ids and amounts must have the same length")
            credit_ids = [str(c) for c in credit_memo_ids]
            if credit_amounts is None:
                credit_amounts = [
                    company.open_amount(entity, company.tables[entity].rows[c])
                    for c in credit_ids
                    for entity in [company.credit_entity(c)]
                ]
            if len(credit_amounts) != len(credit_ids):
                raise SandboxError("credit_memo_ids and credit_amounts must have the same length")
            at = next_payment_time(company, self.now())
            return company.add_payment(
                at,
                invoices=list(zip(invoice_ids, amounts, strict=True)),
                credits=list(zip(credit_ids, credit_amounts, strict=True)),
                unapplied=unapplied,
                customer_id=customer_id,
                method=method,
                ref_num=ref_num,
                private_note=private_note,
                txn_date=txn_date,
            )

    def void_payment(self, realm_id: str, payment_id: str) -> Entity:
        with self.lock:
            return self.company(realm_id).void_payment(str(payment_id), self.now())

    def delete_payment(self, realm_id: str, payment_id: str) -> None:
        with self.lock:
            self.company(realm_id).delete_payment(str(payment_id), self.now())

    def _listener(self, realm_id: str) -> Callable[[str, str, str, datetime], None]:
        def on_change(entity: str, entity_id: str, operation: str, at: datetime) -> None:
            if self.webhooks.url is not None:
                self.webhooks.enqueue(realm_id, entity, entity_id, operation, at)

        return on_change

    # --- OAuth --------------------------------------------------------------------------------

    def _consented(self, grant: Grant) -> None:
        company = self.companies.get(grant.realm_id)
        if company is not None:
            floor = grant.created_at + CONSENT_MARGIN
            company.not_before = max(company.not_before or floor, floor)

    def _realm(self, realm_id: str | None) -> str:
        if realm_id is None:
            if len(self.companies) != 1:
                raise SandboxError(f"name the realm: the sandbox has {len(self.companies)} companies")
            return next(iter(self.companies))
        self.company(realm_id)
        return realm_id

    def authorization_url(self, state: str, scope: str = ACCOUNTING_SCOPE, redirect_uri: str | None = None) -> str:
        """The URL a client would send the browser to (needs `serve()`)."""
        params = {
            "client_id": self.client_id,
            "response_type": "code",
            "scope": scope,
            "redirect_uri": redirect_uri or self.redirect_uris[0],
            "state": state,
        }
        return with_query(self.auth_url, params)

    def approve(
        self, state: str, realm_id: str | None = None, redirect_uri: str | None = None, scope: str = ACCOUNTING_SCOPE
    ) -> str:
        """What the consent page's Approve does: a fresh code, as the redirect URL the browser would follow."""
        with self.lock:
            realm = self._realm(realm_id)
            redirect = redirect_uri or self.redirect_uris[0]
            if redirect not in self.redirect_uris:
                raise SandboxError("redirect_uri is not registered with the sandbox")
            code = self.authority.issue_code(realm, redirect, scope, self.now())
            return with_query(redirect, {"code": code, "state": state, "realmId": realm})

    def deny(self, state: str, redirect_uri: str | None = None) -> str:
        return with_query(redirect_uri or self.redirect_uris[0], {"error": "access_denied", "state": state})

    def issue_tokens(self, realm_id: str | None = None, include_hard_expiry: bool = True) -> dict[str, Any]:
        """A token response as if the consent and code exchange had happened (for tests of other parts)."""
        with self.lock:
            realm = self._realm(realm_id)
            now = self.now()
            code = self.authority.issue_code(realm, self.redirect_uris[0], ACCOUNTING_SCOPE, now)
            return self.authority.exchange_code(code, self.redirect_uris[0], now, include_hard_expiry)

    def revoke_all(self, realm_id: str) -> int:
        """Kill every grant for the realm (the user disconnected the app at Intuit); returns how many."""
        with self.lock:
            return self.authority.revoke_realm(realm_id)

    def force_rotation(self, realm_id: str | None = None) -> int:
        """The next refresh of every live grant (of one realm) issues a new refresh-token value."""
        with self.lock:
            return self.authority.force_rotation(realm_id)

    # --- webhooks -----------------------------------------------------------------------------

    @property
    def webhook_deliveries(self) -> list[WebhookDelivery]:
        return self.webhooks.deliveries

    def configure_webhooks(self, url: str | None, webhook_format: WebhookFormat | None = None) -> None:
        self.webhooks.url = url
        if webhook_format is not None:
            self.webhooks.format = webhook_format

    async def wait_webhooks(self, seconds: float = 10.0) -> bool:
        """True once every webhook event so far was acknowledged with a 200 (False after `seconds`)."""
        return await self.webhooks.wait_idle(seconds)

    # --- URLs ---------------------------------------------------------------------------------

    def _url(self, path: str) -> str:
        if self.base_url is None:
            raise RuntimeError("the sandbox is not serving: use `async with sb.serve()` first")
        return self.base_url + path

    discovery_url = _Endpoint("discovery")
    auth_url = _Endpoint("authorize")
    token_url = _Endpoint("token")
    revoke_url = _Endpoint("revoke")
    api_url = _Endpoint("api")
    control_url = _Endpoint("control")

    # --- state --------------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """A JSON-able summary: realms and counts, request counters, grants, faults, webhooks."""
        with self.lock:
            grants = list(self.authority.grants.values())
            live = Counter(g.realm_id for g in grants if not g.revoked)  # once, not once a realm (10,000 realms)
            return {
                "now": self.now().isoformat(),
                "urls": self._urls() if self.base_url else None,
                "realms": [
                    {
                        "realmId": c.realm_id,
                        "name": c.name,
                        "counts": c.counts(),
                        "requests": dict(self.realm_requests.get(c.realm_id, {})),
                        "grants": live[c.realm_id],
                    }
                    for c in self.companies.values()
                ],
                "requests": dict(self.requests),
                "grants": {
                    "live": sum(1 for g in grants if not g.revoked),
                    "revoked": sum(1 for g in grants if g.revoked),
                    "refreshes": sum(g.refreshes for g in grants),
                    "rotations": sum(g.rotations for g in grants),
                },
                "faults": self.faults.rules,
                "faultsFired": dict(self.faults.fired),
                "throttle": limits_json(self.throttle.limits),
                "webhooks": {
                    "url": self.webhooks.url,
                    "format": self.webhooks.format,
                    "pending": self.webhooks.pending,
                    "attempts": len(self.webhooks.deliveries),
                    "acknowledged": sum(1 for d in self.webhooks.deliveries if d.ok),
                },
            }

    def _urls(self) -> dict[str, str]:
        return {label: self._url(path) for label, path in _ENDPOINTS.items()}

    # --- HTTP ---------------------------------------------------------------------------------

    def make_app(self) -> web.Application:
        app = web.Application(
            middlewares=[
                self._count_middleware(),
                qbo_api.guard_middleware(self),
                self.faults.middleware(),
            ],
            client_max_size=4 * 1024 * 1024,
        )
        app.on_response_prepare.append(_add_tid)
        app.add_routes(qbo_oauth.routes(self))
        app.add_routes(qbo_api.routes(self))
        app.add_routes(qbo_write.routes(self))
        app.add_routes(qbo_control.routes(self))
        return app

    def _count_middleware(self) -> Middleware:
        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            resource = request.match_info.route.resource
            template = resource.canonical if resource is not None else ""
            if template.startswith("/_sandbox"):
                if not self.control_from_anywhere and not _loopback(request.remote):
                    return web.json_response({"error": "the control API answers loopback clients only"}, status=403)
                return await handler(request)
            kind = _KINDS.get(template) or ("discovery" if template.startswith("/.well-known/") else "other")
            self.requests[kind] += 1
            realm = request.match_info.get("realm")
            if realm is not None:
                self.realm_requests[realm][kind] += 1
            return await handler(request)

        return count

    @asynccontextmanager
    async def serve(self, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
        """Serve on host:port (0 = any free port) in the running loop; yields the base URL."""
        runner = web.AppRunner(self.make_app(), shutdown_timeout=2.0)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound = runner.addresses[0]
            url_host = "127.0.0.1" if host in ("", "0.0.0.0") else "[::1]" if host == "::" else host  # noqa: S104
            if ":" in url_host and not url_host.startswith("["):
                url_host = f"[{url_host}]"
            self.base_url = f"http://{url_host}:{bound[1]}"
            await self.webhooks.start()
            yield self.base_url
        finally:
            await self.webhooks.stop()
            await runner.cleanup()
            self.base_url = None

    @contextmanager
    def serve_in_thread(self, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
        """`serve()` in a background thread with its own event loop, for blocking callers."""
        ready = threading.Event()
        box: dict[str, Any] = {}
        loop = asyncio.new_event_loop()

        async def main() -> None:
            stop = asyncio.Event()
            box["stop"] = stop
            async with self.serve(host, port) as url:
                box["url"] = url
                ready.set()
                await stop.wait()

        def run() -> None:
            try:
                loop.run_until_complete(main())
            except BaseException as exc:  # surfaced in the caller's thread
                box["error"] = exc
            finally:
                ready.set()
                loop.close()

        thread = threading.Thread(target=run, name="qbo-sandbox", daemon=True)
        thread.start()
        ready.wait(30)
        if "error" in box or "url" not in box:
            thread.join(5)
            raise RuntimeError(f"the QBO sandbox did not start: {box.get('error')!r}")
        try:
            yield box["url"]
        finally:
            loop.call_soon_threadsafe(box["stop"].set)
            thread.join(30)


def _loopback(remote: str | None) -> bool:
    try:
        return remote is not None and ipaddress.ip_address(remote).is_loopback
    except ValueError:
        return False


async def _add_tid(request: web.Request, response: web.StreamResponse) -> None:
    if not request.path.startswith("/_sandbox"):
        response.headers.setdefault("intuit_tid", _tid())


def summary_lines(sb: QboSandbox) -> list[str]:
    """What the CLI prints once serving: endpoints and realms."""
    lines = [f"QBO sandbox listening on {sb.base_url}"]
    for label, url in sb._urls().items():
        lines.append(f"  {label:<10} {url}")
    for c in sb.companies.values():
        counts = c.counts()
        lines.append(f"  realm {c.realm_id}  {c.name}  ({counts['Payment']} payments, {counts['Invoice']} invoices)")
    lines.append("Point the operator and gateway at it with:")
    lines.append(
        f"  QBO_AUTH_URL={sb.auth_url} QBO_TOKEN_URL={sb.token_url} QBO_REVOKE_URL={sb.revoke_url} "
        f"QBO_API_URL={sb.api_url}"
    )
    return lines

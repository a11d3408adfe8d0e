"""The Connect flow (docs/design.md §4): Connect link → consent page → Intuit → /oauth/callback → token Secret.

GET  /connect/{namespace}/{name}?exp=&sig=   verify the link (HMAC over namespace, name, CR uid,
                                             expiry) and show what will be shared
POST /connect/{namespace}/{name}?exp=&sig=   the Connect button: set the state cookie, redirect to Intuit
GET  /oauth/callback                         verify state + cookie, refuse realm conflicts, exchange
                                             the code, verify the realm at Intuit, write the token Secret

Every refusal has its own page and metric result and writes nothing. A "start again" link (the
CR's current status.authorizationURL) is offered only once the request has proved it comes from
the browser that pressed Connect, so a forged or stolen link never yields a valid one."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from aiohttp import web
from pydantic import ValidationError

from qbo_operator.core import logging as logs
from qbo_operator.core import oauth, realm_claims, signing, token_secret
from qbo_operator.core.config import Settings
from qbo_operator.core.kube import ApiException, Kube
from qbo_operator.core.models import Integration, Phase, Tokens, rfc3339
from qbo_operator.core.status import Reason
from qbo_operator.gateway import pages, realm_check
from qbo_operator.gateway.metrics import GatewayMetrics
from qbo_operator.gateway.realm_index import RealmIndex
from qbo_operator.gateway.webhooks import SeenIds

log = logging.getLogger(__name__)

STATE_COOKIE = "__Host-qbo_state"

# Canonical realm ids only: "0091…" and "91…" would be two strings for one company.
_REALM_ID = re.compile(r"[1-9][0-9]{0,31}")
_DNS_NAME = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
_ERROR_WORD = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
# What our own links, states and cookies can contain. Anything else is refused before it reaches int(),
# str.encode() or an HMAC comparison ("²".isdigit() is True; a lone surrogate cannot be encoded).
_EXP = re.compile(r"[0-9]{1,20}")
_TOKEN = re.compile(r"[A-Za-z0-9_\-.]{1,4096}")


def _clean(value: str | None, pattern: re.Pattern[str]) -> str | None:
    return value if value is not None and pattern.fullmatch(value) else None


# What a browser says about a POST from our own Connect page: the page itself (same-origin) or a typed or
# bookmarked address (none). same-site is another host of the same site: not our page either.
_OWN_FETCH_SITES = ("same-origin", "none")


def cross_site(sec_fetch_site: str | None, origin: str | None, own_origin: str) -> bool:
    """Whether a Connect button press came from another site (finding 6): the browser says so in
    Sec-Fetch-Site, or names another Origin. `Origin: null` is what our own page sends under its
    `Referrer-Policy: no-referrer`, so it says nothing; a request with neither header (no browser, or a
    browser too old to send them) is let through: the link signature still holds."""
    if sec_fetch_site is not None and sec_fetch_site.strip().lower() not in _OWN_FETCH_SITES:
        return True
    if origin is None or origin.strip().lower() == "null":
        return False
    return origin.strip().rstrip("/").lower() != own_origin.lower()


class Refused(Exception):
    """Stop the flow and show the page for `result`."""

    def __init__(self, result: str, retry_url: str | None = None) -> None:
        super().__init__(result)
        self.result = result
        self.retry_url = retry_url


def choose_connected_at(
    realm_id: str,
    secret: token_secret.Previous | None,
    status_realm: str | None,
    status_connected: datetime | None,
    now: datetime,
) -> datetime:
    """Reconnecting the same realm keeps the original connectedAt (the earliest one known), so the
    payments made while the connection was broken are still synced; a first connect starts now."""
    known = []
    if secret is not None and secret.realm_id == realm_id and secret.connected_at is not None:
        known.append(secret.connected_at)
    if status_realm == realm_id and status_connected is not None:
        known.append(status_connected)
    return min(known) if known else now


@dataclass(eq=False)
class ConnectFlow:
    settings: Settings
    kube: Kube
    index: RealmIndex
    metrics: GatewayMetrics
    clock: Callable[[], float] = time.time
    # `__Host-`: Secure, Path=/, no Domain. Browsers accept it on https and on plain-http loopback
    # (http://localhost, http://127.0.0.1), which is what `make demo` and the tests use.
    cookie_name: str = field(default=STATE_COOKIE, init=False)

    def __post_init__(self) -> None:
        self._key = self.settings.qbo_state_signing_key.get_secret_value()
        self._origin = pages.origin(self.settings.qbo_gateway_url)
        self._used_nonces = SeenIds(capacity=50_000, ttl=signing.STATE_TTL_SECONDS * 2)

    # --- helpers ---------------------------------------------------------------------------------

    def _html(self, status: int, body: str, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=status, text=body, content_type="text/html", charset="utf-8", headers=headers)

    def _refusal(
        self,
        counter: str,
        result: str,
        company: str | None,
        retry: str | None,
        ref: str,
        page: str | None = None,
    ) -> web.Response:
        metric = self.metrics.oauth_callbacks if counter == "callback" else self.metrics.connect_requests
        metric.labels(result).inc()
        status, body = pages.failure_page(page or result, company, retry, reference=ref)
        return self._html(status, body)

    async def _integration(self, namespace: str, name: str) -> Integration | None:
        """The CR as it is now (a fresh read, not the index: the uid and status must be current)."""
        if not self.index.watches(namespace):
            return None
        try:
            integration = await self.kube.get_integration(namespace, name)
        except ApiException as exc:
            if exc.status in (403, 404):
                return None
            raise
        except ValidationError:
            return None
        return None if integration.deleting else integration

    async def _verified_link(self, request: web.Request, counter: str) -> tuple[Integration, int] | web.Response:
        """The integration a Connect link names, if the link is genuine and current.

        The CR comes from the watch-fed index, so an unauthenticated request never costs an API call."""
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        if not (_DNS_NAME.fullmatch(namespace) and _DNS_NAME.fullmatch(name)):
            return self._refusal(counter, "not_found", None, None, "", page="bad_link")
        ref = f"{namespace}/{name}"
        logs.about_integration(namespace, name)
        if not self.index.synced:
            self.metrics.connect_requests.labels("unavailable").inc()
            _, body = pages.failure_page("write_failed", None, None, reference=ref)
            return self._html(503, body)
        integration = self.index.get(namespace, name) if self.index.watches(namespace) else None
        if integration is None or integration.deleting:
            # Same page as a bad link: the Connect endpoint is no oracle for which integrations exist.
            log.info("connect %s: no such integration", ref)
            return self._refusal(counter, "not_found", None, None, ref, page="bad_link")
        try:
            expires = signing.verify_connect_link(
                self._key,
                namespace,
                name,
                integration.uid,
                _clean(request.query.get("exp"), _EXP),
                _clean(request.query.get("sig"), _TOKEN),
                self.clock(),
            )
        except signing.SignatureError as exc:
            log.info("connect %s: %s", ref, exc.reason)
            return self._refusal(counter, exc.reason, None, None, ref)
        if integration.status.phase == Phase.CONNECTED:
            # The operator publishes no link while connected, and issues a fresh one on disconnect.
            log.info("connect %s: already connected; the link is not used", ref)
            return self._refusal(counter, "already_connected", None, None, ref)
        missing = self.settings.missing_credentials(integration.spec.environment)
        if missing:
            # The operator shows the integration in phase Error (MissingCredentials): send no one to Intuit.
            log.warning("connect %s: no %s Intuit app (%s not set)", ref, integration.spec.environment, missing)
            return self._refusal(counter, "not_configured", None, None, ref)
        return integration, expires

    # --- GET /connect/{namespace}/{name} -----------------------------------------------------------

    async def connect_page(self, request: web.Request) -> web.Response:
        verified = await self._verified_link(request, "connect")
        if isinstance(verified, web.Response):
            return verified
        integration, expires = verified
        query = urlencode({"exp": expires, "sig": request.query["sig"]})
        action = f"{connect_path(integration.namespace, integration.name)}?{query}"
        body = pages.connect_page(
            pages.company_label(integration.spec.company_name, integration.name),
            action,
            datetime.fromtimestamp(expires, UTC),
            already_connected=integration.status.realm_id is not None,
        )
        self.metrics.connect_requests.labels("shown").inc()
        return self._html(200, body)

    # --- POST /connect/{namespace}/{name} (the Connect button) ----------------------------------

    async def start(self, request: web.Request) -> web.StreamResponse:
        if cross_site(request.headers.get("Sec-Fetch-Site"), request.headers.get("Origin"), self._origin):
            log.info("connect: refused a cross-site Connect button press")
            return self._refusal("connect", "cross_site", None, None, "")
        verified = await self._verified_link(request, "connect")
        if isinstance(verified, web.Response):
            return verified
        integration, _ = verified
        nonce = signing.new_nonce()
        state = signing.make_state(
            self._key, integration.namespace, integration.name, integration.uid, nonce, self.clock()
        )
        response = web.HTTPSeeOther(oauth.authorization_url(self._app(integration), state))
        response.set_cookie(
            self.cookie_name,
            nonce,
            max_age=signing.STATE_TTL_SECONDS,
            path="/",
            secure=True,
            httponly=True,
            samesite="Lax",
        )
        self.metrics.connect_requests.labels("started").inc()
        log.info("connect %s/%s: sent to Intuit", integration.namespace, integration.name)
        return response

    # --- GET /oauth/callback -----------------------------------------------------------------------

    async def callback(self, request: web.Request) -> web.Response:
        query = request.query
        token = _clean(query.get("state"), _TOKEN)
        cookie = _clean(request.cookies.get(self.cookie_name), _TOKEN)
        now = self.clock()
        try:
            state = signing.parse_state(self._key, token, cookie, now)
        except signing.SignatureError as exc:
            retry = None
            ref = ""
            if exc.reason == "expired_state":
                # Too slow, but is it the same browser? Then offering the link again is safe.
                try:
                    old = signing.parse_state(self._key, token, cookie, 0)
                    ref = f"{old.namespace}/{old.name}"
                    integration = await self._integration(old.namespace, old.name)
                    if integration is not None and integration.uid == old.uid:
                        retry = integration.status.authorization_url
                except (signing.SignatureError, ApiException):
                    pass
                except Exception as err:
                    log.warning("callback: cannot read the integration for a retry link: %s", type(err).__name__)
            log.info("callback refused: %s", exc.reason)
            return self._refusal("callback", exc.reason, None, retry, ref)
        ref = f"{state.namespace}/{state.name}"
        logs.about_integration(state.namespace, state.name)
        try:
            return await self._finish(state, query, ref)
        except Refused as refused:
            return self._refusal("callback", refused.result, None, refused.retry_url, ref)

    async def _finish(self, state: signing.OAuthState, query: Any, ref: str) -> web.Response:
        """The callback past a valid state: every refusal from here on names the company and offers
        the CR's current Connect link (the request proved it comes from the browser that pressed Connect)."""
        integration = await self._callback_integration(state, ref)
        company = pages.company_label(integration.spec.company_name, integration.name)
        try:
            code, realm_id = self._intuit_answer(state, query, ref)
            await self._refuse_duplicate_realm(integration, realm_id, ref, hold=False)
            await self._previous_connection(integration, realm_id, ref)
            response = await self._exchange(integration, code, ref)
            tokens, reconnected = await self._keep(integration, response, realm_id, ref)
        except Refused as refused:
            return self._refusal("callback", refused.result, company, integration.status.authorization_url, ref)
        log.info(
            "callback %s: connected realm %s (connectedAt %s%s)",
            ref,
            realm_id,
            rfc3339(tokens.connected_at),
            ", kept from the earlier connection" if reconnected else "",
        )
        await self._event(
            integration,
            "Normal",
            Reason.AUTHORIZED,
            f"QuickBooks company {realm_id} was connected through the Connect page; tokens stored in Secret "
            f"{integration.token_secret_name}.",
        )
        self.metrics.oauth_callbacks.labels("connected").inc()
        return self._html(200, pages.connected_page(company, reconnected, reference=ref))

    async def _callback_integration(self, state: signing.OAuthState, ref: str) -> Integration:
        """The CR the state was made for; the same uid, so a re-created namesake never gets its tokens."""
        try:
            integration = await self._integration(state.namespace, state.name)
        except Exception as exc:
            log.warning("callback %s: cannot read the integration: %s", ref, type(exc).__name__)
            raise Refused("write_failed") from None
        if integration is None or integration.uid != state.uid:
            log.info("callback %s: the integration is gone or was re-created", ref)
            raise Refused("not_found")
        return integration

    def _intuit_answer(self, state: signing.OAuthState, query: Any, ref: str) -> tuple[str, str]:
        """(code, realmId) from Intuit's redirect, once per state."""
        error = query.get("error")
        if error is not None:
            word = error if _ERROR_WORD.fullmatch(error) else "(unreadable)"
            log.info("callback %s: Intuit answered error=%s", ref, word)
            raise Refused("denied" if error == "access_denied" else "intuit_error")
        code, realm_id = query.get("code"), query.get("realmId")
        if not code or not realm_id or not _REALM_ID.fullmatch(realm_id) or len(code) > 2048:
            log.info("callback %s: Intuit's answer lacks a code or a realmId", ref)
            raise Refused("intuit_error")
        if not self._used_nonces.add(state.nonce):
            log.info("callback %s: this state was already used", ref)
            raise Refused("replayed")
        return code, realm_id

    async def _refuse_duplicate_realm(self, integration: Integration, realm_id: str, ref: str, *, hold: bool) -> None:
        """Refuse a realm another integration holds (core/realm_claims). Before the code exchange only
        read the claim, so no tokens are obtained that cannot be kept; after Intuit confirmed the realm,
        `hold` it: the create decides between racing gateways."""
        me = realm_claims.Holder(integration.namespace, integration.name, integration.uid)
        environment, where = integration.spec.environment, self.settings.pod_namespace
        try:
            if hold:
                outcome = await realm_claims.claim(self.kube, where, environment, realm_id, me, self._alive)
                if outcome is realm_claims.Outcome.HELD:
                    return
            else:
                current = await realm_claims.read(self.kube, where, environment, realm_id)
                holder = current.holder if current is not None else None
                if holder is None or holder.uid == me.uid or not await self._alive(holder):
                    return
        except ApiException as exc:
            log.warning("callback %s: cannot read or write the claim of realm %s: HTTP %s", ref, realm_id, exc.status)
            raise Refused("write_failed") from None
        log.warning("callback %s: realm %s already belongs to another integration", ref, realm_id)
        await self._event(
            integration,
            "Warning",
            Reason.DUPLICATE_REALM,
            f"A Connect attempt chose QuickBooks company {realm_id}, which another integration "
            "already uses; nothing was stored.",
        )
        raise Refused("duplicate_realm")

    async def _alive(self, holder: realm_claims.Holder) -> bool:
        """Does the claim's holder still exist with its uid? Unsure (403, errors) counts as yes."""
        try:
            obj = await self.kube.get_integration_object(holder.namespace, holder.name)
        except ApiException as exc:
            return exc.status != 404
        return bool((obj.get("metadata") or {}).get("uid") == holder.uid)

    async def _previous_connection(
        self, integration: Integration, realm_id: str, ref: str
    ) -> token_secret.Previous | None:
        """What the token Secret says about the earlier connection. Refuses a Secret that does not exist yet
        (the operator creates it; the gateway may not), one that is not this integration's (no ownerReference
        to its uid), and a realm other than the one this integration is connected to."""
        secret_name = integration.token_secret_name
        try:
            existing = await self.kube.read_secret(integration.namespace, secret_name)
        except Exception as exc:
            log.warning("callback %s: cannot read Secret %s: %s", ref, secret_name, type(exc).__name__)
            raise Refused("write_failed") from None
        if existing is None:
            log.warning("callback %s: Secret %s does not exist yet; nothing stored", ref, secret_name)
            raise Refused("not_ready")
        if not token_secret.owns(existing, integration):
            log.warning(
                "callback %s: Secret %s exists and is not this integration's; not overwritten", ref, secret_name
            )
            raise Refused("secret_conflict")
        previous = token_secret.previous_connection(existing.data)
        connected_realm = integration.status.realm_id or (previous.realm_id if previous else None)
        if connected_realm and connected_realm != realm_id:
            log.warning("callback %s: chose realm %s but is connected to realm %s", ref, realm_id, connected_realm)
            await self._event(
                integration,
                "Warning",
                Reason.REALM_MISMATCH,
                f"A Connect attempt chose QuickBooks company {realm_id}, but this integration is "
                f"connected to company {connected_realm}; nothing was stored.",
            )
            raise Refused("realm_mismatch")
        return previous

    def _app(self, integration: Integration) -> Settings:
        """The settings with the Intuit app of the integration's environment (its own client id and secret)."""
        return self.settings.for_environment(integration.spec.environment)

    async def _exchange(self, integration: Integration, code: str, ref: str) -> oauth.TokenResponse:
        """Intuit's tokens for the code: for the company the person chose at Intuit, whichever that was."""
        try:
            return await asyncio.to_thread(oauth.exchange_code, self._app(integration), code)
        except oauth.OAuthError as exc:
            log.warning("callback %s: code exchange failed: %s", ref, exc.error)
            raise Refused("replayed" if exc.error == "invalid_grant" else "exchange_failed") from None

    async def _keep(
        self,
        integration: Integration,
        response: oauth.TokenResponse,
        realm_id: str,
        ref: str,
    ) -> tuple[Tokens, bool]:
        """Verify the realm, check it again and store the tokens, or revoke the new grant: tokens this
        integration may not keep are never left alive at Intuit. Returns (tokens, reconnected)."""
        try:
            await self._verify_realm(integration, response, realm_id, ref)
            # The realm is Intuit's word now: claim it (the Secret may also have moved during the exchange).
            await self._refuse_duplicate_realm(integration, realm_id, ref, hold=True)
            previous = await self._previous_connection(integration, realm_id, ref)
            now = datetime.now(UTC)
            status = integration.status
            connected_at = choose_connected_at(realm_id, previous, status.realm_id, status.connected_at, now)
            tokens = response.to_tokens(realm_id, connected_at, now)
            await self._store(integration, tokens, ref)
        except Refused:
            await self._revoke(integration, response, ref)
            raise
        return tokens, connected_at < now

    async def _verify_realm(
        self, integration: Integration, response: oauth.TokenResponse, realm_id: str, ref: str
    ) -> None:
        """Refuse a realm Intuit does not confirm for these tokens (a rewritten `realmId`)."""
        api_url = self._app(integration).api_url(integration.spec.environment)
        verdict = await realm_check.verify_realm(api_url, realm_id, response.access_token)
        if verdict is realm_check.Verdict.REFUSED:
            log.warning("callback %s: Intuit does not confirm realm %s for the new tokens", ref, realm_id)
            raise Refused("realm_unverified")
        if verdict is realm_check.Verdict.UNAVAILABLE:
            log.warning("callback %s: realm %s could not be verified at Intuit", ref, realm_id)
            raise Refused("exchange_failed")

    async def _revoke(self, integration: Integration, response: oauth.TokenResponse, ref: str) -> None:
        try:
            await asyncio.to_thread(oauth.revoke, self._app(integration), response.refresh_token)
        except oauth.OAuthError as exc:
            log.warning("callback %s: the refused grant could not be revoked at Intuit: %s", ref, exc.error)
        else:
            log.info("callback %s: the refused grant was revoked at Intuit", ref)

    async def _store(self, integration: Integration, tokens: Tokens, ref: str) -> None:
        try:
            await token_secret.store(self.kube, integration, tokens)
        except token_secret.NotOurs:
            raise Refused("secret_conflict") from None
        except token_secret.SecretMissing:
            raise Refused("not_ready") from None
        except Exception as exc:
            log.warning(
                "callback %s: cannot write Secret %s: %s", ref, integration.token_secret_name, type(exc).__name__
            )
            raise Refused("write_failed") from None

    async def _event(self, integration: Integration, kind: str, reason: str, message: str) -> None:
        try:
            await self.kube.emit_event(integration, kind, reason, message, component="qbo-operator-gateway")
        except Exception as exc:  # an Event is a courtesy: never fail the flow for it
            log.warning(
                "cannot record Event %s on %s/%s: %s",
                reason,
                integration.namespace,
                integration.name,
                type(exc).__name__,
            )


def connect_path(namespace: str, name: str) -> str:
    return f"/connect/{quote(namespace, safe='')}/{quote(name, safe='')}"

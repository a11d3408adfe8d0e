"""What depends on the clock, and the goodbye: the housekeeping scan and revoke-on-delete.

One operator-wide scan (not a kopf timer per integration: at thousands of objects those are thousands of
tasks, each holding its object's whole body) walks the integrations index every interval and, for each whose
clock-dependent deadline has passed (`due`), re-runs the reconcile (the Connect link and the refresh token
expire without any watch event), keeps a suspended integration's grant alive (no sync runs to refresh its
rolling refresh token), and warns before Intuit's 5-year hard expiry, at most once a day. Everything else
reaches the reconcile through watch events, so an idle fleet costs one pass over memory and no API call.

Deletion marks the token Secret (the fence against a refresh in flight, core/tokens.py), then revokes the
marked refresh token at Intuit with bounded retries, and never blocks the deletion for good; garbage
collection removes the owned objects."""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
from collections.abc import Mapping
from typing import Any

import kopf
from kubernetes_asyncio.client.exceptions import ApiException
from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_after_attempt, wait_exponential

from qbo_operator.core import names, oauth, token_secret, tokens
from qbo_operator.core.models import Integration, Phase, Tokens, TokenSecretError, rfc3339
from qbo_operator.core.status import CONNECTED, Reason
from qbo_operator.reconciler.conditions import CONNECT_LINK_RENEW_BEFORE_SECONDS, TokenState
from qbo_operator.reconciler.reconcile import MAX_CONCURRENT_RECONCILES, Runtime
from qbo_operator.reconciler.views import plain
from qbo_operator.reconciler.writes import describe

log = logging.getLogger("qbo_operator.operator")

HOUSEKEEPING_INTERVAL = 3600.0
HARD_EXPIRY_WARNING = dt.timedelta(days=30)
KEEPALIVE_WINDOW = dt.timedelta(days=30)  # refresh a suspended integration's tokens this long before expiry
REVOKE_ATTEMPTS = 4
MARK_ATTEMPTS = 5  # conflicts tolerated while marking the token Secret for revocation
DELETE_HANDLER_RETRIES = 5


def _ref(integ: Integration) -> dict[str, str]:
    return {"namespace": integ.namespace, "name": integ.name, "kind": names.KIND}


def due(integ: Integration, token: TokenState | None, now: dt.datetime, warned_day: str | None) -> bool:
    """Whether the clock alone has changed what `tick` would do for this integration (pure): its Connect
    link is within a day of expiry, its refresh token has expired while the status still says Connected, a
    suspended integration's grant needs its keep-alive refresh, or today's hard-expiry warning is owed."""
    status = integ.status
    if integ.deleting:
        return False
    link_expires = status.authorization_url_expires_at
    if link_expires is not None and (link_expires - now).total_seconds() < CONNECT_LINK_RENEW_BEFORE_SECONDS:
        return True
    if token is None or not token.valid:
        return False
    expires, hard = token.refresh_token_expires_at, token.refresh_token_hard_expires_at
    connected = status.condition(CONNECTED)
    if expires is not None and expires <= now and connected is not None and connected.status == "True":
        return True
    if status.phase != Phase.CONNECTED:
        return False
    if integ.spec.suspend and expires is not None and expires - now <= KEEPALIVE_WINDOW:
        return True
    return hard is not None and hard - now <= HARD_EXPIRY_WARNING and warned_day != now.strftime("%Y%m%d")


def _owned_token(runtime: Runtime, integ: Integration) -> TokenState | None:
    view = runtime.secret(integ.namespace, integ.token_secret_name)
    return view.token if view is not None and integ.uid in view.owner_uids else None


async def scan(runtime: Runtime, now: dt.datetime | None = None) -> int:
    """One pass over the integrations index: `tick` each integration that is `due`; returns how many."""
    now = now or dt.datetime.now(dt.UTC)
    keys = []
    for namespace, name in runtime.integration_keys():
        body = runtime.body(namespace, name)
        if body is None:
            continue
        integ = Integration.from_object(body)
        state = runtime.states.get((namespace, name))
        if due(integ, _owned_token(runtime, integ), now, state.warned_day if state is not None else None):
            keys.append((namespace, name))
    limit = asyncio.Semaphore(MAX_CONCURRENT_RECONCILES)

    async def bounded(namespace: str, name: str) -> None:
        async with limit:
            await tick(runtime, namespace, name)

    await asyncio.gather(*(bounded(*key) for key in keys))
    return len(keys)


async def scan_forever(runtime: Runtime, interval: float) -> None:
    """The housekeeping loop, started once at operator start-up. The first pass waits one interval: the
    start-up listing reconciles every integration anyway, so a restart adds no herd of its own."""
    await runtime.opened.wait()
    while True:
        await asyncio.sleep(interval)
        try:
            ticked = await scan(runtime)
        except Exception:
            log.exception("housekeeping scan failed; trying again at the next interval")
            continue
        if ticked:
            log.info("housekeeping: %d integrations were due", ticked)


async def tick(runtime: Runtime, namespace: str, name: str) -> None:
    """Re-check what depends on the clock (Connect link expiry, refresh-token expiry), keep a suspended
    integration's grant alive, and warn before Intuit's hard expiry."""
    await runtime.reconcile(namespace, name)
    body = runtime.body(namespace, name)
    if body is None:
        return
    integ = Integration.from_object(body)
    token = _owned_token(runtime, integ)
    if token is None or not token.valid or integ.status.phase != Phase.CONNECTED:
        return
    now = dt.datetime.now(dt.UTC)
    if integ.spec.suspend:
        await _keep_alive(runtime, integ, token, now)
    hard = token.refresh_token_hard_expires_at
    if hard is not None and hard - now <= HARD_EXPIRY_WARNING:
        day = now.strftime("%Y%m%d")
        state = runtime.state((namespace, name))
        if state.warned_day != day:
            digest = hashlib.sha256(f"{integ.uid}/{day}".encode()).hexdigest()[:10]
            await runtime.writer.event(
                integ,
                "Warning",
                Reason.REFRESH_TOKEN_HARD_EXPIRY,
                f"Intuit ends this grant at {rfc3339(hard)} (its 5-year limit), whatever the refreshes: "
                "before then a person at the company must connect again with a fresh Connect link "
                "(delete the token Secret to get one).",
                event_name=f"{name}.hard-expiry.{digest}",
            )
            runtime.state((namespace, name)).warned_day = day


async def _keep_alive(runtime: Runtime, integ: Integration, token: TokenState, now: dt.datetime) -> None:
    """Suspended integrations run no sync, so nothing else refreshes their rolling refresh token: refresh
    it (persisting the rotation first, `tokens`) once it has less than KEEPALIVE_WINDOW left."""
    expires = token.refresh_token_expires_at
    if expires is None or expires - now > KEEPALIVE_WINDOW:
        return
    ref = _ref(integ)
    if runtime.settings.missing_credentials(integ.spec.environment):
        return  # phase Error says which credentials are missing; the refresh needs them
    app = runtime.settings.for_environment(integ.spec.environment)  # the app that issued the grant
    try:
        await tokens.ensure_fresh_tokens(runtime.kube, app, integ.namespace, integ.token_secret_name, force=True)
    except tokens.AppCredentialsRejected as exc:
        await _app_refused(runtime, integ, exc, now)
        return
    except tokens.GrantDead as exc:
        log.warning("keep-alive refresh: Intuit refused the grant (%s)", exc.reason, extra={"k8s_ref": ref})
        runtime.state((integ.namespace, integ.name)).dead_grant = (exc.reason, str(exc))
        await runtime.reconcile(integ.namespace, integ.name)
        return
    except (tokens.RefreshUnavailable, token_secret.SecretMissing, TokenSecretError, ApiException) as exc:
        log.warning("keep-alive refresh failed, retrying at the next tick: %s", describe(exc), extra={"k8s_ref": ref})
        return
    runtime.metrics.app_credentials.record(integ.spec.environment, rejected=False, at=now)
    log.info("refreshed the tokens of a suspended integration to keep its grant alive", extra={"k8s_ref": ref})


async def _app_refused(
    runtime: Runtime, integ: Integration, exc: tokens.AppCredentialsRejected, now: dt.datetime
) -> None:
    """Intuit refused the operator's own app: the grant is not touched (no Disconnected), the operator-wide
    gauge says so, and one Warning a day on the integration says what to fix."""
    log.warning("keep-alive refresh: %s", exc, extra={"k8s_ref": _ref(integ)})
    runtime.metrics.app_credentials.record(exc.environment, rejected=True, at=now)
    day = now.strftime("%Y%m%d")
    digest = hashlib.sha256(f"{integ.uid}/app-credentials/{day}".encode()).hexdigest()[:10]
    await runtime.writer.event(
        integ, "Warning", Reason.APP_CREDENTIALS_INVALID, str(exc), event_name=f"{integ.name}.app-credentials.{digest}"
    )


async def finalize(runtime: Runtime, body: Mapping[str, Any], retry: int) -> None:
    """Revoke the grant at Intuit (when asked to), with bounded retries; never block deletion for good."""
    integ = Integration.from_object(plain(body))
    ref = _ref(integ)
    if not integ.spec.revoke_on_delete:
        return
    refresh_token = await _fence(runtime, integ, retry)
    if refresh_token is None:
        return
    missing = runtime.settings.missing_credentials(integ.spec.environment)
    if missing:
        await _gave_up(runtime, integ, f"the {integ.spec.environment} Intuit app's {' and '.join(missing)} not set")
        return
    app = runtime.settings.for_environment(integ.spec.environment)  # only the app that issued it may revoke
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(REVOKE_ATTEMPTS),
            wait=wait_exponential(multiplier=1, min=1, max=15),
            retry=retry_if_exception_type(oauth.OAuthError),
            reraise=False,
        ):
            with attempt:
                await asyncio.to_thread(oauth.revoke, app, refresh_token)
    except RetryError as exc:
        cause = exc.last_attempt.exception()
        await _gave_up(runtime, integ, str(cause) if cause is not None else "unknown error")
        return
    log.info("revoked the grant at Intuit", extra={"k8s_ref": ref})
    await runtime.writer.event(integ, "Normal", Reason.REVOKED, "Revoked the QuickBooks grant at Intuit.")


async def _fence(runtime: Runtime, integ: Integration, retry: int) -> str | None:
    """Mark the token Secret for revocation and return the refresh token of the version marked (None: nothing
    to revoke). The mark is written under that version's resourceVersion, so a refresh that is storing its
    answer at the same moment either lands first (the mark conflicts, and the next read sees its token) or
    fails to store and revokes its own new tokens (core/tokens.py): no refreshed grant outlives the delete."""
    ref, name = _ref(integ), integ.token_secret_name
    for _ in range(MARK_ATTEMPTS):
        try:
            secret = await runtime.kube.read_secret(integ.namespace, name)
            if secret is None or not secret.data:
                log.info("no token Secret: nothing to revoke at Intuit", extra={"k8s_ref": ref})
                return None
            if not token_secret.owns(secret, integ):
                # Named by spec.tokenSecretName but not ours (SecretConflict): its grant is someone else's.
                log.info("Secret %s is not this integration's: nothing revoked", name, extra={"k8s_ref": ref})
                return None
            try:
                refresh_token = Tokens.from_secret_data(secret.data).refresh_token
            except TokenSecretError as exc:
                log.info("token Secret unusable (%s): nothing to revoke", exc, extra={"k8s_ref": ref})
                return None
            await token_secret.mark_revoking(runtime.kube, integ.namespace, name, secret, dt.datetime.now(dt.UTC))
            return refresh_token
        except ApiException as exc:
            if exc.status == 404:
                log.info("no token Secret: nothing to revoke at Intuit", extra={"k8s_ref": ref})
                return None
            if exc.status in (409, 422):
                continue  # written since we read it (a refresh stored its answer): mark the new version
            if retry + 1 < DELETE_HANDLER_RETRIES:
                raise kopf.TemporaryError(f"cannot mark the token Secret: HTTP {exc.status}", delay=10) from None
            await _gave_up(runtime, integ, f"the token Secret could not be read or marked (HTTP {exc.status})")
            return None
    if retry + 1 < DELETE_HANDLER_RETRIES:
        raise kopf.TemporaryError("the token Secret kept changing while it was marked for revocation", delay=1)
    await _gave_up(runtime, integ, "the token Secret kept changing while it was marked for revocation")
    return None


async def _gave_up(runtime: Runtime, integ: Integration, why: str) -> None:
    log.warning("gave up revoking the grant at Intuit: %s", why, extra={"k8s_ref": _ref(integ)})
    await runtime.writer.event(
        integ,
        "Warning",
        Reason.REVOKE_FAILED,
        f"Could not revoke the QuickBooks grant at Intuit ({why}); deleting anyway. Disconnect the app in "
        "QuickBooks (Settings > Apps) to end the grant.",
    )

"""Access-token refresh with Intuit's refresh-token rotation made safe (docs/design.md §3, docs/qbo.md §1.7).

Intuit may kill the old refresh token the moment it issues a new one, so a refreshed token pair is
written to the token Secret *before* the new access token is used, with the Secret's
`resourceVersion` as a precondition. Refreshes in one process are serialized by a lock; across
processes (a manual run beside a scheduled one, the operator's keep-alive timer) optimistic
concurrency decides:

- write conflict → re-read: if the Secret now holds a refresh token other than the one we started
  from and other than ours, another writer rotated (or someone reconnected): use its tokens; if it
  still holds the one we started from, only other data changed: write ours again on the new version.
- `invalid_grant` → re-read first (a few times over ~3 s, since the other writer may still be storing
  its answer): if the refresh token changed meanwhile, another writer rotated and ours was stale, so
  use theirs; only an unchanged token means the grant is really dead (`TokenRevoked`, or
  `RefreshTokenExpired` past its expiry).
- `invalid_client` / `unauthorized_client` → `AppCredentialsRejected`: the operator's own Intuit app was
  refused (docs/qbo.md "Corrections" 5); no grant is declared dead for it.

Two more rules keep a rotated token from being lost or orphaned (docs/design.md §3, "Rotation"):

- a refresh starts only right after a write of the Secret worked (`token_secret.claim_refresh`), and the
  answer is then written with retries on transient failures (5xx, 429, network, timeouts) for up to
  PERSIST_FOR seconds, long enough to ride out an API-server restart; only after that is `TokensNotStored`
  raised, saying the rotated token may be lost;
- revoke-on-delete marks the Secret before revoking (`token_secret.mark_revoking`): a marked Secret is never
  refreshed (`GrantRevoking`), and a refresh whose write then conflicts, or finds the Secret gone, revokes the
  tokens Intuit just gave it, so whichever order Intuit sees the refresh and the revoke in, no grant survives.

Used by the sync (`TokenManager`, which is the QBO client's token source) and by the operator's
keep-alive timer (`ensure_fresh_tokens`). No token value is ever logged or put in a message."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import NoReturn, TypeVar

from aiohttp import ClientError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from qbo_operator.core import oauth, token_secret
from qbo_operator.core.config import Environment, Settings, app_variables
from qbo_operator.core.kube import ApiException, Kube
from qbo_operator.core.models import Tokens
from qbo_operator.core.oauth import OAuthError, TokenResponse
from qbo_operator.core.status import DeadGrantReason, Reason
from qbo_operator.core.token_secret import SecretMissing, Stored, read_tokens

log = logging.getLogger(__name__)

MIN_VALIDITY = timedelta(minutes=5)  # refresh when the access token expires sooner than this
MAX_AGE = timedelta(hours=20)  # ... or the last refresh is older (keeps the rolling refresh token alive)
_MAX_CONFLICTS = 5
CONFIRM_DEAD_DELAYS = (0.0, 0.5, 1.0, 2.0)  # re-reads of the Secret after invalid_grant
PERSIST_FOR = 120.0  # seconds to keep writing a refreshed pair through transient failures (an API-server restart)
PERSIST_MAX_WAIT = 10.0  # the longest pause between two of those writes
ORPHAN_REVOKE_ATTEMPTS = 3  # revocations of tokens that revoke-on-delete fenced out

RefreshFn = Callable[[Settings, str], TokenResponse]
RevokeFn = Callable[[Settings, str], None]
T = TypeVar("T")
Clock = Callable[[], datetime]


class GrantDead(Exception):
    """Intuit refused the refresh token for good: a person must click Connect again."""

    def __init__(self, reason: DeadGrantReason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class AppCredentialsRejected(Exception):
    """Intuit refused the operator's own Intuit app (`invalid_client` / `unauthorized_client`), not a company's
    grant: every integration of `environment` fails alike until the operator's credentials are fixed, so no
    integration is marked Disconnected for it (a reconnect would fail the same way). Not a GrantDead on purpose."""

    def __init__(self, environment: Environment, error: str) -> None:
        variables = " and ".join(app_variables(environment))
        super().__init__(
            f"Intuit refused the operator's {environment} app credentials ({error}): fix {variables} in the "
            "operator's credentials Secret (a wrong or other-environment key pair); the company's "
            "authorization is not affected"
        )
        self.environment = environment
        self.error = error


class RefreshUnavailable(Exception):
    """Intuit's token endpoint failed (network, 5xx, garbled answer); the grant may be fine."""


class TokensNotStored(RefreshUnavailable):
    """Intuit answered a refresh but the token Secret could not be written for PERSIST_FOR seconds."""


class GrantRevoking(RefreshUnavailable):
    """Revoke-on-delete marked the token Secret (or it vanished under a refresh): nothing may refresh it."""


def transient(exc: BaseException) -> bool:
    """A Kubernetes failure worth retrying: the API server restarting, overloaded or unreachable."""
    if isinstance(exc, ApiException):
        return not exc.status or exc.status in (408, 429) or exc.status >= 500
    return isinstance(exc, (OSError, ClientError, asyncio.TimeoutError))


def _failure(exc: BaseException) -> str:
    """What failed, without the answer's body (a Secret's API answer may carry its data)."""
    if isinstance(exc, ApiException):
        return f"HTTP {exc.status}" if exc.status else "no answer"
    return type(exc).__name__


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("token Secret write or read failed (%s); retrying", _failure(exc) if exc else "unknown")


async def _persistently(call: Callable[[], Awaitable[T]], deadline: float) -> T:
    """`call()`, retried with back-off through transient failures until the loop's clock passes `deadline`."""
    remaining = max(0.0, deadline - asyncio.get_running_loop().time())
    async for attempt in AsyncRetrying(
        stop=stop_after_delay(remaining),
        wait=wait_exponential(multiplier=0.25, max=PERSIST_MAX_WAIT),
        retry=retry_if_exception(transient),
        before_sleep=_log_retry,
        reraise=True,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity returns or reraises")  # pragma: no cover


def needs_refresh(
    tokens: Tokens, now: datetime, min_validity: timedelta = MIN_VALIDITY, max_age: timedelta = MAX_AGE
) -> bool:
    """Pure: expiring within `min_validity`, or last refreshed (else connected) more than `max_age` ago."""
    last = tokens.refreshed_at or tokens.connected_at
    return tokens.expires_at - now < min_validity or now - last > max_age


def dead_grant_reason(tokens: Tokens, now: datetime) -> DeadGrantReason:
    hard = tokens.refresh_token_hard_expires_at
    if now >= tokens.refresh_token_expires_at or (hard is not None and now >= hard):
        return Reason.REFRESH_TOKEN_EXPIRED
    return Reason.TOKEN_REVOKED


async def ensure_fresh_tokens(
    kube: Kube,
    settings: Settings,
    namespace: str,
    name: str,
    *,
    force: bool = False,
    rejected_access_token: str | None = None,
    refresh_fn: RefreshFn = oauth.refresh,
    revoke_fn: RevokeFn = oauth.revoke,
    clock: Clock = oauth.now,
) -> tuple[Tokens, bool]:
    """Tokens that are safe to use now, refreshing (and persisting first) when needed.

    Returns (tokens, refreshed_by_us). `rejected_access_token`: QBO answered 401 to this token, so
    refresh unless the Secret already holds a different one (another writer refreshed)."""
    for _ in range(_MAX_CONFLICTS):
        stored = await read_tokens(kube, namespace, name)
        if stored.revoking:
            raise _revoking(namespace, name)
        now = clock()
        if rejected_access_token is not None:
            if stored.tokens.access_token != rejected_access_token and not needs_refresh(stored.tokens, now):
                return stored.tokens, False
        elif not force and not needs_refresh(stored.tokens, now):
            return stored.tokens, False
        try:
            claimed = await token_secret.claim_refresh(kube, stored, namespace, name, now)
        except ApiException as exc:
            if exc.status == 404:
                raise SecretMissing(namespace, name) from None
            if exc.status in (409, 422):
                continue  # written since we read it (a refresh, a reconnect, the revoke mark): look again
            raise
        return await _refresh_and_persist(kube, settings, namespace, name, claimed, refresh_fn, revoke_fn, clock)
    raise RefreshUnavailable(f"token Secret {namespace}/{name} kept changing before a refresh could start")


def _revoking(namespace: str, name: str) -> GrantRevoking:
    return GrantRevoking(
        f"token Secret {namespace}/{name} is marked for revocation (its integration is being deleted): "
        "the QuickBooks access token is not refreshed"
    )


async def _refresh_and_persist(
    kube: Kube,
    settings: Settings,
    namespace: str,
    name: str,
    stored: Stored,
    refresh_fn: RefreshFn,
    revoke_fn: RevokeFn,
    clock: Clock,
) -> tuple[Tokens, bool]:
    start = stored.tokens
    try:
        reply = await asyncio.to_thread(refresh_fn, settings, start.refresh_token)
    except OAuthError as exc:
        if exc.app_credentials:
            # Our app, not the grant: nothing is marked Disconnected, and no re-read can change the answer.
            log.warning("Intuit refused the %s app's credentials (%s)", settings.environment, exc.error)
            raise AppCredentialsRejected(settings.environment, exc.error) from None
        if not exc.dead_grant:
            raise RefreshUnavailable(f"could not refresh the QuickBooks access token: {exc}") from None
        # A concurrent writer that rotated the token may not have stored its answer yet: look again
        # for a few seconds before declaring the grant dead.
        for delay in CONFIRM_DEAD_DELAYS:
            await asyncio.sleep(delay)
            again = await read_tokens(kube, namespace, name)
            if again.revoking:
                raise _revoking(namespace, name) from None  # revoke-on-delete got there first
            if again.tokens.refresh_token != start.refresh_token:
                log.info("refresh token was rotated by another writer meanwhile; using the stored tokens")
                return again.tokens, False
        reason = dead_grant_reason(start, clock())
        what = "has expired" if reason == Reason.REFRESH_TOKEN_EXPIRED else "was revoked or is no longer valid"
        raise GrantDead(
            reason,
            f"Intuit refused the refresh token ({exc.error}): the QuickBooks authorization {what}; "
            "open the Connect link in status.authorizationURL to reconnect",
        ) from None
    deadline = asyncio.get_running_loop().time() + PERSIST_FOR
    now = clock()
    new = reply.to_tokens(realm_id=start.realm_id, connected_at=start.connected_at, now=now, scope=start.scope)
    if new.refresh_token_hard_expires_at is None and start.refresh_token_hard_expires_at is not None:
        new = new.model_copy(update={"refresh_token_hard_expires_at": start.refresh_token_hard_expires_at})
    rotated = new.refresh_token != start.refresh_token
    current = stored
    for _ in range(_MAX_CONFLICTS):
        write = functools.partial(
            token_secret.replace_data,
            kube,
            namespace,
            name,
            {**current.data, **new.to_secret_data()},
            current.resource_version,
        )
        try:
            await _persistently(write, deadline)
            log.info("access token refreshed and stored in Secret %s/%s", namespace, name)
            return new, True
        except ApiException as exc:
            if exc.status == 404:
                await _revoke_orphan(settings, new, namespace, name, "was deleted", revoke_fn)
            if exc.status not in (409, 422):
                raise _not_stored(namespace, name, _failure(exc), rotated) from None
        except Exception as exc:
            if not transient(exc):
                raise
            raise _not_stored(namespace, name, _failure(exc), rotated) from None
        try:
            current = await _persistently(functools.partial(read_tokens, kube, namespace, name), deadline)
        except SecretMissing:
            await _revoke_orphan(settings, new, namespace, name, "was deleted", revoke_fn)
        except Exception as exc:
            if not transient(exc):
                raise
            raise _not_stored(namespace, name, _failure(exc), rotated) from None
        if current.revoking:
            await _revoke_orphan(settings, new, namespace, name, "was marked for revocation", revoke_fn)
        stored_rt = current.tokens.refresh_token
        if current.tokens.access_token == new.access_token:
            return new, True  # our write landed, only its answer was lost
        if stored_rt == new.refresh_token:
            if not needs_refresh(current.tokens, clock()):
                return current.tokens, False
        elif stored_rt != start.refresh_token:
            log.info("another writer rotated the tokens first; using the stored tokens")
            return current.tokens, False
    raise _not_stored(namespace, name, "it kept changing", rotated)


def _not_stored(namespace: str, name: str, why: str, rotated: bool) -> TokensNotStored:
    if not rotated:
        return TokensNotStored(
            f"Intuit refreshed the access token but token Secret {namespace}/{name} could not be written ({why}); "
            "Intuit kept the same refresh token, so the stored one still works and the next run refreshes again"
        )
    return TokensNotStored(
        f"Intuit rotated the refresh token but token Secret {namespace}/{name} could not be written for "
        f"{PERSIST_FOR:.0f} s ({why}): the new refresh token is lost and the stored one may no longer work. "
        "Check the API server; if the next run reports the authorization revoked, open the Connect link in "
        "status.authorizationURL to reconnect"
    )


async def _revoke_orphan(
    settings: Settings, new: Tokens, namespace: str, name: str, what: str, revoke_fn: RevokeFn
) -> NoReturn:
    """The Secret was marked by revoke-on-delete (or deleted) after this refresh began: the tokens Intuit just
    issued can be stored nowhere, and the revoke may have hit the superseded refresh token, so revoke ours."""
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(ORPHAN_REVOKE_ATTEMPTS),
            wait=wait_exponential(multiplier=0.5, max=4),
            retry=retry_if_exception_type(OAuthError),
            reraise=True,
        ):
            with attempt:
                await asyncio.to_thread(revoke_fn, settings, new.refresh_token)
    except OAuthError as exc:
        log.warning("could not revoke the tokens of a refresh fenced out by revoke-on-delete: %s", exc)
        raise GrantRevoking(
            f"token Secret {namespace}/{name} {what} while the access token was refreshed, and revoking the "
            f"tokens Intuit had just issued failed ({exc}): disconnect the app in QuickBooks (Settings > Apps) "
            "to end the grant"
        ) from None
    log.info("token Secret %s/%s %s during a refresh: revoked the tokens Intuit had just issued", namespace, name, what)
    raise GrantRevoking(
        f"token Secret {namespace}/{name} {what} while the access token was refreshed: the tokens Intuit had "
        "just issued were revoked"
    )


class TokenManager:
    """The sync's token source: tokens kept fresh in this process, refreshes serialized."""

    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        namespace: str,
        secret_name: str,
        *,
        refresh_fn: RefreshFn = oauth.refresh,
        clock: Clock = oauth.now,
    ) -> None:
        self._fetch = functools.partial(
            ensure_fresh_tokens, kube, settings, namespace, secret_name, refresh_fn=refresh_fn, clock=clock
        )
        self._clock = clock
        self._lock = asyncio.Lock()
        self.tokens: Tokens | None = None
        self.refreshes = 0

    async def _ensure(self, force: bool = False, rejected: str | None = None) -> Tokens:
        async with self._lock:
            if (
                self.tokens is not None
                and rejected is None
                and not force
                and not needs_refresh(self.tokens, self._clock())
            ):
                return self.tokens
            if rejected is not None and self.tokens is not None and self.tokens.access_token != rejected:
                return self.tokens  # another coroutine refreshed after this token was sent
            tokens, refreshed = await self._fetch(force=force, rejected_access_token=rejected)
            self.tokens = tokens
            self.refreshes += int(refreshed)
            return tokens

    async def ensure_fresh(self) -> Tokens:
        return await self._ensure()

    async def access_token(self) -> str:
        return (await self._ensure()).access_token

    async def refreshed_access_token(self, rejected: str) -> str:
        return (await self._ensure(rejected=rejected)).access_token

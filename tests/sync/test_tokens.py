"""Token refresh with rotation, persisted first under optimistic concurrency (qbo_operator.core.tokens),
against the real API server and the QBO sandbox's token endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from qbo_operator.core import kube as kube_mod
from qbo_operator.core import oauth, token_secret, tokens
from qbo_operator.core.config import Settings
from qbo_operator.core.models import Tokens
from qbo_operator.core.oauth import TokenResponse
from qbo_operator.core.token_secret import SecretMissing
from qbo_operator.core.tokens import (
    AppCredentialsRejected,
    GrantDead,
    GrantRevoking,
    RefreshUnavailable,
    TokenManager,
    TokensNotStored,
    ensure_fresh_tokens,
)
from tests.support.kube import kubeconfig_via
from tests.support.ledger import Report
from tests.support.proxies import TcpProxy
from tests.support.sync import make_qbo, qbo_settings

pytestmark = [pytest.mark.e2e, pytest.mark.usefixtures("kubeconfig")]
SECRET = "acme-qbo-tokens"


class Env:
    def __init__(self, cluster: Any, namespace: str, sb: Any, realm: str, kube: kube_mod.Kube) -> None:
        self.cluster, self.namespace, self.sb, self.realm, self.kube = cluster, namespace, sb, realm, kube
        self.settings: Settings = qbo_settings(sb)

    def write(self, reply: dict[str, Any], **over: Any) -> Tokens:
        now = datetime.now(UTC)
        tokens = TokenResponse.model_validate(reply).to_tokens(self.realm, now - timedelta(days=1), now)
        tokens = tokens.model_copy(update=over)
        data = {**tokens.to_secret_data(), "extra_key": "a2VwdA=="}
        secret = token_secret.manifest(self.namespace, "acme", data, name=SECRET)
        self.cluster.kubectl("-n", self.namespace, "apply", "-f", "-", input=json.dumps(secret))
        return tokens

    def write_issued(self, **over: Any) -> Tokens:
        """A live grant from the sandbox, stored."""
        return self.write(self.sb.issue_tokens(self.realm), **over)

    def stored(self) -> tuple[Tokens, dict[str, str]]:
        raw = self.cluster.kubectl_json("-n", self.namespace, "get", "secret", SECRET)
        return Tokens.from_secret_data(raw["data"]), raw["data"]

    async def ensure(self, secret: str = SECRET, **kw: Any) -> tuple[Tokens, bool]:
        return await ensure_fresh_tokens(self.kube, self.settings, self.namespace, secret, **kw)


class FlakyKube(kube_mod.Kube):
    """The API server answering the next writes of the Secret with `failures` (HTTP statuses), as it does while
    it restarts or its etcd elects a leader; every other call, and the writes after those, go through."""

    def __init__(self, api: Any) -> None:
        super().__init__(api)
        self.failures: list[int] = []
        self.failed = 0

    async def patch_secret_if_unchanged(
        self, namespace: str, name: str, resource_version: str, ops: list[dict[str, Any]]
    ) -> Any:
        if self.failures:
            self.failed += 1
            status = self.failures.pop(0)
            raise kube_mod.ApiException(status=status, reason="injected by the test")
        return await super().patch_secret_if_unchanged(namespace, name, resource_version, ops)


@asynccontextmanager
async def serving(cluster: Any, namespace: str, company: str, seed: int, **faults: Any) -> AsyncIterator[Env]:
    """A QBO sandbox with one company (and `faults`), served, and an API client for the test cluster."""
    sb = make_qbo(throttle=None)
    realm = sb.add_company(company, seed=seed, payments=3)
    if faults:
        sb.faults.add(**faults)
    async with sb.serve(), kube_mod.connect() as kube:
        yield Env(cluster, namespace, sb, realm, FlakyKube(kube.api))


@pytest.fixture
def kubeconfig(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))


async def test_refresh_persists_first_and_keeps_other_keys(cluster: Any, namespace: str) -> None:
    async with serving(cluster, namespace, "Tokens", 1) as env:
        old = env.write_issued(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        env.sb.force_rotation(env.realm)
        fresh, refreshed = await env.ensure()
        again, refreshed_again = await env.ensure()
    assert refreshed and not refreshed_again
    stored, data = env.stored()
    assert stored.refresh_token == fresh.refresh_token != old.refresh_token  # rotated and stored
    assert stored.access_token == fresh.access_token == again.access_token
    assert data["extra_key"] == "a2VwdA=="  # keys it does not own survive
    assert stored.refresh_token_hard_expires_at is not None
    assert stored.refreshed_at is not None and stored.refreshed_at > datetime.now(UTC) - timedelta(minutes=1)


async def test_conflict_with_a_writer_that_rotated_uses_its_tokens(cluster: Any, namespace: str) -> None:
    async with serving(cluster, namespace, "Race", 2) as env:
        env.write_issued(expires_at=datetime.now(UTC))
        theirs = env.sb.issue_tokens(env.realm)  # a reconnect that lands while we refresh

        def refresh_racing(settings: Settings, refresh_token: str) -> TokenResponse:
            reply = oauth.refresh(settings, refresh_token)
            env.write(theirs)  # the other writer stores first: our write must conflict
            return reply

        got, refreshed = await env.ensure(refresh_fn=refresh_racing)
    assert not refreshed
    assert got.refresh_token == theirs["refresh_token"]
    assert env.stored()[0].refresh_token == theirs["refresh_token"]  # not overwritten


async def test_conflict_with_an_unrelated_write_stores_ours_on_the_new_version(cluster: Any, namespace: str) -> None:
    async with serving(cluster, namespace, "Label", 3) as env:
        env.write_issued(expires_at=datetime.now(UTC))
        env.sb.force_rotation(env.realm)

        def refresh_then_touch(settings: Settings, refresh_token: str) -> TokenResponse:
            reply = oauth.refresh(settings, refresh_token)
            cluster.kubectl("-n", namespace, "label", "secret", SECRET, "touched=yes")  # bumps resourceVersion
            return reply

        got, refreshed = await env.ensure(refresh_fn=refresh_then_touch)
        assert refreshed
        assert env.stored()[0].refresh_token == got.refresh_token
        # the stored token is the live one
        assert (await asyncio.to_thread(oauth.refresh, env.settings, got.refresh_token)).access_token


async def test_invalid_grant_after_another_writer_rotated_is_not_a_dead_grant(cluster: Any, namespace: str) -> None:
    async with serving(cluster, namespace, "Stale", 4) as env:
        first = env.sb.issue_tokens(env.realm)
        env.write(first, expires_at=datetime.now(UTC))
        env.sb.force_rotation(env.realm)
        rotated = (await asyncio.to_thread(oauth.refresh, env.settings, first["refresh_token"])).model_dump()

        def stale_refresh(settings: Settings, refresh_token: str) -> TokenResponse:
            env.write(rotated)  # ... stores its rotation while our refresh with the old token fails
            return oauth.refresh(settings, refresh_token)

        got, refreshed = await env.ensure(refresh_fn=stale_refresh)
    assert not refreshed and got.refresh_token == rotated["refresh_token"]


async def test_revoked_grant_is_dead_and_missing_secret_is_named(cluster: Any, namespace: str) -> None:
    async with serving(cluster, namespace, "Gone", 5) as env:
        env.write_issued(expires_at=datetime.now(UTC))
        env.sb.revoke_all(env.realm)
        with pytest.raises(GrantDead) as dead:
            await env.ensure()
        with pytest.raises(SecretMissing, match=f"{namespace}/nope does not exist"):
            await env.ensure("nope")
    assert str(dead.value.reason) == "TokenRevoked"
    assert "invalid_grant" in str(dead.value)
    stored = env.stored()[0]
    assert stored.refresh_token not in str(dead.value) and stored.access_token not in str(dead.value)


async def test_token_endpoint_down_is_not_a_dead_grant(cluster: Any, namespace: str) -> None:
    async with serving(
        cluster, namespace, "Down", 6, kind="status", status=503, path="/oauth2/v1/tokens/bearer"
    ) as env:
        before = env.write_issued(expires_at=datetime.now(UTC))
        with pytest.raises(RefreshUnavailable):
            await env.ensure()
    assert env.stored()[0].refresh_token == before.refresh_token


async def test_token_manager_refreshes_once_for_concurrent_401s(cluster: Any, namespace: str) -> None:
    async with serving(cluster, namespace, "Manager", 7) as env:
        env.write_issued()
        manager = TokenManager(env.kube, env.settings, namespace, SECRET)
        first = await manager.access_token()
        results = await asyncio.gather(*(manager.refreshed_access_token(first) for _ in range(5)))
    assert manager.refreshes == 1
    assert len(set(results)) == 1 and results[0] != first
    assert env.stored()[0].access_token == results[0]
    assert base64.b64decode(env.stored()[1]["access_token"]).decode() == results[0]


WRONG_SECRET = "not-the-app-secret-0123456789"  # a wrong client secret, on purpose


@pytest.mark.parametrize("environment", ["production", "sandbox"])
async def test_wrong_client_secret_is_the_apps_fault_not_a_dead_grant(
    cluster: Any, namespace: str, environment: str
) -> None:
    """The sandbox's token endpoint answers invalid_client (401) to a wrong secret, as Intuit does: the start of
    a run and a mid-run refresh both raise AppCredentialsRejected naming that app's variables, and the grant
    and its Secret are left as they were."""
    async with serving(cluster, namespace, "WrongApp", 8) as env:
        before = env.write_issued(expires_at=datetime.now(UTC))
        if environment == "sandbox":
            wrong = Settings(
                qbo_sandbox_client_id=env.settings.qbo_client_id,
                qbo_sandbox_client_secret=SecretStr(WRONG_SECRET),
                qbo_sandbox_token_url=env.settings.qbo_token_url,
            ).for_environment("sandbox")
        else:
            wrong = env.settings.model_copy(update={"qbo_client_secret": SecretStr(WRONG_SECRET)})
        manager = TokenManager(env.kube, wrong, namespace, SECRET)
        with pytest.raises(AppCredentialsRejected) as at_start:
            await manager.ensure_fresh()
        with pytest.raises(AppCredentialsRejected) as mid_run:
            await manager.refreshed_access_token(before.access_token)
        live = await asyncio.to_thread(oauth.refresh, env.settings, before.refresh_token)  # the grant still works
    assert not isinstance(at_start.value, GrantDead)
    assert at_start.value.environment == mid_run.value.environment == environment
    assert at_start.value.error == "invalid_client"
    variables = "QBO_SANDBOX_CLIENT_ID and QBO_SANDBOX_CLIENT_SECRET" if environment == "sandbox" else "QBO_CLIENT_ID"
    assert variables in str(at_start.value)
    for secret in (WRONG_SECRET, before.refresh_token, before.access_token):
        assert secret not in str(at_start.value) and secret not in str(mid_run.value)
    assert env.stored()[0].refresh_token == before.refresh_token and live.access_token


# --- rotation under failure (issue 17, finding 8) -------------------------------------------------------


async def test_a_rotated_token_is_stored_through_5xx_answers_of_the_api_server(
    cluster: Any, namespace: str, report: Report
) -> None:
    """Intuit rotates (the old refresh token dies at once), then the API server answers the write 503, 500 and 504:
    the write is retried, the new pair is stored, and the stored refresh token is the live one."""
    async with serving(cluster, namespace, "Flaky", 11) as env:
        old = env.write_issued(expires_at=datetime.now(UTC))
        env.sb.force_rotation(env.realm)
        kube = env.kube
        assert isinstance(kube, FlakyKube)

        def refresh_then_fail_writes(settings: Settings, refresh_token: str) -> TokenResponse:
            reply = oauth.refresh(settings, refresh_token)
            kube.failures = [503, 500, 504]
            return reply

        got, refreshed = await env.ensure(refresh_fn=refresh_then_fail_writes)
        stored = env.stored()[0]
        live = await asyncio.to_thread(oauth.refresh, env.settings, stored.refresh_token)
    held = refreshed and stored.refresh_token == got.refresh_token != old.refresh_token and bool(live.access_token)
    report.row(
        "token rotation",
        "API server answers 5xx to the write of a rotated token",
        tried=f"{kube.failed} failed writes (503, 500, 504) after Intuit rotated",
        held="stored, grant alive" if held else "rotated token lost",
        kind="attack",
    )
    assert kube.failed == 3
    assert held


async def test_a_rotated_token_is_stored_after_the_api_server_comes_back(
    cluster: Any, namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: Report
) -> None:
    """Intuit rotates, then the API server goes away (connections cut and refused) for 3 s: the write is retried
    until it is back, and the stored refresh token is the live one (a later refresh works)."""
    proxy = TcpProxy(cluster.api_port).start()
    proxies = [proxy]
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig_via(cluster.kubeconfig, proxy.port, tmp_path / "via-proxy")))

    def come_back() -> None:
        proxies.append(TcpProxy(cluster.api_port, port=proxy.port).start())

    def refresh_then_cut(settings: Settings, refresh_token: str) -> TokenResponse:
        reply = oauth.refresh(settings, refresh_token)
        proxy.stop()
        threading.Timer(3.0, come_back).start()
        return reply

    try:
        async with serving(cluster, namespace, "Outage", 12) as env:
            old = env.write_issued(expires_at=datetime.now(UTC))
            env.sb.force_rotation(env.realm)
            started = asyncio.get_running_loop().time()
            got, refreshed = await env.ensure(refresh_fn=refresh_then_cut)
            elapsed = asyncio.get_running_loop().time() - started
            stored = env.stored()[0]
            live = await asyncio.to_thread(oauth.refresh, env.settings, stored.refresh_token)
    finally:
        for p in proxies:
            p.stop()
    held = refreshed and stored.refresh_token == got.refresh_token != old.refresh_token and bool(live.access_token)
    report.row(
        "token rotation",
        "API server unreachable for 3 s right after Intuit rotated",
        tried=f"connections cut and refused; stored after {elapsed:.1f} s",
        held="stored, grant alive" if held else "rotated token lost",
        kind="attack",
    )
    assert len(proxies) == 2 and elapsed >= 3.0  # it really waited for the API server
    assert held


async def test_a_write_that_keeps_failing_says_the_rotated_token_is_lost(
    cluster: Any, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past PERSIST_FOR the refresh gives up with TokensNotStored, which says what was lost and what to do, and
    names no token."""
    monkeypatch.setattr(tokens, "PERSIST_FOR", 1.5)
    async with serving(cluster, namespace, "Lost", 13) as env:
        env.write_issued(expires_at=datetime.now(UTC))
        env.sb.force_rotation(env.realm)
        kube = env.kube
        assert isinstance(kube, FlakyKube)
        seen: list[str] = []

        def refresh_then_break(settings: Settings, refresh_token: str) -> TokenResponse:
            reply = oauth.refresh(settings, refresh_token)
            seen.extend([reply.access_token, reply.refresh_token, refresh_token])
            kube.failures = [503] * 1000
            return reply

        with pytest.raises(TokensNotStored) as lost:
            await env.ensure(refresh_fn=refresh_then_break)
    message = str(lost.value)
    assert "rotated the refresh token" in message and "HTTP 503" in message and "reconnect" in message
    assert kube.failed >= 3
    assert not any(value in message for value in seen)


async def test_a_secret_marked_for_revocation_is_not_refreshed(cluster: Any, namespace: str) -> None:
    """Revoke-on-delete's mark stops every later refresh before it reaches Intuit."""
    async with serving(cluster, namespace, "Marked", 14) as env:
        env.write_issued(expires_at=datetime.now(UTC))
        cluster.kubectl("-n", namespace, "annotate", "secret", SECRET, f"{token_secret.REVOKING_ANNOTATION}=now")
        before = env.sb.requests["token"]
        with pytest.raises(GrantRevoking, match="marked for revocation"):
            await env.ensure()
        assert env.sb.requests["token"] == before

"""Token refresh with rotation, persisted first under optimistic concurrency (qbo_operator.core.tokens),
against the real API server and the QBO sandbox's token endpoint."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from qbo_operator.core import kube as kube_mod
from qbo_operator.core import oauth
from qbo_operator.core.config import Settings
from qbo_operator.core.models import Tokens
from qbo_operator.core.oauth import TokenResponse
from qbo_operator.core.tokens import (
    GrantDead,
    RefreshUnavailable,
    SecretMissing,
    TokenManager,
    ensure_fresh_tokens,
)
from tests.sync.conftest import make_qbo, qbo_settings

pytestmark = pytest.mark.e2e
SECRET = "acme-qbo-tokens"


class Env:
    def __init__(self, cluster: Any, namespace: str, sb: Any, realm: str) -> None:
        self.cluster, self.namespace, self.sb, self.realm = cluster, namespace, sb, realm
        self.settings: Settings = qbo_settings(sb)

    def write(self, reply: dict[str, Any], **over: Any) -> Tokens:
        now = datetime.now(UTC)
        tokens = TokenResponse.model_validate(reply).to_tokens(self.realm, now - timedelta(days=1), now)
        tokens = tokens.model_copy(update=over)
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": self.namespace},
                  "type": "Opaque", "data": {**tokens.to_secret_data(), "extra_key": "a2VwdA=="}}  # fmt: skip
        self.cluster.kubectl("-n", self.namespace, "apply", "-f", "-", input=json.dumps(secret))
        return tokens

    def stored(self) -> tuple[Tokens, dict[str, str]]:
        raw = self.cluster.kubectl_json("-n", self.namespace, "get", "secret", SECRET)
        return Tokens.from_secret_data(raw["data"]), raw["data"]


@pytest.fixture
def kubeconfig(cluster: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))


async def test_refresh_persists_first_and_keeps_other_keys(cluster: Any, namespace: str, kubeconfig: None) -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Tokens", seed=1, payments=3)
    async with sb.serve():
        env = Env(cluster, namespace, sb, realm)
        old = env.write(sb.issue_tokens(realm), expires_at=datetime.now(UTC) - timedelta(seconds=1))
        sb.force_rotation(realm)
        async with kube_mod.connect() as kube:
            fresh, refreshed = await ensure_fresh_tokens(kube, env.settings, namespace, SECRET)
            again, refreshed_again = await ensure_fresh_tokens(kube, env.settings, namespace, SECRET)
    assert refreshed and not refreshed_again
    stored, data = env.stored()
    assert stored.refresh_token == fresh.refresh_token != old.refresh_token  # rotated and stored
    assert stored.access_token == fresh.access_token == again.access_token
    assert data["extra_key"] == "a2VwdA=="  # keys it does not own survive
    assert stored.refresh_token_hard_expires_at is not None
    assert stored.refreshed_at is not None and stored.refreshed_at > datetime.now(UTC) - timedelta(minutes=1)


async def test_conflict_with_a_writer_that_rotated_uses_its_tokens(
    cluster: Any, namespace: str, kubeconfig: None
) -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Race", seed=2, payments=3)
    async with sb.serve():
        env = Env(cluster, namespace, sb, realm)
        env.write(sb.issue_tokens(realm), expires_at=datetime.now(UTC))
        theirs = sb.issue_tokens(realm)  # a reconnect that lands while we refresh

        def refresh_racing(settings: Settings, refresh_token: str) -> TokenResponse:
            reply = oauth.refresh(settings, refresh_token)
            env.write(theirs)  # the other writer stores first: our write must conflict
            return reply

        async with kube_mod.connect() as kube:
            got, refreshed = await ensure_fresh_tokens(kube, env.settings, namespace, SECRET, refresh_fn=refresh_racing)
    assert not refreshed
    assert got.refresh_token == theirs["refresh_token"]
    assert env.stored()[0].refresh_token == theirs["refresh_token"]  # not overwritten


async def test_conflict_with_an_unrelated_write_stores_ours_on_the_new_version(
    cluster: Any, namespace: str, kubeconfig: None
) -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Label", seed=3, payments=3)
    async with sb.serve():
        env = Env(cluster, namespace, sb, realm)
        env.write(sb.issue_tokens(realm), expires_at=datetime.now(UTC))
        sb.force_rotation(realm)

        def refresh_then_touch(settings: Settings, refresh_token: str) -> TokenResponse:
            reply = oauth.refresh(settings, refresh_token)
            cluster.kubectl("-n", namespace, "label", "secret", SECRET, "touched=yes")  # bumps resourceVersion
            return reply

        async with kube_mod.connect() as kube:
            got, refreshed = await ensure_fresh_tokens(
                kube, env.settings, namespace, SECRET, refresh_fn=refresh_then_touch
            )
        assert refreshed
        assert env.stored()[0].refresh_token == got.refresh_token
        # the stored token is the live one
        assert (await asyncio.to_thread(oauth.refresh, env.settings, got.refresh_token)).access_token


async def test_invalid_grant_after_another_writer_rotated_is_not_a_dead_grant(
    cluster: Any, namespace: str, kubeconfig: None
) -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Stale", seed=4, payments=3)
    async with sb.serve():
        env = Env(cluster, namespace, sb, realm)
        first = sb.issue_tokens(realm)
        env.write(first, expires_at=datetime.now(UTC))
        sb.force_rotation(realm)
        rotated = (await asyncio.to_thread(oauth.refresh, env.settings, first["refresh_token"])).model_dump()

        def stale_refresh(settings: Settings, refresh_token: str) -> TokenResponse:
            env.write(rotated)  # ... stores its rotation while our refresh with the old token fails
            return oauth.refresh(settings, refresh_token)

        async with kube_mod.connect() as kube:
            got, refreshed = await ensure_fresh_tokens(kube, env.settings, namespace, SECRET, refresh_fn=stale_refresh)
    assert not refreshed and got.refresh_token == rotated["refresh_token"]


async def test_revoked_grant_is_dead_and_missing_secret_is_named(
    cluster: Any, namespace: str, kubeconfig: None
) -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Gone", seed=5, payments=3)
    async with sb.serve():
        env = Env(cluster, namespace, sb, realm)
        env.write(sb.issue_tokens(realm), expires_at=datetime.now(UTC))
        sb.revoke_all(realm)
        async with kube_mod.connect() as kube:
            with pytest.raises(GrantDead) as dead:
                await ensure_fresh_tokens(kube, env.settings, namespace, SECRET)
            with pytest.raises(SecretMissing, match=f"{namespace}/nope does not exist"):
                await ensure_fresh_tokens(kube, env.settings, namespace, "nope")
    assert dead.value.reason == "TokenRevoked"
    assert "invalid_grant" in str(dead.value)
    stored = env.stored()[0]
    assert stored.refresh_token not in str(dead.value) and stored.access_token not in str(dead.value)


async def test_token_endpoint_down_is_not_a_dead_grant(cluster: Any, namespace: str, kubeconfig: None) -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Down", seed=6, payments=3)
    sb.faults.add(kind="status", status=503, path="/oauth2/v1/tokens/bearer")
    async with sb.serve():
        env = Env(cluster, namespace, sb, realm)
        before = env.write(sb.issue_tokens(realm), expires_at=datetime.now(UTC))
        async with kube_mod.connect() as kube:
            with pytest.raises(RefreshUnavailable):
                await ensure_fresh_tokens(kube, env.settings, namespace, SECRET)
    assert env.stored()[0].refresh_token == before.refresh_token


async def test_token_manager_refreshes_once_for_concurrent_401s(cluster: Any, namespace: str, kubeconfig: None) -> None:
    sb = make_qbo(throttle=None)
    realm = sb.add_company("Manager", seed=7, payments=3)
    async with sb.serve():
        env = Env(cluster, namespace, sb, realm)
        env.write(sb.issue_tokens(realm))
        async with kube_mod.connect() as kube:
            manager = TokenManager(kube, env.settings, namespace, SECRET)
            first = await manager.access_token()
            results = await asyncio.gather(*(manager.refreshed_access_token(first) for _ in range(5)))
    assert manager.refreshes == 1
    assert len(set(results)) == 1 and results[0] != first
    assert env.stored()[0].access_token == results[0]
    assert base64.b64decode(env.stored()[1]["access_token"]).decode() == results[0]

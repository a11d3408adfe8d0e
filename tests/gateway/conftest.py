"""Fixtures for the gateway tests: gateway processes on the session's control plane."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, sync_playwright

from qbo_operator.harness.controlplane import ControlPlane, free_port
from qbo_operator.harness.sandbox.qbo import QboSandbox
from tests.support.processes import Gateway, GatewayFactory, Keys, Stack, StackFactory


@pytest.fixture
def keys() -> Keys:
    return Keys()


@pytest.fixture
def gateway_factory(cluster: ControlPlane, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[GatewayFactory]:
    """Start gateways for this test; each is stopped afterwards and its log kept in tmp_path."""
    started: list[Gateway] = []
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:50]

    def make(keys: Keys, *, start: bool = True, kubeconfig: Path | None = None, **kw: Any) -> Gateway:
        gw = Gateway(kubeconfig or cluster.kubeconfig, keys, tmp_path / f"{base}-gateway-{len(started)}.log", **kw)
        started.append(gw)
        return gw.start() if start else gw

    yield make
    for gw in started:
        gw.stop()


@pytest.fixture
def stack_factory(gateway_factory: GatewayFactory, keys: Keys) -> Iterator[StackFactory]:
    with ExitStack() as stack:

        def make(
            *,
            host_name: str = "127.0.0.1",
            token_url: str | None = None,
            webhooks: bool = False,
            webhook_format: str = "cloudevents",
            gateway_args: Sequence[str] = ("--webhook-flush-seconds", "0.3"),
            kubeconfig: Path | None = None,
            start_gateway: bool = True,
        ) -> Stack:
            port = free_port()
            sb = QboSandbox(
                keys.client_id,
                keys.client_secret,
                redirect_uri=f"http://{host_name}:{port}/oauth/callback",
                webhook_verifier_token=keys.verifier_token,
                webhook_url=f"http://127.0.0.1:{port}/webhooks/quickbooks" if webhooks else None,
                webhook_format=webhook_format,  # type: ignore[arg-type]
            )
            url = stack.enter_context(sb.serve_in_thread())
            gw = gateway_factory(
                keys,
                port=port,
                host_name=host_name,
                auth_url=sb.auth_url,
                token_url=token_url or sb.token_url,
                extra_env={"QBO_API_URL": sb.api_url, "QBO_REVOKE_URL": sb.revoke_url},
                args=gateway_args,
                kubeconfig=kubeconfig,
                start=start_gateway,
            )
            return Stack(sb, url, gw, keys)

        yield make


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium driven by Playwright (never `playwright install`)."""
    if not CHROMIUM.exists():
        pytest.fail("Chromium is missing: `make system-packages` (apt-get install chromium)")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()

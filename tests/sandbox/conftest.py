"""Fixtures for the QBO sandbox tests: a sandbox on a clock the test moves (helpers in tests.support.sandbox)."""

from __future__ import annotations

from typing import Any

import pytest

from qbo_operator.harness.sandbox.qbo import QboSandbox
from tests.support.sandbox import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, VERIFIER, FakeClock, SandboxFactory


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_sandbox(clock: FakeClock) -> SandboxFactory:
    """A sandbox on the fake clock, without throttling unless asked for."""

    def make(**kw: Any) -> QboSandbox:
        kw.setdefault("clock", clock)
        kw.setdefault("throttle", None)
        kw.setdefault("redirect_uri", REDIRECT_URI)
        kw.setdefault("webhook_verifier_token", VERIFIER)
        return QboSandbox(CLIENT_ID, CLIENT_SECRET, **kw)

    return make


@pytest.fixture
def sandbox(make_sandbox: SandboxFactory) -> QboSandbox:
    sb = make_sandbox()
    sb.add_company("Acme Dispensary", seed=1, payments=60)
    return sb

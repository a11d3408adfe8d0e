"""A Green Check sandbox per test (records to send it: tests/support/greencheck.py)."""

from __future__ import annotations

import pytest

from qbo_operator.harness.sandbox.greencheck import GreenCheckSandbox
from tests.support.greencheck import CLIENT_ID, CLIENT_SECRET, SP_ID


@pytest.fixture
def sandbox() -> GreenCheckSandbox:
    return GreenCheckSandbox(CLIENT_ID, CLIENT_SECRET, SP_ID)

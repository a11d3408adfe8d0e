"""Every test of the reliability suite takes part in the secret-hygiene checks of tests/conftest.py."""

import pytest


@pytest.fixture(autouse=True)
def _hygiene(hygiene_snapshot: None, secret_hygiene: None) -> None:
    """The per-test snapshot of the cluster and the session-level scan."""

"""Fixtures of the reliability suite: the `report` ledger and the session-level secret-hygiene check."""

from tests.reliability.fixtures import _hygiene_snapshot, _secret_hygiene, report

__all__ = ["_hygiene_snapshot", "_secret_hygiene", "report"]

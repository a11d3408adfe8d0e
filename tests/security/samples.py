"""Inputs shared by the hypothesis properties (test_properties.py) and the atheris targets (fuzz_targets.py)."""

from __future__ import annotations

from qbo_operator.core.models import OPTIONAL_TOKEN_KEYS, TOKEN_KEYS
from qbo_operator.sync.greencheck import Record

# Every key a token Secret may hold, required ones first.
ALL_TOKEN_KEYS: tuple[str, ...] = TOKEN_KEYS + OPTIONAL_TOKEN_KEYS


def record(i: int) -> Record:
    """The smallest valid Green Check record, numbered `i` (its external id is qbo:1:payment:<i>:invoice:1)."""
    return Record.model_validate(
        {
            "external_id": f"qbo:1:payment:{i}:invoice:1",
            "payment": {
                "id": str(i),
                "date": None,
                "amount": 1,
                "total_amount": 1,
                "type": "cash",
                "reference": None,
                "created_at": "2026-11-01T00:00:00+00:00",
            },
            "invoice": {"id": "1", "number": "1", "date": None, "total": 1, "open_balance": 0, "memo": None},
            "customer": {"id": None, "name": None},
            "currency": "USD",
            "line_items": [],
        }
    )

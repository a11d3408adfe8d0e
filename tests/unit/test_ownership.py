"""Own only what we created (reconciler.ownership): an object is ours only with an ownerReference to our uid."""

from __future__ import annotations

from typing import Any

import pytest

from qbo_operator.core.status import Reason
from qbo_operator.reconciler import ownership


def obj(*uids: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    refs = [{"kind": "QuickbooksIntegration", "name": "acme", "uid": u} for u in uids]
    return {"metadata": {"name": "x", "labels": labels or {}, "ownerReferences": refs}}


@pytest.mark.parametrize(
    ("observed", "ours"),
    [
        (obj("uid-1"), True),
        (obj("other", "uid-1"), True),
        (obj(), False),
        (obj("other"), False),
        (obj(labels={"integrations.greencheckverified.com/integration": "acme"}), False),  # a label is not ownership
        ({"metadata": {}}, False),
        (None, False),
    ],
)
def test_owned_by(observed: dict[str, Any] | None, ours: bool) -> None:
    assert ownership.owned_by(observed, "uid-1") is ours
    assert ownership.owned_by(observed, "") is False  # no uid yet: nothing is ours


@pytest.mark.parametrize(
    ("kind", "observed", "field", "reason", "words"),
    [
        ("Secret", None, "", None, ()),  # absent: we may create it
        ("CronJob", obj("uid-1"), "", None, ()),  # ours: we may apply it
        ("Secret", obj(), "spec.tokenSecretName", Reason.SECRET_CONFLICT, ("spec.tokenSecretName", "bank-db")),
        ("Secret", obj("other"), "", Reason.SECRET_CONFLICT, ("Secret bank-db", "ownerReference")),
        ("CronJob", obj(), "", Reason.OBJECT_CONFLICT, ("CronJob bank-db", "rename")),
        ("Role", obj("other"), "", Reason.OBJECT_CONFLICT, ("Role bank-db",)),
        ("RoleBinding", obj(), "", Reason.OBJECT_CONFLICT, ("RoleBinding",)),
        ("ServiceAccount", obj(), "", Reason.OBJECT_CONFLICT, ("ServiceAccount",)),
    ],
)
def test_conflict(
    kind: str, observed: dict[str, Any] | None, field: str, reason: Reason | None, words: tuple[str, ...]
) -> None:
    problem = ownership.conflict(kind, "bank-db", observed, "uid-1", field)
    assert (problem.reason if problem else None) == reason
    for word in words:
        assert problem is not None and word in problem.message

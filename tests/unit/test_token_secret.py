"""The token Secret's shape and the two builders every writer shares (core.token_secret, core.kube)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from qbo_operator.core import names, token_secret
from qbo_operator.core.kube import event_body, owner_reference
from qbo_operator.core.models import Integration

NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
LABELS = {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.INTEGRATION_LABEL: "acme"}


def integration(name: str = "acme", uid: str = "uid-1") -> Integration:
    return Integration.from_object(
        {"metadata": {"name": name, "namespace": "ns", "uid": uid}, "spec": {"companyId": "c"}}
    )


def ref(uid: str, *, kind: str = names.KIND, name: str = "acme", controller: bool = True) -> dict[str, Any]:
    return {"apiVersion": "v", "kind": kind, "name": name, "uid": uid, "controller": controller}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {},
            {"apiVersion": names.API_VERSION, "kind": names.KIND, "controller": True, "blockOwnerDeletion": True},
        ),
        ({"block_owner_deletion": False}, {"blockOwnerDeletion": False}),
        ({"controller": False}, {"controller": False, "blockOwnerDeletion": True}),
        ({"api_version": "batch/v1", "kind": "CronJob"}, {"apiVersion": "batch/v1", "kind": "CronJob"}),
    ],
)
def test_owner_reference(kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    built = owner_reference("acme", "uid-1", **kwargs)
    assert built["name"] == "acme" and built["uid"] == "uid-1"
    assert {k: built[k] for k in expected} == expected
    assert set(built) == {"apiVersion", "kind", "name", "uid", "controller", "blockOwnerDeletion"}


@pytest.mark.parametrize(
    ("name", "instance", "metadata", "reporting_instance"),
    [
        (None, None, {"namespace": "ns", "generateName": "acme."}, None),
        ("acme.once", "host-1", {"namespace": "ns", "name": "acme.once"}, "host-1"),
    ],
)
def test_event_body(
    name: str | None, instance: str | None, metadata: dict[str, str], reporting_instance: str | None
) -> None:
    event = event_body(integration(), "Warning", "Why", "m" * 2000, "comp", NOW, name=name, instance=instance)
    assert event["metadata"] == metadata
    assert event["involvedObject"] == {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "name": "acme",
        "namespace": "ns",
        "uid": "uid-1",
    }
    assert (event["type"], event["reason"], len(event["message"])) == ("Warning", "Why", 1024)
    assert event["source"] == {"component": "comp"} and event["reportingComponent"] == "comp"
    assert event["firstTimestamp"] == event["lastTimestamp"] == "2026-11-25T09:00:00Z"
    assert event.get("reportingInstance") == reporting_instance and event["count"] == 1


@pytest.mark.parametrize("owner", [None, owner_reference("acme", "uid-1", block_owner_deletion=False)])
def test_manifest(owner: dict[str, Any] | None) -> None:
    secret = token_secret.manifest("ns", "acme", {"k": "dg=="}, owner=owner)
    assert secret["apiVersion"] == "v1" and secret["kind"] == "Secret" and secret["type"] == "Opaque"
    assert secret["metadata"]["name"] == names.token_secret_name("acme") and secret["metadata"]["labels"] == LABELS
    assert secret["metadata"].get("ownerReferences") == (None if owner is None else [owner])
    assert secret["data"] == {"k": "dg=="}
    assert token_secret.manifest("ns", "acme", {}, name="custom")["metadata"]["name"] == "custom"


@pytest.mark.parametrize(
    ("labels", "owners", "kept_owners"),
    [
        (None, None, []),
        ({"team": "a"}, [ref("old-uid")], []),  # this integration's earlier incarnation: replaced
        ({names.INTEGRATION_LABEL: "acme"}, [ref("x", kind="Other")], [ref("x", kind="Other")]),
        ({}, [ref("y", name="other")], [ref("y", name="other")]),
    ],
)
def test_replacement_keeps_others_and_sets_ours(
    labels: dict[str, str] | None, owners: list[dict[str, Any]] | None, kept_owners: list[dict[str, Any]]
) -> None:
    existing = {"metadata": {"name": "acme-qbo-tokens", "resourceVersion": "7", "labels": labels,
                             "ownerReferences": owners}, "data": {"old": "b2xk"}}  # fmt: skip
    body = token_secret.replacement(existing, integration(), {"new": "bmV3"})
    assert body["metadata"]["resourceVersion"] == "7" and body["data"] == {"new": "bmV3"}
    assert body["metadata"]["labels"] == {**(labels or {}), **LABELS}
    gateway = owner_reference("acme", "uid-1", block_owner_deletion=False)
    assert body["metadata"]["ownerReferences"] == [*kept_owners, gateway]
    assert existing["data"] == {"old": "b2xk"}  # the input is not changed


@pytest.mark.parametrize(
    ("owners", "expected"),
    [
        ([], [owner_reference("acme", "uid-1")]),
        ([ref("uid-1", controller=False)], None),  # already ours: nothing to write
        ([ref("other", controller=True)], [ref("other"), owner_reference("acme", "uid-1", controller=False)]),
        ([ref("other", controller=False)], [ref("other", controller=False), owner_reference("acme", "uid-1")]),
    ],
)
def test_adopted_owners(owners: list[dict[str, Any]], expected: list[dict[str, Any]] | None) -> None:
    assert token_secret.adopted_owners(owners, "acme", "uid-1") == expected

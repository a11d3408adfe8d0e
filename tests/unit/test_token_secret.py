"""The token Secret's shape and the two builders every writer shares (core.token_secret, core.kube)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes_asyncio import client

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
    ("labels", "owners"),
    [
        (None, [ref("uid-1")]),
        ({"team": "a"}, [ref("uid-1"), ref("x", kind="Other")]),
        ({names.INTEGRATION_LABEL: "acme"}, [ref("y", name="other"), ref("uid-1", controller=False)]),
    ],
)
def test_replacement_sets_labels_and_data_and_keeps_owners(
    labels: dict[str, str] | None, owners: list[dict[str, Any]]
) -> None:
    existing = {"metadata": {"name": "acme-qbo-tokens", "resourceVersion": "7", "labels": labels,
                             "ownerReferences": owners}, "data": {"old": "b2xk"}}  # fmt: skip
    body = token_secret.replacement(existing, integration(), {"new": "bmV3"})
    assert body["metadata"]["resourceVersion"] == "7" and body["data"] == {"new": "bmV3"}
    assert body["metadata"]["labels"] == {**(labels or {}), **LABELS}
    assert body["metadata"]["ownerReferences"] == owners  # the operator's references, untouched
    assert existing["data"] == {"old": "b2xk"}  # the input is not changed


def test_empty_is_ours_and_holds_nothing() -> None:
    secret = token_secret.empty("ns", "acme", "uid-1", "custom")
    assert secret["metadata"]["name"] == "custom" and secret["metadata"]["labels"] == LABELS
    assert secret["metadata"]["ownerReferences"] == [owner_reference("acme", "uid-1")]  # controller, blocks
    assert secret["data"] == {} and secret["type"] == "Opaque"


@pytest.mark.parametrize(
    ("secret_type", "labels", "owner_uids", "ours"),
    [
        ("Opaque", LABELS, ["uid-1"], True),
        (None, None, ["other", "uid-1"], True),  # ours among other owners
        ("Opaque", LABELS, [], False),  # our labels, no reference: anyone could have written them
        ("Opaque", LABELS, ["uid-old"], False),  # an earlier integration of the same name
        ("Opaque", None, [], False),  # a tenant's own Secret (a database password)
        ("kubernetes.io/service-account-token", LABELS, ["uid-1"], False),
    ],
)
def test_owns_only_by_uid(
    secret_type: str | None, labels: dict[str, str] | None, owner_uids: list[str], ours: bool
) -> None:
    refs = [client.V1OwnerReference(api_version="v", kind=names.KIND, name="acme", uid=u) for u in owner_uids]
    secret = client.V1Secret(
        type=secret_type, metadata=client.V1ObjectMeta(name="acme-qbo-tokens", labels=labels, owner_references=refs)
    )
    assert token_secret.owns(secret, integration()) is ours

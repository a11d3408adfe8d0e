"""`kubectl events --for qbi/<name>`, as the README and docs/troubleshooting.md give it, against the real API
server: the short name resolves and only that integration's Events are listed."""

from __future__ import annotations

import pytest
import yaml

from qbo_operator.core import names
from qbo_operator.harness.controlplane import ControlPlane
from tests.support import phases

pytestmark = pytest.mark.e2e


def event(namespace: str, name: str, uid: str, reason: str, message: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{reason.lower()}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": names.API_VERSION,
            "kind": names.KIND,
            "name": name,
            "namespace": namespace,
            "uid": uid,
        },
        "type": "Normal",
        "reason": reason,
        "message": message,
        "source": {"component": names.MANAGED_BY},
        "firstTimestamp": "2026-11-25T12:00:00Z",
        "lastTimestamp": "2026-11-25T12:00:00Z",
        "count": 1,
    }


def test_kubectl_events_for_an_integration(cluster: ControlPlane, namespace: str) -> None:
    for name in ("acme", "beta"):
        obj = phases.integration(name, namespace, {})
        del obj["metadata"]["generation"]
        cluster.kubectl("apply", "-f", "-", input=yaml.safe_dump(obj))
        uid = cluster.kubectl_json("get", "qbi", name, "-n", namespace)["metadata"]["uid"]
        cluster.kubectl(
            "apply", "-f", "-", input=yaml.safe_dump(event(namespace, name, uid, "Pending", f"Phase Pending: {name}"))
        )
    out = cluster.kubectl("events", "--for", "qbi/acme", "-n", namespace).stdout
    assert "Phase Pending: acme" in out
    assert "beta" not in out

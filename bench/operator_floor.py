"""`python -m bench.operator_floor KUBECONFIG HOME N`: the API server's floor for the operator suite.

A bare client makes, for N integrations, the writes the operator makes for each when it settles one (the
CR's first write, the empty token Secret, the ServiceAccount, the two Roles, the CronJob, the two
RoleBindings after them, the status patch and an Event), built with the operator's own manifests and sent
through its own write calls, 16 integrations at a time (the operator's MAX_CONCURRENT_RECONCILES), with no
watch, index or reconcile. Its wall time is the least the API server needs for that many writes on this
machine in this run. Prints one JSON line: {"seconds": ..., "writes": ...}."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

from qbo_operator.core import kube, names
from qbo_operator.core.config import Settings
from qbo_operator.reconciler import manifests
from qbo_operator.reconciler.metrics import OperatorMetrics
from qbo_operator.reconciler.reconcile import MAX_CONCURRENT_RECONCILES
from qbo_operator.reconciler.writes import Writer

NAMESPACES = 10
GATEWAY = "qbo-system/qbo-operator-gateway"


def floor_namespace(i: int) -> str:
    return f"bench-floor-{i % NAMESPACES:02d}"


async def one(writer: Writer, k: kube.Kube, settings: Settings, home: str, i: int) -> int:
    namespace, name = floor_namespace(i), f"floor-{i:05d}"
    body = {
        "apiVersion": names.API_VERSION,
        "kind": names.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"companyId": str(uuid.UUID(int=i + 1)), "companyName": f"Floor {i:05d}"},
    }
    cr: dict[str, Any] = await k.custom.create_namespaced_custom_object(
        names.GROUP, names.VERSION, namespace, names.PLURAL, body
    )
    owner = manifests.Owner(namespace, name, cr["metadata"]["uid"], home)
    secret = names.token_secret_name(name)
    await writer.create_token_secret(namespace, name, owner.uid, secret)
    schedule = "0 2 * * *"
    cron = manifests.cronjob(owner, settings, schedule, "UTC", True, "production")
    first = [
        manifests.service_account(owner),
        manifests.role(owner, secret),
        manifests.gateway_role(owner, secret),
        cron,
    ]
    await asyncio.gather(*(writer.apply(obj) for obj in first))
    await asyncio.gather(
        writer.apply(manifests.role_binding(owner)), writer.apply(manifests.gateway_role_binding(owner, GATEWAY))
    )
    await writer.patch_status(namespace, name, {"phase": "Pending", "observedGeneration": 1})
    involved = {"apiVersion": names.API_VERSION, "kind": names.KIND, "name": name, "namespace": namespace}
    event: Any = {
        "metadata": {"generateName": f"{name}."},
        "involvedObject": involved,
        "reason": "Pending",
        "message": "floor",
        "type": "Normal",
    }
    await k.core.create_namespaced_event(namespace, event)
    return 10


async def floor(home: str, n: int) -> dict[str, float]:
    settings = Settings()
    async with kube.connect() as k:
        writer = Writer(k, OperatorMetrics(lambda: []))
        limit = asyncio.Semaphore(MAX_CONCURRENT_RECONCILES)

        async def bounded(i: int) -> int:
            async with limit:
                return await one(writer, k, settings, home, i)

        started = time.monotonic()
        writes = sum(await asyncio.gather(*(bounded(i) for i in range(n))))
        return {"seconds": time.monotonic() - started, "writes": writes}


def main(argv: list[str]) -> int:
    kubeconfig, home, n = argv[0], argv[1], int(argv[2])
    os.environ["KUBECONFIG"] = kubeconfig
    print(json.dumps(asyncio.run(floor(home, n))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

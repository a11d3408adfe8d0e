"""`core.informer` against the real API server: a listing in pages, then the watch's events in order, and a
listing after a gap (a restart, or a 410) that reports what went meanwhile as DELETED, so an index fed by it
never keeps a ghost. The operator's indexes and the gateway's realm index are both fed this way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest_asyncio
from kubernetes_asyncio import config

from qbo_operator.core.informer import Informer
from qbo_operator.harness.controlplane import ControlPlane

SECRETS = ("", "v1", "secrets")
LABEL = "informer-test"


@pytest_asyncio.fixture(loop_scope="function")
async def api(cluster: ControlPlane) -> AsyncIterator[Any]:
    client = await config.new_client_from_config(config_file=str(cluster.kubeconfig))
    try:
        yield client
    finally:
        await client.close()


def secret(cluster: ControlPlane, namespace: str, name: str, labelled: bool = True, value: str = "a") -> None:
    labels = ["--dry-run=client", "-o", "yaml"]
    manifest = cluster.kubectl(
        "create", "secret", "generic", name, "-n", namespace, f"--from-literal=k={value}", *labels
    ).stdout
    if labelled:
        manifest = manifest.replace("metadata:\n", f"metadata:\n  labels:\n    {LABEL}: x\n", 1)
    cluster.kubectl("apply", "-f", "-", input=manifest)


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str | None, str]] = []

    def __call__(self, event_type: str | None, obj: dict[str, Any]) -> None:
        assert obj["metadata"]["namespace"]
        if event_type != "DELETED" or "uid" in obj["metadata"]:  # listed or watched: as a watch brings it
            assert (obj["apiVersion"], obj["kind"]) == ("v1", "Secret")
        self.events.append((event_type, obj["metadata"]["name"]))

    def of(self, name: str) -> list[str | None]:
        return [t for t, n in self.events if n == name]


async def test_lists_in_pages_then_follows_the_watch_and_a_relisting_reports_what_went(
    cluster: ControlPlane, namespace: str, api: Any
) -> None:
    for i in range(5):
        secret(cluster, namespace, f"s{i}")
    secret(cluster, namespace, "unlabelled", labelled=False)
    seen = Recorder()
    informer = Informer(api, SECRETS, seen, [namespace], label_selector=LABEL, page_size=2)  # three pages
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        assert sorted(seen.events) == [(None, f"s{i}") for i in range(5)]  # the selector kept "unlabelled" out
        secret(cluster, namespace, "s5")
        secret(cluster, namespace, "s0", value="b")
        cluster.kubectl("delete", "secret", "s1", "-n", namespace)
        async with asyncio.timeout(30):
            while seen.of("s1") != [None, "DELETED"]:
                await asyncio.sleep(0.05)
        assert seen.of("s5") == ["ADDED"] and seen.of("s0") == [None, "MODIFIED"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # Not watching: one goes, one comes. The next run lists again (as after a 410 Gone).
    cluster.kubectl("delete", "secret", "s2", "-n", namespace)
    secret(cluster, namespace, "s6")
    seen.events.clear()
    informer.synced.clear()
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        assert sorted(seen.events, key=str) == sorted(
            [("DELETED", "s2"), *((None, f"s{i}") for i in (0, 3, 4, 5, 6))], key=str
        )
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

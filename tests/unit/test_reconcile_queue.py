"""Watch events queue reconciles (`Runtime.request`, issue 20) instead of awaiting them: the call returns at once,
nothing runs before every kind has been listed (`open`), a key already waiting is queued once, and an event during
a pass queues the next pass."""

from __future__ import annotations

import asyncio
from typing import Any

from qbo_operator.reconciler.reconcile import Runtime
from qbo_operator.reconciler.views import Index


class Recording(Runtime):
    def __init__(self) -> None:  # only what the queue needs: no settings, client or metrics
        self._queue = asyncio.Queue()
        self._queued = set()
        self._workers = []
        self._background = []
        self.states = {}
        self.passes: list[tuple[str, str]] = []
        self.gate = asyncio.Event()
        self.opened = asyncio.Event()
        self._started = 0.0
        self.indices = {"integrations": Index()}

    async def reconcile(self, namespace: str, name: str) -> None:
        self.passes.append((namespace, name))
        await self.gate.wait()


async def _settle(runtime: Any) -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_requests_return_at_once_and_coalesce_while_waiting() -> None:
    runtime = Recording()
    for _ in range(8):  # a new integration's children, one event each
        runtime.request("ns", "a")
    runtime.request("ns", "b")
    await _settle(runtime)
    assert runtime.passes == [] and not runtime.opened.is_set()  # the views are not complete yet
    runtime.open()
    await _settle(runtime)
    assert runtime.passes == [("ns", "a"), ("ns", "b")] and runtime.opened.is_set()
    runtime.request("ns", "a")  # during a's pass: queued for one more
    runtime.request("ns", "a")
    runtime.gate.set()
    await _settle(runtime)
    assert runtime.passes == [("ns", "a"), ("ns", "b"), ("ns", "a")]
    await runtime.stop()

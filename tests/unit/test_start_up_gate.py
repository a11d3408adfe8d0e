"""The operator's kopf start-up gate (`controller.QuietToggleSet`, issue 20): kopf holds every listed object's
worker until all index toggles are dropped; the quiet set opens at the same moment as kopf's own, but wakes each
waiter once instead of once per object, so a restart over N objects costs N wake-ups, not N²."""

from __future__ import annotations

import asyncio

import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._core.reactor import orchestration

from qbo_operator.reconciler import controller
from qbo_operator.reconciler.controller import QuietToggleSet

OBJECTS = 200


class Counted:
    """Counts how often the set's state is evaluated: once per wake-up of each waiter, plus the set's own checks."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, states: object) -> bool:
        self.calls += 1
        return all(states)  # type: ignore[call-overload]


async def _gate(kind: type[aiotoggles.ToggleSet]) -> int:
    """kopf's pattern: a toggle per object, a waiter per object, each object dropping its own toggle."""
    fn = Counted()
    gate = kind(fn)
    toggles = [await gate.make_toggle(name=str(i)) for i in range(OBJECTS)]
    waiters = [asyncio.create_task(gate.wait_for(True)) for _ in range(OBJECTS)]
    await asyncio.sleep(0)
    for toggle in toggles[:-1]:
        await gate.drop_toggle(toggle)
        await asyncio.sleep(0)
    assert not any(w.done() for w in waiters), "the gate opened before every object was indexed"
    await gate.drop_toggle(toggles[-1])
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=30)
    assert gate.is_on()
    return fn.calls


async def test_the_quiet_gate_opens_with_the_last_toggle_and_wakes_each_waiter_about_once() -> None:
    quiet = await _gate(QuietToggleSet)
    stock = await _gate(aiotoggles.ToggleSet)
    assert quiet <= 10 * OBJECTS  # linear: a few checks per make, drop and waiter
    assert stock >= OBJECTS * OBJECTS // 2  # what the quiet set avoids (kopf 1.45: every drop wakes every waiter)


async def test_a_toggle_turned_on_by_hand_still_wakes_its_waiters() -> None:
    gate = QuietToggleSet(all)
    toggle = await gate.make_toggle()
    waiter = asyncio.create_task(gate.wait_for(True))
    await asyncio.sleep(0)
    await toggle.turn_to(True)
    await asyncio.wait_for(waiter, timeout=5)
    await gate.drop_toggles([toggle])
    assert gate.is_on()


def test_kopf_builds_its_gate_from_the_quiet_set_once_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aiotoggles, "ToggleSet", aiotoggles.ToggleSet)  # restored after the test
    controller.quiet_start_up_gate()
    assert orchestration.aiotoggles.ToggleSet is QuietToggleSet  # what `orchestrator` calls for its gate
    assert isinstance(orchestration.aiotoggles.ToggleSet(all), aiotoggles.ToggleSet)

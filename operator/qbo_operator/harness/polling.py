"""Waiting for a condition by polling: the one loop the harness, the demo and the tests share.

What the harness waits for (a Pending Pod, a phase on the integration, a Secret) lives in another
process, so there is nothing to be notified by: ask, sleep, ask again, and on timeout say what was
awaited and what was seen last."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """A condition that did not come true in time; an AssertionError, so a test that waits fails as a test."""


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.2) -> T:
    """Call `probe` every `interval` seconds until it returns something truthy, and return that;
    WaitTimeout naming `what` and the last value after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")

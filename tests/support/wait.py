"""The one polling helper is the harness's (`harness.polling.wait_for`: a timeout is an AssertionError, so a
test that waits fails as a test); here with the longer timeout a whole product needs."""

from __future__ import annotations

from qbo_operator.harness.polling import WaitTimeout, wait_for

__all__ = ["STACK_TIMEOUT", "WaitTimeout", "wait_for"]

STACK_TIMEOUT = 90.0  # a whole product (chart, operator, gateway, sandboxes) needs longer than one process

"""One retrying HTTP transport for the sync's two clients, QuickBooks (`qbo.py`) and Green Check (`greencheck.py`).

Both meet trouble the same way, so the plumbing lives here once: a timeout or a dropped connection is
`Transient`; a client reads each answer and raises `Throttled` (429, with the server's delay) or `Transient`
(5xx, a malformed body). `retrying` waits out a throttle (bounded by `max_throttle_wait`) up to
`throttle_retries` times and backs off exponentially with jitter up to `transient_retries` times; the two
budgets are counted apart, so a long throttle does not use up the retries meant for real failures. What
outlasts them becomes the client's own error, naming the service, what happened and the request id. The SFTP
delivery (`sftp.py`) retries its network faults through the same loop (`retrying`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, Self, TypeVar

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type
from tenacity.wait import wait_random_exponential

log = logging.getLogger(__name__)
T = TypeVar("T")


class Transient(Exception):
    """Worth another attempt after a back-off. `request_id`: the server's id for the failed request."""

    def __init__(self, reason: str, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.request_id = request_id


class TimedOut(Transient):
    """No answer within the client's timeout: worth another attempt, or a smaller request (`qbo` halves pages)."""


class Throttled(Transient):
    """The server asked us to slow down; `delay` is how long it said to wait."""

    def __init__(self, reason: str, delay: float, request_id: str | None = None) -> None:
        super().__init__(reason, request_id)
        self.delay = delay


class RetryPolicy(Protocol):
    """The knobs `retrying` reads; each client's policy dataclass has them (with its own defaults)."""

    @property
    def throttle_retries(self) -> int: ...
    @property
    def max_throttle_wait(self) -> float: ...
    @property
    def backoff_initial(self) -> float: ...
    @property
    def backoff_max(self) -> float: ...
    @property
    def transient_retries(self) -> int: ...
    @property
    def timeout(self) -> float: ...


class Transport:
    """An httpx client for one service, its retry loop, and `requests`: every HTTP attempt, retries included.

    `service` names the server in messages; `id_label` names its request id in the retry log (`always_tag`:
    print the label even when the answer carried no id); `throttle_pad` is added to every throttle wait;
    `error(message, request_id)` builds the client's error for what outlasted the budget."""

    def __init__(
        self,
        service: str,
        policy: RetryPolicy,
        error: Callable[[str, str | None], Exception],
        *,
        id_label: str,
        always_tag: bool = False,
        throttle_pad: float = 0.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.service = service
        self.policy = policy
        self._error = error
        self._id_label = id_label
        self._always_tag = always_tag
        self._throttle_pad = throttle_pad
        self._sleep = sleep
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(policy.timeout, connect=10.0))
        self.requests = 0

    async def aclose(self) -> None:
        await self._http.aclose()

    async def post(
        self, url: str, *, content: bytes, headers: dict[str, str], params: dict[str, str] | None = None
    ) -> httpx.Response:
        """One attempt; a timeout is `TimedOut`, a failed connection `Transient`, any answer the caller's to read."""
        return await self.send("POST", url, content=content, headers=headers, params=params)

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: dict[str, str],
        content: bytes | None = None,
        params: dict[str, str] | None = None,
    ) -> httpx.Response:
        self.requests += 1
        try:
            return await self._http.request(method, url, params=params, content=content, headers=headers)
        except httpx.TimeoutException:
            raise TimedOut("the request timed out") from None
        except httpx.TransportError as exc:
            raise Transient(f"connection failed ({type(exc).__name__})") from None

    async def retrying(self, fn: Callable[[], Awaitable[T]]) -> T:
        """`fn()` until it returns, retrying `Transient` within the policy's two budgets."""
        return await retrying(
            fn, self.service, self.policy, self._error, tag=self._tag, sleep=self._sleep, pad=self._throttle_pad
        )

    def _tag(self, exc: BaseException | None) -> str:
        request_id = getattr(exc, "request_id", None)
        return f" ({self._id_label} {request_id})" if request_id or self._always_tag else ""


async def retrying(
    fn: Callable[[], Awaitable[T]],
    service: str,
    policy: RetryPolicy,
    error: Callable[[str, str | None], Exception],
    *,
    tag: Callable[[BaseException | None], str] = lambda exc: "",
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    pad: float = 0.0,
) -> T:
    """`fn()` until it returns, retrying `Transient` within the policy's two budgets; what outlasts them
    becomes `error(message, request_id)`. HTTP and SFTP delivery share it."""
    p = policy
    counts = {"throttled": 0, "transient": 0}
    backoff = wait_random_exponential(multiplier=p.backoff_initial, max=p.backoff_max)

    def stop(state: RetryCallState) -> bool:
        kind = "throttled" if isinstance(_outcome(state), Throttled) else "transient"
        counts[kind] += 1
        return counts[kind] > (p.throttle_retries if kind == "throttled" else p.transient_retries)

    def wait(state: RetryCallState) -> float:
        exc = _outcome(state)
        if isinstance(exc, Throttled):
            return min(exc.delay, p.max_throttle_wait) + pad
        return float(backoff(state))

    def before_sleep(state: RetryCallState) -> None:
        exc = _outcome(state)
        delay = state.next_action.sleep if state.next_action else 0.0
        log.warning("%s: %s%s; retrying in %.1fs", service, exc, tag(exc), delay)

    try:
        result: T = await AsyncRetrying(
            retry=retry_if_exception_type(Transient),
            stop=stop,
            wait=wait,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )(fn)
    except Throttled as exc:
        message = f"{service} kept throttling (429) after {p.throttle_retries} waits: {exc}"
        raise error(message, exc.request_id) from None
    except Transient as exc:
        message = f"{service} is unavailable after {p.transient_retries + 1} attempts: {exc}"
        raise error(message, exc.request_id) from None
    return result


class TransportClient:
    """What both API clients share: their transport, its request count, and closing it (also by `async with`)."""

    _transport: Transport

    @property
    def requests(self) -> int:
        """Every HTTP attempt so far, retries included."""
        return self._transport.requests

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _outcome(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome else None


def retry_after(value: str | None) -> float | None:
    """A `Retry-After` header in seconds (never negative); None when absent or not a number."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None

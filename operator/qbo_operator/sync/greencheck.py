"""Green Check client (docs/greencheck.md §2); the contract's records and their batching are in `records`.

The ingestion endpoint is an assumed contract, so everything the sync needs goes through one small
call, `GreenCheckClient.deliver(batch) -> list[PaymentResult]`: point `GREENCHECK_API_URL` elsewhere or
replace this module and nothing else changes.

- Token: `POST /auth/token` (client credentials), cached until shortly before `expires_at`, which is
  read both ways the docs disagree on (below 10^9: seconds from now; else a Unix time). A 403
  `EXPIRED_TOKEN` fetches a new token and retries once.
- Batches: payment sets, each replacing one payment's records at Green Check as a unit; ≤ 500 sets,
  ≤ 500 records and < 5 MB, measured on the exact bytes sent (`encode_payment_set`/`encode_body`).
  `Idempotency-Key` = hex sha256 of the body, so a retry of the same bytes is answered from Green
  Check's store and any other body is a new request.
- 413 (too large) and 422 (validation) split the batch by payment sets in halves and retry the halves, so
  one bad set cannot block the others; a single set that still gets 422 is returned as `rejected` with
  Green Check's details (nothing of that payment changed).
- A replayed answer (`Idempotent-Replayed: true`) is just the answer: re-applying a set is harmless
  (replace semantics), and the results say what the first request changed.
- 429 waits until `X-RateLimit-Reset` (or `Retry-After`); 5xx, timeouts and malformed answers back
  off exponentially with jitter, bounded (`transport.Transport`). Every failure is logged with
  `x-amzn-requestid`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from qbo_operator.core.config import Tuning
from qbo_operator.core.redaction import redact
from qbo_operator.sync.records import (
    MAX_BODY_BYTES,
    MAX_ITEMS,
    Batch,
    IngestResponse,
    PaymentResult,
    PaymentSet,
    ResultError,
    TokenReply,
    encode_body,
    encode_payment_set,
    idempotency_key,
)
from qbo_operator.sync.transport import Throttled, Transient, Transport, TransportClient, retry_after

log = logging.getLogger(__name__)


def token_expiry(expires_at: float, now: float) -> float:
    """Green Check's `expires_at` as a Unix time: the spec says seconds-from-now, the docs a Unix time."""
    return now + expires_at if expires_at < 1e9 else expires_at


# ---------------------------------------------------------------------------------------------
# Client


class GreenCheckError(Exception):
    """A delivery that failed for good; the message says what to do and carries the request id."""

    def __init__(self, message: str, request_id: str | None = None) -> None:
        super().__init__(message + (f" (x-amzn-requestid {request_id})" if request_id else ""))
        self.request_id = request_id


class _Expired(Exception):
    pass


class _Split(Exception):
    """The server refused this body as a whole (413 or 422): retry it in halves."""

    def __init__(self, status: int, reason: str, details: list[ResultError]) -> None:
        super().__init__(reason)
        self.status = status
        self.details = details


@dataclass(frozen=True)
class GreenCheckPolicy:
    throttle_retries: int = 8
    max_throttle_wait: float = 120.0
    default_throttle_wait: float = 5.0  # 429 without X-RateLimit-Reset or Retry-After
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    transient_retries: int = 5
    timeout: float = 60.0

    @classmethod
    def from_tuning(cls, tuning: Tuning) -> GreenCheckPolicy:
        # A Green Check 429 without a reset time is brief: never wait the QuickBooks minute for it.
        return cls(default_throttle_wait=min(tuning.throttle_wait, 5.0), **tuning.retry())


class GreenCheckClient(TransportClient):
    """`deliver(batch)` is the whole contract; `requests` counts every HTTP request (token ones too)."""

    def __init__(
        self,
        api_url: str,
        client_id: str,
        client_secret: str,
        service_provider_id: str,
        policy: GreenCheckPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._base = api_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._sp = service_provider_id
        self.policy = policy or GreenCheckPolicy()
        self._clock = clock
        self._transport = Transport(
            "Green Check",
            self.policy,
            GreenCheckError,
            id_label="x-amzn-requestid",
            always_tag=True,
            throttle_pad=0.05,
            sleep=sleep,
        )
        self._token: str | None = None
        self._token_expiry = 0.0
        self.run_id = uuid.uuid4().hex  # in every Idempotency-Key: replays answer this client's own retries only
        self._token_lock = asyncio.Lock()

    # --- token --------------------------------------------------------------------------------

    async def _access_token(self, force: bool = False) -> str:
        async with self._token_lock:
            if not force and self._token and self._clock() < self._token_expiry - 60:
                return self._token
            self._token = None
            reply = await self._transport.retrying(self._fetch_token)
            self._token = reply.access_token
            self._token_expiry = token_expiry(reply.expires_at, self._clock())
            return self._token

    async def _fetch_token(self) -> TokenReply:
        resp = await self._post(
            "/auth/token",
            content=json.dumps(
                {
                    "client_id": self._client_id,
                    "client_secret": self._client_secret,
                    "grant_type": "client_credentials",
                    "scope": [],
                }
            ).encode(),
            headers={},
        )
        rid = resp.headers.get("x-amzn-requestid")
        if resp.status_code == 200:
            try:
                return TokenReply.model_validate_json(resp.content)
            except ValidationError:
                raise Transient("the token endpoint answered 200 with an unreadable body", rid) from None
        self._check_transient(resp)
        raise GreenCheckError(
            f"Green Check refused the client credentials (HTTP {resp.status_code}: {self._said(resp)}); "
            "check GREENCHECK_CLIENT_ID and GREENCHECK_CLIENT_SECRET",
            rid,
        )

    # --- delivery -----------------------------------------------------------------------------

    async def deliver(self, batch: Batch) -> list[PaymentResult]:
        """Send one batch; one PaymentResult per payment set (applied, or rejected with Green Check's errors)."""
        sets = list(batch.payments)
        if not sets:
            return []
        if len(sets) > MAX_ITEMS or batch.records_count > MAX_ITEMS:
            raise ValueError(f"a batch holds at most {MAX_ITEMS} payment sets and {MAX_ITEMS} records")
        if len({s.payment_id for s in sets}) != len(sets):
            raise ValueError("a batch must not repeat a payment_id")
        if batch.encoded is not None and len(batch.encoded) == len(sets):
            encoded = list(batch.encoded)
        else:
            encoded = [encode_payment_set(s) for s in sets]
        return await self._deliver_sets(batch, sets, encoded)

    async def _deliver_sets(self, batch: Batch, sets: list[PaymentSet], encoded: list[bytes]) -> list[PaymentResult]:
        try:
            return await self._send_batch(batch, sets, encoded)
        except _Split as split:
            if len(sets) == 1:
                pid = sets[0].payment_id
                if split.status == 413:
                    raise GreenCheckError(
                        f"Green Check refused payment {pid} as too large (413) even on its own"
                    ) from None
                return [PaymentResult(payment_id=pid, status="rejected", errors=split.details)]
            half = len(sets) // 2
            log.info("Green Check answered %d to %d payment sets: retrying in halves", split.status, len(sets))
            first = await self._deliver_sets(batch, sets[:half], encoded[:half])
            second = await self._deliver_sets(batch, sets[half:], encoded[half:])
            return first + second

    async def _send_batch(self, batch: Batch, sets: list[PaymentSet], encoded: list[bytes]) -> list[PaymentResult]:
        body = encode_body(batch.realm_id, encoded)
        if len(body) >= MAX_BODY_BYTES and len(sets) > 1:
            raise _Split(413, "body over the size limit", [])
        key = idempotency_key(body, self.run_id)
        path = f"/service-providers/{self._sp}/crbs/{batch.crb_id}/sales/invoice-payments"

        async def once() -> list[PaymentResult]:
            for attempt in range(2):
                token = await self._access_token(force=attempt > 0)
                resp = await self._post(
                    path,
                    content=body,
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                )
                try:
                    return self._results(resp, sets)
                except _Expired:
                    if attempt:
                        raise GreenCheckError(
                            "Green Check reports a just-issued token as expired (403 EXPIRED_TOKEN); "
                            "check the clock of this machine",
                            resp.headers.get("x-amzn-requestid"),
                        ) from None
                    log.info("Green Check token expired (403 EXPIRED_TOKEN): fetching a new one")
            raise AssertionError("unreachable")  # pragma: no cover

        return await self._transport.retrying(once)

    def _results(self, resp: httpx.Response, sets: list[PaymentSet]) -> list[PaymentResult]:
        rid = resp.headers.get("x-amzn-requestid")
        status = resp.status_code
        if status == 200:
            try:
                parsed = IngestResponse.model_validate_json(resp.content)
            except ValidationError:
                raise Transient("Green Check answered 200 with an unreadable body", rid) from None
            by_id = {r.payment_id: r for r in parsed.results}
            missing = [s.payment_id for s in sets if s.payment_id not in by_id]
            if missing:
                raise GreenCheckError(
                    f"Green Check's answer lacks results for {len(missing)} of {len(sets)} payments "
                    f"(first: {missing[0]}); nothing from this batch is counted as delivered",
                    rid,
                )
            return [by_id[s.payment_id] for s in sets]
        data = _json(resp)
        details = data.get("details") if isinstance(data, dict) else None
        if status == 403 and details == "EXPIRED_TOKEN":
            raise _Expired()
        if status == 413:
            log.warning("Green Check: 413 request too large (x-amzn-requestid %s)", rid)
            raise _Split(413, "request too large", [])
        if status == 422:
            log.warning("Green Check: 422 %s (x-amzn-requestid %s)", self._said(resp), rid)
            raise _Split(422, self._said(resp), _details(details))
        self._check_transient(resp)
        if status in (401, 403):
            raise GreenCheckError(
                f"Green Check refused the request (HTTP {status}: {self._said(resp)}); check the client "
                "credentials and GREENCHECK_SERVICE_PROVIDER_ID",
                rid,
            )
        raise GreenCheckError(f"Green Check refused the batch (HTTP {status}: {self._said(resp)})", rid)

    def _said(self, resp: httpx.Response) -> str:
        """What the server said, with our client secret removed too (a token endpoint may echo it)."""
        return _message(resp, (self._client_secret,))

    def _check_transient(self, resp: httpx.Response) -> None:
        rid = resp.headers.get("x-amzn-requestid")
        if resp.status_code == 429:
            raise Throttled(f"HTTP 429 {self._said(resp)}", self._throttle_delay(resp), rid)
        if resp.status_code >= 500:
            raise Transient(f"HTTP {resp.status_code} {self._said(resp)}", rid)

    def _throttle_delay(self, resp: httpx.Response) -> float:
        reset = resp.headers.get("X-RateLimit-Reset")
        if reset:
            try:
                return max(0.0, float(reset) - self._clock())
            except ValueError:
                return self.policy.default_throttle_wait
        delay = retry_after(resp.headers.get("Retry-After"))
        return self.policy.default_throttle_wait if delay is None else delay

    # --- transport ----------------------------------------------------------------------------

    async def _post(self, path: str, content: bytes, headers: dict[str, str]) -> httpx.Response:
        return await self._transport.post(
            self._base + path,
            content=content,
            headers={"Content-Type": "application/json", "Accept": "application/json", **headers},
        )


def _json(resp: httpx.Response) -> Any:
    try:
        return json.loads(resp.content)
    except ValueError:
        return None


def _message(resp: httpx.Response, known: tuple[str, ...] = ()) -> str:
    """What the server said, bounded and with our bearer token and the `known` secrets we sent (should it
    echo them) removed."""
    secrets = (resp.request.headers.get("authorization", "").removeprefix("Bearer ").strip(), *known)
    data = _json(resp)
    if isinstance(data, dict):
        parts = [str(data[k]) for k in ("message", "details") if isinstance(data.get(k), str)]
        if parts:
            return redact(": ".join(parts), 200, secrets)
    return (redact(resp.text, 120, secrets) or "empty body") if data is None else "no message"


def _details(details: Any) -> list[ResultError]:
    """Green Check's 422 details for a one-set request, fields named from the set (`records[0].invoice.total`)."""
    if isinstance(details, dict):
        out = []
        for key, value in details.items():
            msg = value.get("message") if isinstance(value, dict) else value
            field = str(key).removeprefix("body.payments[0].")
            out.append(ResultError(field=field, message=redact(str(msg), 200)))
        return out
    if isinstance(details, str):
        return [ResultError(message=redact(details, 200))]
    return [ResultError(message="validation failed")]

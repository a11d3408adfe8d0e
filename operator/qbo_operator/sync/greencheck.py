"""Green Check client (docs/greencheck.md §2); the contract's records and their batching are in `records`.

The ingestion endpoint is an assumed contract, so everything the sync needs goes through one small
call, `GreenCheckClient.deliver(batch) -> list[Result]`: point `GREENCHECK_API_URL` elsewhere or
replace this module and nothing else changes.

- Token: `POST /auth/token` (client credentials), cached until shortly before `expires_at`, which is
  read both ways the docs disagree on (below 10^9: seconds from now; else a Unix time). A 403
  `EXPIRED_TOKEN` fetches a new token and retries once.
- Batches: ≤ 500 records and < 5 MB, measured on the exact bytes sent (`encode_record`/`encode_body`).
  `Idempotency-Key` = hex sha256 of the batch's sorted external ids.
- 413 (too large) and 422 (validation) split the batch in half and retry the halves, so one bad
  record cannot block the others; a single record that still gets 422 is returned as `rejected`
  with Green Check's details. A 422 for a reused Idempotency-Key on a one-record batch means the
  same record went out under that key before (a crash between send and checkpoint): `duplicate`.
- A replayed answer (`Idempotent-Replayed: true`) that does not answer this client's own unanswered
  attempt repeats what an earlier request created: those records count as `duplicate`, so run
  statistics stay true (the header is the common convention; without it counts may run high).
- 429 waits until `X-RateLimit-Reset` (or `Retry-After`); 5xx, timeouts and malformed answers back
  off exponentially with jitter, bounded (`transport.Transport`). Every failure is logged with
  `x-amzn-requestid`."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError

from qbo_operator.core.config import Tuning
from qbo_operator.core.redaction import redact
from qbo_operator.sync.records import (
    MAX_BODY_BYTES,
    MAX_RECORDS,
    Batch,
    IngestResponse,
    Record,
    Result,
    ResultError,
    TokenReply,
    encode_body,
    encode_record,
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

    def __init__(self, status: int, reason: str, idempotency_conflict: bool, details: list[ResultError]) -> None:
        super().__init__(reason)
        self.status = status
        self.idempotency_conflict = idempotency_conflict
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
        self._token_lock = asyncio.Lock()
        self._sent_keys: set[str] = set()
        self._acked_keys: set[str] = set()

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

    async def deliver(self, batch: Batch) -> list[Result]:
        """Send one batch; one Result per record, in the batch's order (created, duplicate or rejected)."""
        if not batch.records:
            return []
        if len(batch.records) > MAX_RECORDS:
            raise ValueError(f"a batch holds at most {MAX_RECORDS} records")
        if batch.encoded is not None and len(batch.encoded) == len(batch.records):
            encoded = list(batch.encoded)
        else:
            encoded = [encode_record(r) for r in batch.records]
        by_id = {r.external_id: r for r in batch.records}
        if len(by_id) != len(batch.records):
            raise ValueError("a batch must not repeat an external_id")
        results = await self._deliver_encoded(batch, list(batch.records), encoded)
        return results

    async def _deliver_encoded(self, batch: Batch, records: list[Record], encoded: list[bytes]) -> list[Result]:
        try:
            return await self._send_batch(batch, records, encoded)
        except _Split as split:
            if len(records) == 1:
                rid = records[0].external_id
                if split.idempotency_conflict:
                    log.info("Green Check already holds %s under its idempotency key: counted as duplicate", rid)
                    return [Result(external_id=rid, status="duplicate")]
                if split.status == 413:
                    raise GreenCheckError(
                        f"Green Check refused record {rid} as too large (413) even on its own"
                    ) from None
                return [Result(external_id=rid, status="rejected", errors=split.details)]
            half = len(records) // 2
            log.info("Green Check answered %d to %d records: retrying in halves", split.status, len(records))
            first = await self._deliver_encoded(batch, records[:half], encoded[:half])
            second = await self._deliver_encoded(batch, records[half:], encoded[half:])
            return first + second

    async def _send_batch(self, batch: Batch, records: list[Record], encoded: list[bytes]) -> list[Result]:
        body = encode_body(batch.realm_id, encoded)
        if len(body) >= MAX_BODY_BYTES and len(records) > 1:
            raise _Split(413, "body over the size limit", False, [])
        key = idempotency_key([r.external_id for r in records])
        path = f"/service-providers/{self._sp}/crbs/{batch.crb_id}/sales/invoice-payments"

        async def once() -> list[Result]:
            for attempt in range(2):
                token = await self._access_token(force=attempt > 0)
                # A replay answers our own unanswered attempt (a timeout, a 5xx) only if this process sent
                # the key and got no answer yet; otherwise it repeats an earlier request's news.
                ours = key in self._sent_keys and key not in self._acked_keys
                self._sent_keys.add(key)
                resp = await self._post(
                    path,
                    content=body,
                    headers={"Authorization": f"Bearer {token}", "Idempotency-Key": key},
                )
                try:
                    results = self._results(resp, records)
                except _Expired:
                    if attempt:
                        raise GreenCheckError(
                            "Green Check reports a just-issued token as expired (403 EXPIRED_TOKEN); "
                            "check the clock of this machine",
                            resp.headers.get("x-amzn-requestid"),
                        ) from None
                    log.info("Green Check token expired (403 EXPIRED_TOKEN): fetching a new one")
                    continue
                self._acked_keys.add(key)
                if not ours and resp.headers.get("Idempotent-Replayed", "").lower() == "true":
                    results = [
                        r.model_copy(update={"status": "duplicate"}) if r.status == "created" else r for r in results
                    ]
                return results
            raise AssertionError("unreachable")  # pragma: no cover

        return await self._transport.retrying(once)

    def _results(self, resp: httpx.Response, records: list[Record]) -> list[Result]:
        rid = resp.headers.get("x-amzn-requestid")
        status = resp.status_code
        if status == 200:
            try:
                parsed = IngestResponse.model_validate_json(resp.content)
            except ValidationError:
                raise Transient("Green Check answered 200 with an unreadable body", rid) from None
            by_id = {r.external_id: r for r in parsed.results}
            missing = [r.external_id for r in records if r.external_id not in by_id]
            if missing:
                raise GreenCheckError(
                    f"Green Check's answer lacks results for {len(missing)} of {len(records)} records "
                    f"(first: {missing[0]}); nothing from this batch is counted as delivered",
                    rid,
                )
            return [by_id[r.external_id] for r in records]
        data = _json(resp)
        details = data.get("details") if isinstance(data, dict) else None
        if status == 403 and details == "EXPIRED_TOKEN":
            raise _Expired()
        if status == 413:
            log.warning("Green Check: 413 request too large (x-amzn-requestid %s)", rid)
            raise _Split(413, "request too large", False, [])
        if status == 422:
            conflict = isinstance(details, dict) and any("idempotency" in str(k).lower() for k in details)
            log.warning("Green Check: 422 %s (x-amzn-requestid %s)", self._said(resp), rid)
            raise _Split(422, self._said(resp), conflict, _details(details))
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
    if isinstance(details, dict):
        out = []
        for key, value in details.items():
            msg = value.get("message") if isinstance(value, dict) else value
            out.append(ResultError(field=str(key).removeprefix("body.records[0]."), message=redact(str(msg), 200)))
        return out
    if isinstance(details, str):
        return [ResultError(message=redact(details, 200))]
    return [ResultError(message="validation failed")]

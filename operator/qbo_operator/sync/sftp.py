"""Delivery over Green Check's documented SFTP intake (docs/greencheck.md §4, docs/sync.md "SFTP delivery").

`SftpClient.deliver(batch) -> list[PaymentResult]` is the same contract as the JSON client's, so the run does
not know which one it holds. A batch becomes one Wholesale CSV file (`wholesale`), delivered exactly once:

- The directory holds, next to the files, a state file `.qbo-operator-<realm>.state.json.gz`: the next file
  number, every payment's current rows (what Green Check holds), and at most one *pending* file.
- Deliver: write the state with `pending` = the file about to appear (name and the rows it makes current), upload
  the CSV as `.<name>.part`, rename it to `<name>` (a plain SFTP rename, which OpenSSH refuses over an existing
  file), then write the state with the pending rows committed. Only then does `deliver` return, so the watermark
  moves only after the rename.
- Every connection first settles a pending file: renamed (it exists) → committed; not → dropped with its `.part`.
  So a crash at any point loses no row and puts no row in two files; a rerun re-plans from the committed state,
  and a set Green Check already holds writes nothing.
- File names are deterministic: `qbo-<realm>-<number, 8 digits>.csv`, numbered from 1, in delivery order, so a
  receiver that sorts by name applies corrections in order. Temporary names start with a dot and end in `.part`.

asyncssh is the SSH library: it is asyncio-native like the rest of the sync (no thread pool around a blocking
client), pins host keys from a `known_hosts` text without touching `~/.ssh`, and is actively maintained. The host
key is always checked against the pinned line (no trust on first use). Network faults (refused, reset, timeouts)
are retried with back-off through the transport's retry loop, reconnecting each time; the server's refusals
(unknown host key, wrong key, permission denied, directory missing, disk full) end the run with a message that
names the fault. The private key never leaves this module's memory: not in logs, messages or status."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import posixpath
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal, TypeVar

import asyncssh
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qbo_operator.core.config import Tuning
from qbo_operator.core.models import SftpDelivery as SftpSpec
from qbo_operator.sync.greencheck import GreenCheckError
from qbo_operator.sync.records import Batch, PaymentResult
from qbo_operator.sync.transport import TimedOut, Transient, retrying
from qbo_operator.sync.wholesale import Delivered, encode, plan

log = logging.getLogger(__name__)
T = TypeVar("T")


class SftpError(GreenCheckError):
    """The delivery failed for good. `refused`: the server refused us (a person must fix the set-up); else it
    could not be reached within the retry budget."""

    def __init__(self, message: str, request_id: str | None = None, *, refused: bool = False) -> None:
        super().__init__(message, request_id)
        self.refused = refused


@dataclass(frozen=True)
class SftpPolicy:
    throttle_retries: int = 0  # SFTP has no throttle answer
    max_throttle_wait: float = 0.0
    backoff_initial: float = 1.0
    backoff_max: float = 30.0
    transient_retries: int = 5
    timeout: float = 60.0  # each SFTP operation, and the SSH connection and login

    @classmethod
    def from_tuning(cls, tuning: Tuning) -> SftpPolicy:
        return cls(**tuning.retry())


class Pending(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str
    payments: dict[str, Delivered]


class State(BaseModel):
    """What this realm's files have made current at Green Check, kept beside them on the server."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    next_file: int = Field(default=1, ge=1)
    payments: dict[str, Delivered] = Field(default_factory=dict)
    pending: Pending | None = None

    def commit(self, pending: Pending) -> None:
        for payment_id, delivered in pending.payments.items():
            if delivered.rows:
                self.payments[payment_id] = delivered
            else:
                self.payments.pop(payment_id, None)
        self.next_file += 1
        self.pending = None


def file_name(realm_id: str, number: int) -> str:
    return f"qbo-{realm_id}-{number:08d}.csv"


def _part(name: str) -> str:
    return f".{name}.part"


class SftpClient:
    """`deliver(batch)`; `requests` counts SFTP operations (connections included); `aclose()`."""

    def __init__(
        self,
        spec: SftpSpec,
        realm_id: str,
        private_key: str,
        known_hosts: str,
        policy: SftpPolicy | None = None,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.spec = spec
        self.realm_id = realm_id
        self.policy = policy or SftpPolicy()
        self._sleep = sleep
        self._where = f"sftp://{spec.username}@{spec.host}:{spec.port}{spec.directory}"
        try:
            self._key = asyncssh.import_private_key(private_key)
        except (asyncssh.KeyImportError, ValueError):
            raise SftpError(
                f"SFTP: the private key in Secret {spec.secret_name} (ssh-privatekey) cannot be read; "
                "store an unencrypted OpenSSH or PEM private key",
                refused=True,
            ) from None
        try:
            self._known = asyncssh.import_known_hosts(known_hosts)
        except (ValueError, asyncssh.KeyImportError):
            raise SftpError(
                f"SFTP: the known_hosts line in Secret {spec.secret_name} cannot be read; store the server's "
                f"host key as a known_hosts line for [{spec.host}]:{spec.port}",
                refused=True,
            ) from None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._state: State | None = None
        self.requests = 0

    @property
    def _state_path(self) -> str:
        return posixpath.join(self.spec.directory, f".qbo-operator-{self.realm_id}.state.json.gz")

    def _path(self, name: str) -> str:
        return posixpath.join(self.spec.directory, name)

    # --- the contract -------------------------------------------------------------------------

    async def deliver(self, batch: Batch) -> list[PaymentResult]:
        """One batch as (at most) one file; the results say what changed at Green Check, as the API's would."""
        if not batch.payments:
            return []

        async def attempt() -> list[PaymentResult]:
            return await self._attempt(batch)

        return await retrying(attempt, f"SFTP server {self._where}", self.policy, SftpError, sleep=self._sleep)

    async def aclose(self) -> None:
        await self._drop()

    async def _attempt(self, batch: Batch) -> list[PaymentResult]:
        try:
            sftp, state = await self._session()
            todo = plan(batch.payments, state.payments, self.spec.location_id)
            if todo.rows:
                name = file_name(self.realm_id, state.next_file)
                state.pending = Pending(file=name, payments=todo.delivered)
                await self._write_state(sftp, state)
                await self._upload(sftp, name, encode(todo.rows))
                state.commit(state.pending)
                await self._write_state(sftp, state)
                log.info("SFTP: delivered %s (%d rows)", name, len(todo.rows))
            return todo.results
        except SftpError:
            raise
        except BaseException as exc:
            await self._drop()
            raise self._translate(exc) from None

    # --- the connection and the state ---------------------------------------------------------

    async def _session(self) -> tuple[asyncssh.SFTPClient, State]:
        if self._sftp is not None and self._state is not None:
            return self._sftp, self._state
        spec = self.spec
        self.requests += 1
        self._conn = await asyncssh.connect(
            spec.host,
            spec.port,
            username=spec.username,
            client_keys=[self._key],
            known_hosts=self._known,
            agent_path=None,
            config=[],
            preferred_auth="publickey",
            connect_timeout=self.policy.timeout,
            login_timeout=self.policy.timeout,
            keepalive_interval=30,
        )
        self._sftp = await self._op(self._conn.start_sftp_client())
        if not await self._op(self._sftp.isdir(spec.directory)):
            raise SftpError(
                f"SFTP: the directory {spec.directory} does not exist on {spec.host}:{spec.port}; create it or fix "
                "spec.delivery.sftp.directory",
                refused=True,
            )
        self._state = await self._settle(self._sftp, await self._read_state(self._sftp))
        return self._sftp, self._state

    async def _read_state(self, sftp: asyncssh.SFTPClient) -> State:
        try:
            async with await self._op(sftp.open(self._state_path, "rb")) as f:
                data: bytes = await self._op(f.read())
        except asyncssh.SFTPNoSuchFile:
            return State()
        try:
            return State.model_validate_json(gzip.decompress(data))
        except (OSError, EOFError, ValidationError):
            raise SftpError(
                f"SFTP: the delivery state {self._state_path} is unreadable; restore it from a backup (without it "
                "the next file would repeat rows Green Check already holds)",
                refused=True,
            ) from None

    async def _settle(self, sftp: asyncssh.SFTPClient, state: State) -> State:
        """A pending file from an interrupted delivery: committed if it was renamed into place, else dropped."""
        pending = state.pending
        if pending is None:
            return state
        if await self._op(sftp.exists(self._path(pending.file))):
            log.info("SFTP: %s was delivered before an interruption; recording it", pending.file)
            state.commit(pending)
        else:
            log.info("SFTP: %s was not delivered before an interruption; it will be written again", pending.file)
            if await self._op(sftp.exists(self._path(_part(pending.file)))):
                await self._op(sftp.remove(self._path(_part(pending.file))))
            state.pending = None
        await self._write_state(sftp, state)
        return state

    async def _write_state(self, sftp: asyncssh.SFTPClient, state: State) -> None:
        """Whole or not at all: written under a temporary name, then renamed over the old one."""
        temporary = self._path(_part(posixpath.basename(self._state_path)))
        await self._put(sftp, temporary, gzip.compress(state.model_dump_json().encode(), mtime=0))
        await self._op(sftp.posix_rename(temporary, self._state_path))

    async def _upload(self, sftp: asyncssh.SFTPClient, name: str, data: bytes) -> None:
        temporary = self._path(_part(name))
        await self._put(sftp, temporary, data)
        await self._op(sftp.rename(temporary, self._path(name)))

    async def _put(self, sftp: asyncssh.SFTPClient, path: str, data: bytes) -> None:
        async with await self._op(sftp.open(path, "wb")) as f:
            await self._op(f.write(data))

    async def _op(self, op: Awaitable[T]) -> T:
        self.requests += 1
        try:
            return await asyncio.wait_for(op, self.policy.timeout)
        except TimeoutError:
            raise TimedOut(f"an SFTP operation took over {self.policy.timeout:.0f}s") from None

    async def _drop(self) -> None:
        """Forget the connection and the state read through it: the next attempt reconnects and settles."""
        sftp, conn = self._sftp, self._conn
        self._sftp = self._conn = None
        self._state = None
        if sftp is not None:
            sftp.exit()
        if conn is not None:
            conn.close()
            with contextlib.suppress(TimeoutError, OSError, asyncssh.Error):
                await asyncio.wait_for(conn.wait_closed(), 5)

    # --- errors -------------------------------------------------------------------------------

    def _translate(self, exc: BaseException) -> BaseException:
        """A fault as a retryable `Transient`, or the server's refusal as an `SftpError` naming it."""
        spec, where = self.spec, f"{self.spec.host}:{self.spec.port}"
        if isinstance(exc, (Transient, asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            return exc
        if isinstance(exc, asyncssh.HostKeyNotVerifiable):
            return SftpError(
                f"SFTP: the host key of {where} does not match the known_hosts line pinned in Secret "
                f"{spec.secret_name}; if the server's key really changed, pin the new one",
                refused=True,
            )
        if isinstance(exc, asyncssh.PermissionDenied):
            return SftpError(
                f"SFTP: {where} refused the login of {spec.username} with key {self._key.get_fingerprint()}; "
                "check spec.delivery.sftp.username and that Green Check has the public key",
                refused=True,
            )
        if isinstance(exc, asyncssh.SFTPPermissionDenied):
            return SftpError(
                f"SFTP: permission denied in {spec.directory} on {where} ({exc.reason}); the user "
                f"{spec.username} must be able to write, rename and remove files there",
                refused=True,
            )
        if isinstance(exc, asyncssh.SFTPNoSuchFile):
            return SftpError(
                f"SFTP: {spec.directory} on {where} is missing or was removed during the delivery ({exc.reason})",
                refused=True,
            )
        if isinstance(exc, (asyncssh.SFTPConnectionLost, asyncssh.ConnectionLost, asyncssh.SFTPNoConnection)):
            return Transient(f"the connection was lost ({type(exc).__name__})")
        if isinstance(exc, asyncssh.SFTPFailure):
            return SftpError(
                f"SFTP: {where} failed to write in {spec.directory} ({exc.reason or 'Failure'}); the disk or the "
                "user's quota may be full",
                refused=True,
            )
        if isinstance(exc, (asyncssh.SFTPError, asyncssh.DisconnectError)):
            return SftpError(f"SFTP: {where} refused the operation ({type(exc).__name__}: {exc.reason})", refused=True)
        if isinstance(exc, (OSError, TimeoutError, asyncssh.Error)):
            return Transient(f"cannot reach {where} ({type(exc).__name__})")
        return exc

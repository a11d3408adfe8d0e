"""The SFTP delivery's exactly-once protocol, crashed between every two of its SFTP operations (a real sshd).

Random SIGKILLs (tests/reliability/test_sftp_delivery.py) mostly land between files: over loopback one file's
steps take a few milliseconds. Here a client stops dead after its n-th SFTP operation, for every n of a
delivery (the pending state, the `.part` upload, the rename, the committed state), and a fresh client then
delivers the same batch, as the next run would: the directory must hold every row exactly once, no partial file
and no leftover temporary file, whatever n was."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import pytest

from qbo_operator.core.models import SftpDelivery
from qbo_operator.harness.sshd import SftpServer
from qbo_operator.sync.records import Batch
from qbo_operator.sync.sftp import SftpClient, SftpPolicy
from tests.support.greencheck import make_set
from tests.support.sftp import read_files, repeated

T = TypeVar("T")
CASES = 15  # crash points tried: before the first operation, after each, and past the last (no crash)


class Crash(BaseException):
    """The process is gone: no more I/O after this point."""


class CrashingClient(SftpClient):
    """Stops dead once `crash_after` SFTP operations have completed (0: before the first one)."""

    def __init__(self, *args: object, crash_after: int, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.left = crash_after

    async def _op(self, op: Awaitable[T]) -> T:
        if self.left == 0:
            # never to be awaited, the process being gone (asyncssh wraps some coroutines in a context manager)
            coroutine = op if asyncio.iscoroutine(op) else getattr(op, "_coro", None)
            if coroutine is not None:
                coroutine.close()
            raise Crash
        try:
            return await super()._op(op)
        finally:  # an operation that failed (a state file not there yet) is an operation done too
            self.left -= 1
            if self.left == 0:
                raise Crash


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    s = SftpServer(tmp_path_factory.mktemp("sshd")).start()
    yield s
    s.stop()


BATCH = [make_set(p, p) for p in range(1, 6)]  # payments 1-5, one invoice each


def client(server: SftpServer, realm: str, cls: type[SftpClient] = SftpClient, **kw: int) -> SftpClient:
    spec = SftpDelivery(host=server.host, port=server.port, username=server.username,
                        directory=str(server.directory), locationId="loc-1", secretName="s")  # fmt: skip
    policy = SftpPolicy(transient_retries=0, timeout=10)
    return cls(spec, realm, server.client_key.private, server.known_hosts, policy, **kw)


@pytest.fixture(scope="module")
def operations(server: SftpServer) -> int:
    """How many SFTP operations a first delivery makes (its connection aside)."""

    async def deliver() -> int:
        c = client(server, "9000")
        await c.deliver(Batch("crb", "9000", BATCH))
        await c.aclose()
        return c.requests - 1

    n = asyncio.run(deliver())
    assert n + 1 < CASES, f"a delivery makes {n} operations: try more crash points"
    return n


def leftovers(server: SftpServer, realm: str) -> list[str]:
    return sorted(p.name for p in server.directory.iterdir() if realm in p.name and p.name.endswith(".part"))


@pytest.mark.parametrize("crash_after", range(CASES))
async def test_a_crash_after_any_operation_then_a_rerun_delivers_every_row_once(
    server: SftpServer, operations: int, crash_after: int
) -> None:
    realm = f"91{crash_after:02d}"
    crashing = client(server, realm, CrashingClient, crash_after=crash_after)
    crashed = False
    try:
        await crashing.deliver(Batch("crb", realm, BATCH))
    except Crash:
        crashed = True
    await crashing.aclose()
    assert crashed == (crash_after <= operations)
    rerun = client(server, realm)
    results = await rerun.deliver(Batch("crb", realm, BATCH))
    await rerun.aclose()
    files = sorted(p for p in server.files() if f"-{realm}-" in p.name)
    rows = [r for _, rs in read_files(files) for r in rs]
    assert sorted(r["Payment ID"] for r in rows) == ["1", "2", "3", "4", "5"], [p.name for p in files]
    assert len(files) == 1 and repeated(files) == []
    assert leftovers(server, realm) == []
    # The rerun says "unchanged" exactly when the crashed client's file had already been renamed into place.
    statuses = {r.records[0].status for r in results}
    assert statuses in ({"created"}, {"unchanged"})

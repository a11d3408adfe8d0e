"""Delivery through Green Check's documented SFTP intake (issue #16), against a real OpenSSH sshd.

`qbo-operator sync` runs as a real process against the real control plane, the QBO sandbox and an sshd on
loopback. What the directory holds is read as a receiver would (Python's csv module, files in name order, a row
replacing an earlier row with the same Payment ID and Invoice Number) and compared with the rows computed from
the sandbox's raw Intuit JSON (`tests/support/sftp.expected_rows`), never with the product's mapping. A watcher
lists the directory every few milliseconds while runs go on: no partial file may ever be visible."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qbo_operator.harness.sshd import KeyPair, SftpServer
from tests.support import sftp
from tests.support.kube import apply
from tests.support.ledger import SECRETS, Report
from tests.support.sync import E2E, Run, sandboxes

pytestmark = pytest.mark.e2e

# Small batches: many files per run, so kills and faults land between a file's steps.
TUNING = {
    "QBO_SYNC_SETTLE_SECONDS": "0",
    "QBO_SYNC_BATCH_SIZE": "5",
    "QBO_SYNC_PAGE_SIZE": "50",
    "QBO_SYNC_TIMEOUT_SECONDS": "5",
}
KILLS = 20
SEED = 16


@dataclass
class Sftp:
    e: E2E
    server: SftpServer
    watcher: sftp.Watcher

    def want(self) -> dict[sftp.Key, dict[str, str]]:
        return sftp.expected_rows(self.e.qbo, self.e.realm, self.e.connected_at)

    def assert_exact(self) -> None:
        """The files replay to exactly the books; no row twice; nothing partial was ever visible."""
        files = self.server.files()
        assert sftp.mismatches(files, self.want()) == []
        assert sftp.repeated(files) == []
        assert sftp.partial_files(self.server) == []
        assert self.watcher.problems == []

    def write_secret(self, private_key: str | None = None, known_hosts: str | None = None) -> None:
        key = private_key or self.server.client_key.private
        apply(self.e.cluster, sftp.secret(self.e.namespace, key, known_hosts or self.server.known_hosts))

    def watermark(self) -> str | None:
        value: str | None = self.e.status().get("syncWatermark")
        return value

    def assert_nothing_leaked(self) -> None:
        """Neither private key's body is in any output, the status or an Event."""
        haystacks = [*self.e.outputs, str(self.e.status()), str(self.e.events())]
        for key in (self.server.client_key.private, self.server.host_key.private):
            body = "".join(key.splitlines()[1:-1])
            for text in haystacks:
                assert body[:40] not in text and key.splitlines()[1] not in text, "an SSH private key leaked"


@asynccontextmanager
async def delivering(cluster: Any, namespace: str, tmp_path: Path, payments: int = 40) -> AsyncIterator[Sftp]:
    server = SftpServer(tmp_path / "sshd").start()
    watcher = sftp.Watcher(server)
    SECRETS.add_secret(server.client_key.private, "SFTP client private key")
    try:
        async with sandboxes(cluster, namespace, payments=payments, history_days=10) as e:
            s = Sftp(e, server, watcher)
            s.write_secret()
            e.create_integration(delivery=sftp.delivery(server))
            with watcher:
                yield s
    finally:
        server.stop()


async def night(s: Sftp) -> Run:
    run = await s.e.sync(**TUNING)
    assert run.rc == 0, run.stderr[-3000:]
    assert run.error_lines == []
    s.assert_exact()
    last = s.e.status()["lastSync"]
    assert last["result"] == "Succeeded", last["message"]
    return run


async def test_the_books_arrive_as_wholesale_csv_and_every_later_change_once(
    cluster: Any, namespace: str, tmp_path: Path
) -> None:
    async with delivering(cluster, namespace, tmp_path, payments=60) as s:
        await night(s)
        first = s.server.files()
        assert len(first) >= 3, "small batches make several files"
        assert s.e.gc.results == {}, "nothing went to the JSON API"
        rows = [r for _, rs in sftp.read_files(first) for r in rs]
        assert {r["location_id"] for r in rows} == {sftp.LOCATION}
        assert any("; " in r["Product"] for r in rows), "an invoice with several products is one row"
        await night(s)
        assert s.server.files() == first, "a night with no change writes no file"
        voided = rows[0]["Payment ID"]
        s.e.qbo.void_payment(s.e.realm, voided)
        s.e.qbo.bookkeep(s.e.realm, seed=SEED, changes=25)
        s.e.qbo.generate_payments(s.e.realm, 10, seed=SEED, seconds=1)
        await night(s)
        later = [r for _, rs in sftp.read_files(s.server.files()[len(first) :]) for r in rs]
        retracted = {r["Payment ID"] for r in later if r["Memo/Description"].startswith("Retracted")}
        assert voided in retracted, "the voided payment's rows were retracted"
        last = s.e.status()["lastSync"]
        assert last["recordsCreated"] + last["recordsUpdated"] + last["recordsRetracted"] > 0
        s.assert_nothing_leaked()


async def test_sigkill_at_random_points_loses_nothing_and_repeats_nothing(
    cluster: Any, namespace: str, tmp_path: Path, report: Report
) -> None:
    rng = random.Random(SEED)
    kills = runs = 0
    async with delivering(cluster, namespace, tmp_path, payments=20) as s:
        try:
            while kills < KILLS:
                runs += 1
                if runs % 2:  # the books move between runs: new payments, and now and then a correction
                    s.e.qbo.generate_payments(s.e.realm, rng.randint(10, 30), seed=runs, seconds=1)
                if runs % 3 == 0:
                    s.e.qbo.bookkeep(s.e.realm, seed=runs, changes=5)
                proc = await s.e.start(**TUNING)
                try:
                    await asyncio.wait_for(asyncio.shield(proc.wait()), rng.uniform(0.6, 2.5))
                except TimeoutError:
                    if proc.returncode is None:  # not when it finished just as the timer fired
                        proc.kill()
                        kills += 1
                run = await s.e.finish(proc)
                assert run.rc in (0, -9), run.stderr[-3000:]
                assert sftp.partial_files(s.server) == [], f"run {runs}: a partial file is visible"
            await night(s)
        finally:
            files = s.server.files()
            settled = sum(out.count("before an interruption") for out in s.e.outputs)
            report.row(
                "sftp delivery",
                "SIGKILL the sync at random points mid-delivery, rerun",
                tried=f"{kills} kills over {runs} runs ({settled} mid-file), {len(files)} files",
                held=f"{len(sftp.mismatches(files, s.want()))} mismatches, {len(sftp.repeated(files))} repeated rows, "
                f"{len(s.watcher.problems)} partial files seen",
                sftp_kills=kills,
            )
        assert kills >= KILLS


@dataclass(frozen=True)
class Fault:
    id: str
    says: str  # words the error line must contain
    reason: str
    break_it: Callable[[Sftp], None]
    fix_it: Callable[[Sftp], None]


def restart(s: Sftp, **options: Any) -> None:
    s.server.stop()
    s.server.read_only = bool(options.get("read_only", False))
    s.server.file_size_limit = options.get("file_size_limit")
    s.server.start()


def wrong_directory(s: Sftp, directory: str) -> None:
    patch = {"spec": {"delivery": sftp.delivery(s.server, directory=directory)}}
    s.e.kubectl("patch", "qbi", s.e.name, "--type=merge", "-p", json.dumps(patch))


FAULTS = [
    Fault(
        "unknown-host-key",
        "does not match the known_hosts line",
        "DeliveryRefused",
        lambda s: s.write_secret(known_hosts=f"[{s.server.host}]:{s.server.port} {KeyPair.generate().public}\n"),
        lambda s: s.write_secret(),
    ),
    Fault(
        "wrong-client-key",
        "refused the login",
        "DeliveryRefused",
        lambda s: s.write_secret(private_key=KeyPair.generate().private),
        lambda s: s.write_secret(),
    ),
    Fault(
        "permission-denied",
        "permission denied",
        "DeliveryRefused",
        lambda s: restart(s, read_only=True),
        lambda s: restart(s),
    ),
    Fault(
        "directory-missing",
        "does not exist",
        "DeliveryRefused",
        lambda s: wrong_directory(s, str(s.server.directory) + "-gone"),
        lambda s: wrong_directory(s, str(s.server.directory)),
    ),
    Fault("server-down", "is unavailable after", "GreenCheckUnavailable", lambda s: s.server.stop(), restart),
    Fault(
        "disk-full",
        "may be full",
        "DeliveryRefused",
        lambda s: restart(s, file_size_limit=64),
        lambda s: restart(s),
    ),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.id for f in FAULTS])
async def test_a_server_fault_is_named_moves_nothing_and_the_next_good_run_delivers_all(
    cluster: Any, namespace: str, tmp_path: Path, report: Report, fault: Fault
) -> None:
    held = False
    try:
        async with delivering(cluster, namespace, tmp_path, payments=20) as s:
            await night(s)
            before, files = s.watermark(), s.server.files()
            s.e.qbo.generate_payments(s.e.realm, 12, seed=SEED, seconds=1)
            fault.break_it(s)
            run = await s.e.sync(**TUNING, QBO_SYNC_RETRIES="1")
            assert run.rc == 1, run.stderr[-3000:]
            assert len(run.error_lines) == 1 and fault.says in run.error_lines[0], run.error_lines
            cond = s.e.condition("Synced")
            assert cond is not None and (cond["status"], cond["reason"]) == ("False", fault.reason), cond
            assert fault.says in cond["message"]
            assert s.watermark() == before, "the watermark moved although nothing was delivered"
            assert s.server.files() == files and sftp.partial_files(s.server) == []
            fault.fix_it(s)
            await night(s)
            s.assert_nothing_leaked()
            held = True
    finally:
        report.row(
            "sftp delivery",
            f"server fault: {fault.id}",
            tried="fault, then a good run",
            held="named, watermark kept, then all delivered" if held else "no",
            kind="sftp-fault",
        )


async def test_a_server_back_within_the_retries_is_reconnected_and_the_run_succeeds(
    cluster: Any, namespace: str, tmp_path: Path
) -> None:
    async with delivering(cluster, namespace, tmp_path, payments=20) as s:
        await night(s)
        s.e.qbo.generate_payments(s.e.realm, 12, seed=SEED, seconds=1)
        s.server.stop()
        slow = {"QBO_SYNC_RETRIES": "8", "QBO_SYNC_BACKOFF_SECONDS": "0.5", "QBO_SYNC_BACKOFF_MAX_SECONDS": "1"}
        proc = await s.e.start(**{**TUNING, **slow})
        # The server comes back once the delivery has met it down (a fixed delay raced the night's reading).
        assert proc.stderr is not None
        seen = b""
        async with asyncio.timeout(120):
            while b"retrying in" not in seen:
                line = await proc.stderr.readline()
                assert line, f"the run ended before its delivery retried: {seen.decode()[-3000:]}"
                seen += line
        s.server.start()
        run = await s.e.finish(proc)
        assert run.rc == 0, (seen.decode() + run.stderr)[-3000:]
        s.assert_exact()


async def test_a_payment_the_intake_cannot_take_is_kept_rejected_until_the_books_are_fixed(
    cluster: Any, namespace: str, tmp_path: Path
) -> None:
    """The Wholesale CSV requires an Invoice Number: a payment of an invoice without one is refused like a set the
    API would refuse (status.rejected, PartiallySucceeded), writes no row, and is sent again every run."""
    async with delivering(cluster, namespace, tmp_path, payments=20) as s:
        e = s.e
        customer = min(e.qbo.companies[e.realm].customers, key=int)
        invoice = str(e.qbo.create_invoice(e.realm, customer_id=customer, amount="120.00", doc_number="N-1")["Id"])
        e.qbo.update_invoice(e.realm, invoice, doc_number="")  # a bookkeeper cleared the number
        payment = str(e.qbo.create_payment(e.realm, [invoice], customer_id=customer)["Id"])
        run = await e.sync(**TUNING)
        assert run.rc == 0, run.stderr[-3000:]
        st = e.status()
        assert st["lastSync"]["result"] == "PartiallySucceeded"
        (kept,) = st["rejected"]["payments"]
        assert kept["paymentId"] == payment and "no invoice number" in kept["reason"]
        rows = [r for _, rs in sftp.read_files(s.server.files()) for r in rs]
        assert payment not in {r["Payment ID"] for r in rows}
        e.qbo.update_invoice(e.realm, invoice, doc_number="N-1")
        await night(s)
        assert e.status()["rejected"]["count"] == 0

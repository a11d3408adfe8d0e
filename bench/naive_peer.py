"""The baselines our sync is compared with, written the way common QBO clients are used.

`NaivePeer` is the pattern of python-quickbooks scripts and small connectors: page payments 100 at a
time with STARTPOSITION, read every linked invoice one by one (`GET …/invoice/{id}`, no cache, so an
invoice paid in instalments is read again), and post every record to Green Check on its own. It maps
records with our own `qbo_operator.sync.mapping`, so both sides deliver the same records and only the request
pattern differs. It is blocking (requests), one request at a time, as those clients are.

Green Check's contract replaces a payment's records as a set (docs/greencheck.md §2), so the naive peer's
POST for a payment's second invoice carries the payment's set so far (both records): still one POST per
record, and Green Check ends with the same records as from our sync.

`run_floor` issues exactly the lower-bound request set of the night (`bench.sync_census.qbo_lower_bound`) and
reads everything a correct client must: one CDC call for payments and invoices, paged forward from the newest
change of each full answer until one comes back short (so every changed and deleted payment and every changed
invoice); ⌈invoices to read/1000⌉ bulk invoice reads; ⌈payments to read again/1000⌉ bulk payment reads; the
PaymentMethod list when needed; and nothing else (no mapping, no delivery): the time it takes is the floor for
reading the same data from the same server.

Both run in their own process (`python -m bench.naive_peer naive|floor --spec FILE`) so their memory
and CPU are their own, and print one JSON line with their counts."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import requests

from qbo_operator.core.models import parse_rfc3339
from qbo_operator.core.names import QBO_MINOR_VERSION
from qbo_operator.sync.mapping import map_payment
from qbo_operator.sync.qbo import qbo_time
from qbo_operator.sync.qbo_models import Invoice, Payment
from qbo_operator.sync.records import Record, idempotency_key

NAIVE_PAGE = 100  # python-quickbooks' `.all()` / `.filter()` default page; hotglue's page size
FLOOR_PAGE = 1000  # Intuit's MAXRESULTS cap
TIMEOUT = 60


@dataclass
class PeerSpec:
    """Everything a baseline client needs; written to a file by the bench (tokens never on argv)."""

    api_url: str
    realm_id: str
    access_token: str
    refresh_token: str
    token_url: str
    client_id: str
    client_secret: str
    since: str  # RFC 3339: payments created at or after this (the integration's connectedAt)
    greencheck_url: str = ""
    greencheck_client_id: str = ""
    greencheck_client_secret: str = ""
    service_provider_id: str = ""
    crb_id: str = ""
    # floor only (bench.sync_census): what the night reads besides its changes
    invoice_ids: list[str] = field(default_factory=list)  # linked invoices not read as changes
    payment_ids: list[str] = field(default_factory=list)  # payments in scope a changed invoice lists, unchanged
    method_list: bool = False  # a payment names its method by id only


@dataclass
class PeerResult:
    """What a baseline run cost (printed as one JSON line that starts with `qbo_requests`)."""

    qbo_requests: int = 0
    greencheck_requests: int = 0
    token_refreshes: int = 0
    payments: int = 0
    deleted: int = 0  # the floor reader's: deleted payments seen (CDC stubs)
    invoices: int = 0  # the floor reader's: changed invoices seen
    records_sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # Green Check's record results (created, unchanged, …)
    seconds: float = 0.0


class _Qbo:
    """The blocking Accounting API calls of a typical client: one `requests.Session`, refresh on 401."""

    def __init__(self, spec: PeerSpec, result: PeerResult) -> None:
        self.spec = spec
        self.result = result
        self.http = requests.Session()
        self.token = spec.access_token
        self.refresh_token = spec.refresh_token
        self.base = f"{spec.api_url.rstrip('/')}/v3/company/{spec.realm_id}"

    def _refresh(self) -> None:
        resp = self.http.post(
            self.spec.token_url,
            data={"grant_type": "refresh_token", "refresh_token": self.refresh_token},
            auth=(self.spec.client_id, self.spec.client_secret),
            headers={"Accept": "application/json"},
            timeout=TIMEOUT,
        )
        resp.raise_for_status()
        body = resp.json()
        self.token, self.refresh_token = body["access_token"], body["refresh_token"]
        self.result.token_refreshes += 1

    def call(
        self, method: str, path: str, data: bytes | None = None, params: dict[str, str] | None = None
    ) -> dict[str, Any]:
        for attempt in range(8):
            self.result.qbo_requests += 1
            resp = self.http.request(
                method,
                self.base + path,
                params={"minorversion": QBO_MINOR_VERSION, **(params or {})},
                data=data,
                headers={
                    "Authorization": f"Bearer {self.token}",
                    "Accept": "application/json",
                    **({"Content-Type": "application/text"} if data is not None else {}),
                },
                timeout=TIMEOUT,
            )
            if resp.status_code == 401 and attempt == 0:
                self._refresh()
                continue
            if resp.status_code == 429:  # what Intuit says to do: wait a minute
                time.sleep(60)
                continue
            resp.raise_for_status()
            body: dict[str, Any] = json.loads(resp.content, parse_float=Decimal)
            return body
        raise RuntimeError(f"{method} {path}: QuickBooks kept refusing")

    def query(self, statement: str) -> dict[str, Any]:
        qr: dict[str, Any] = self.call("POST", "/query", statement.encode())["QueryResponse"]
        return qr


def _payment_pages(qbo: _Qbo, since: datetime, page: int) -> Iterator[list[dict[str, Any]]]:
    position = 1
    while True:
        statement = (
            f"SELECT * FROM Payment WHERE MetaData.CreateTime >= '{qbo_time(since)}' "  # noqa: S608 - bench client
            f"ORDERBY MetaData.CreateTime STARTPOSITION {position} MAXRESULTS {page}"
        )
        rows: list[dict[str, Any]] = qbo.query(statement).get("Payment", [])
        if rows:
            yield rows
        if len(rows) < page:
            return
        position += page


def run_naive(spec: PeerSpec, progress: Callable[[PeerResult], None] | None = None) -> PeerResult:
    """Sync the window the naive way; returns what it cost."""
    result = PeerResult()
    started = time.perf_counter()
    qbo = _Qbo(spec, result)
    gc = requests.Session()
    since = parse_rfc3339(spec.since)
    token_resp = gc.post(
        f"{spec.greencheck_url}/auth/token",
        json={
            "client_id": spec.greencheck_client_id,
            "client_secret": spec.greencheck_client_secret,
            "grant_type": "client_credentials",
            "scope": [],
        },
        timeout=TIMEOUT,
    )
    result.greencheck_requests += 1
    token_resp.raise_for_status()
    gc_token = token_resp.json()["access_token"]
    ingest = (
        f"{spec.greencheck_url}/service-providers/{spec.service_provider_id}/crbs/{spec.crb_id}/sales/invoice-payments"
    )
    for rows in _payment_pages(qbo, since, NAIVE_PAGE):
        for row in rows:
            payment = Payment.model_validate(row)
            result.payments += 1
            invoices: dict[str, Invoice] = {}
            for invoice_id in payment.invoice_ids():  # one GET per linked invoice, every time
                body = qbo.call("GET", f"/invoice/{invoice_id}")
                invoices[invoice_id] = Invoice.model_validate(body["Invoice"])
            mapped = map_payment(payment, invoices, spec.realm_id, since)
            records = mapped.payment_set.records if mapped.payment_set else []
            for n in range(1, len(records) + 1):  # one POST per record; the set so far, as the contract asks
                _post_record(gc, ingest, gc_token, spec.realm_id, payment.id, records[:n], result)
            if progress is not None and result.payments % 2000 == 0:
                result.seconds = time.perf_counter() - started
                progress(result)
    result.seconds = time.perf_counter() - started
    return result


def _post_record(
    gc: requests.Session,
    url: str,
    token: str,
    realm_id: str,
    payment_id: str,
    records: list[Record],
    result: PeerResult,
) -> None:
    """POST one payment set (Idempotency-Key: sha256 of the body) and count Green Check's record results."""
    body = json.dumps(
        {
            "source": "quickbooks",
            "realm_id": realm_id,
            "payments": [{"payment_id": payment_id, "records": [r.model_dump(mode="json") for r in records]}],
        },
        separators=(",", ":"),
    ).encode()
    resp = gc.post(
        url,
        data=body,
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key(body),
        },
        timeout=TIMEOUT,
    )
    result.greencheck_requests += 1
    resp.raise_for_status()
    result.records_sent += 1
    for answer in resp.json()["results"]:
        for record in answer.get("records", []):
            result.statuses[record["status"]] = result.statuses.get(record["status"], 0) + 1
        if answer["status"] == "rejected":
            result.statuses["rejected"] = result.statuses.get("rejected", 0) + 1


def run_floor(spec: PeerSpec) -> PeerResult:
    """Exactly the lower-bound requests: the changes through CDC pages, the bulk reads, nothing else."""
    result = PeerResult()
    started = time.perf_counter()
    qbo = _Qbo(spec, result)
    payments: set[str] = set()
    deleted: set[str] = set()
    invoices: set[str] = set()
    at = parse_rfc3339(spec.since)
    while True:
        params = {"entities": "Payment,Invoice", "changedSince": qbo_time(at)}
        parts = qbo.call("GET", "/cdc", params=params)["CDCResponse"][0]["QueryResponse"]
        rows = [(entity, row) for part in parts for entity, found in part.items() if entity in ("Payment", "Invoice")
                for row in found]  # fmt: skip
        for entity, row in rows:
            if entity == "Invoice":
                (invoices.discard if row.get("status") == "Deleted" else invoices.add)(str(row["Id"]))
            else:
                (deleted if row.get("status") == "Deleted" else payments).add(str(row["Id"]))
        newest = max((parse_rfc3339(row["MetaData"]["LastUpdatedTime"]) for _, row in rows), default=at)
        if len(rows) < FLOOR_PAGE:
            break
        if newest <= at:  # a whole answer in one second: CDC cannot page past it
            raise RuntimeError(f"more than {FLOOR_PAGE} payments and invoices changed at {qbo_time(at)}")
        at = newest
    for entity, wanted in (("Invoice", spec.invoice_ids), ("Payment", spec.payment_ids)):
        for chunk in _chunks(wanted, FLOOR_PAGE):
            ids = ",".join(f"'{i}'" for i in chunk)
            qbo.query(f"SELECT * FROM {entity} WHERE Id IN ({ids}) STARTPOSITION 1 MAXRESULTS {FLOOR_PAGE}")  # noqa: S608
    if spec.method_list:
        qbo.query("SELECT * FROM PaymentMethod WHERE Active IN (true, false) STARTPOSITION 1 MAXRESULTS 1000")
    result.payments, result.deleted, result.invoices = len(payments), len(deleted), len(invoices)
    result.seconds = time.perf_counter() - started
    return result


def _chunks(items: Sequence[str], n: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.naive_peer", description=__doc__)
    parser.add_argument("mode", choices=("naive", "floor"))
    parser.add_argument("--spec", required=True, help="JSON file with a PeerSpec")
    args = parser.parse_args(argv)
    with open(args.spec, encoding="utf-8") as fh:
        spec = PeerSpec(**json.load(fh))

    def progress(r: PeerResult) -> None:
        print(
            f"progress: {r.payments} payments, {r.qbo_requests} QBO and {r.greencheck_requests} Green Check "
            f"requests in {r.seconds:.0f}s",
            file=sys.stderr,
            flush=True,
        )

    result = run_naive(spec, progress) if args.mode == "naive" else run_floor(spec)
    print(json.dumps(asdict(result)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The baselines our sync is compared with, written the way common QBO clients are used.

`NaivePeer` is the pattern of python-quickbooks scripts and small connectors: page payments 100 at a
time with STARTPOSITION, read every linked invoice one by one (`GET …/invoice/{id}`, no cache, so an
invoice paid in instalments is read again), and post every record to Green Check on its own. It maps
records with our own `qbo_operator.sync.mapping`, so both sides deliver the same records and only the request
pattern differs. It is blocking (requests), one request at a time, as those clients are.

`floor_read` issues exactly the lower-bound request set, ⌈payments/1000⌉ payment pages and
⌈distinct invoices/1000⌉ bulk invoice reads, and nothing else (no mapping, no delivery): the time it
takes is the floor for reading the same data from the same server.

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
from qbo_operator.sync.records import idempotency_key

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
    payments: int = 0  # floor only: how many payments the window holds
    invoice_ids: list[str] = field(default_factory=list)  # floor only: the distinct invoices to read


@dataclass
class PeerResult:
    """What a baseline run cost (printed as one JSON line that starts with `qbo_requests`)."""

    qbo_requests: int = 0
    greencheck_requests: int = 0
    token_refreshes: int = 0
    payments: int = 0
    records_sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # Green Check's answers: created, duplicate, rejected
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

    def call(self, method: str, path: str, data: bytes | None = None) -> dict[str, Any]:
        for attempt in range(8):
            self.result.qbo_requests += 1
            resp = self.http.request(
                method,
                self.base + path,
                params={"minorversion": QBO_MINOR_VERSION},
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
            for record in mapped.records:  # one POST per record
                payload = {
                    "source": "quickbooks",
                    "realm_id": spec.realm_id,
                    "records": [record.model_dump(mode="json")],
                }
                resp = gc.post(
                    ingest,
                    json=payload,
                    headers={
                        "Authorization": f"Bearer {gc_token}",
                        "Idempotency-Key": idempotency_key([record.external_id]),
                    },
                    timeout=TIMEOUT,
                )
                result.greencheck_requests += 1
                resp.raise_for_status()
                result.records_sent += 1
                status = resp.json()["results"][0]["status"]
                result.statuses[status] = result.statuses.get(status, 0) + 1
            if progress is not None and result.payments % 2000 == 0:
                result.seconds = time.perf_counter() - started
                progress(result)
    result.seconds = time.perf_counter() - started
    return result


def run_floor(spec: PeerSpec) -> PeerResult:
    """Exactly the lower-bound requests: the payment pages and the bulk invoice reads, nothing else."""
    result = PeerResult()
    started = time.perf_counter()
    qbo = _Qbo(spec, result)
    since = qbo_time(parse_rfc3339(spec.since))
    for position in range(1, spec.payments + 1, FLOOR_PAGE):
        statement = (
            f"SELECT * FROM Payment WHERE MetaData.CreateTime >= '{since}' "  # noqa: S608 - bench client
            f"ORDERBY MetaData.CreateTime STARTPOSITION {position} MAXRESULTS {FLOOR_PAGE}"
        )
        result.payments += len(qbo.query(statement).get("Payment", []))
    for chunk in _chunks(spec.invoice_ids, FLOOR_PAGE):
        ids = ",".join(f"'{i}'" for i in chunk)
        statement = f"SELECT * FROM Invoice WHERE Id IN ({ids}) STARTPOSITION 1 MAXRESULTS {FLOOR_PAGE}"  # noqa: S608
        qbo.query(statement)
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

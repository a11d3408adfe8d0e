"""The demo's second company, delivering over Green Check's documented SFTP intake to a real sshd on loopback.

Its manifests are the SFTP example's (examples/quickbooksintegration-sftp.yaml) with the local server's address
and freshly generated keys filled in. What arrived is read as a receiver would (Python's csv module, the files in
name order, a row replacing an earlier one with the same Payment ID and Invoice Number, a `Retracted` row removing
it) and set next to the demo's own projection of QuickBooks' books (`demo_books.expected_cash`)."""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from qbo_operator.harness.demo_books import Comparison, compare, expected_cash, invoice_links, to_cents
from qbo_operator.harness.sshd import SftpServer

NAME = "northstar-wholesale"
COMPANY_NAME = "Northstar Wholesale"
COMPANY_ID = "7d2e41b9-5c3a-4f08-b6d1-0e9a8c7f2b31"
SECRET = f"{NAME}-sftp"
LOCATION = "northstar-main"
# Green Check's "SFTP Wholesale Headers", as published (docs/greencheck.md §4): the demo's own copy.
HEADER = (
    "Date", "Invoice Number", "Customer", "Product", "Quantity", "Price", "Memo/Description", "Invoice Total",
    "Payment Date", "Payment Type", "Payment ID", "Payment Amount", "Open Balance", "location_id",
)  # fmt: skip
REQUIRED = ("Invoice Number", "Customer", "location_id")
Row = dict[str, str]


def manifests(example: Path, server: SftpServer) -> list[dict[str, Any]]:
    """The example's Secret and QuickbooksIntegration, renamed for this company and pointed at `server`."""
    secret, integration = (doc for doc in yaml.safe_load_all(example.read_text()) if doc)
    secret["metadata"]["name"] = SECRET
    secret["stringData"] = {"ssh-privatekey": server.client_key.private, "known_hosts": server.known_hosts}
    integration["metadata"]["name"] = NAME
    integration["spec"].update(companyId=COMPANY_ID, companyName=COMPANY_NAME)
    integration["spec"]["delivery"]["sftp"].update(
        host=server.host,
        port=server.port,
        username=server.username,
        directory=str(server.directory),
        locationId=LOCATION,
        secretName=SECRET,
    )
    return [secret, integration]


def read_rows(files: Iterable[Path]) -> list[Row]:
    """Every row of every file, in name order, as a receiver parses them; a header other than the published one
    is an error."""
    rows: list[Row] = []
    for path in sorted(files):
        reader = csv.reader(io.StringIO(path.read_bytes().decode(), newline=""))
        header = tuple(next(reader, ()))
        if header != HEADER:
            raise ValueError(f"{path.name}: the header {header} is not the published one")
        rows.extend(dict(zip(HEADER, row, strict=True)) for row in reader)
    return rows


def replay(rows: Iterable[Row]) -> tuple[dict[tuple[str, str], Row], int]:
    """What the receiver holds, by (Payment ID, Invoice Number), and how many rows repeated what it held."""
    held: dict[tuple[str, str], Row] = {}
    repeated = 0
    for row in rows:
        key = (row["Payment ID"], row["Invoice Number"])
        repeated += held.get(key) == row
        if row["Payment Amount"] == "0.00" and row["Memo/Description"].startswith("Retracted"):
            held.pop(key, None)
        else:
            held[key] = row
    return held, repeated


def _wrong_columns(row: Row, payment: Mapping[str, Any], invoice: Mapping[str, Any]) -> list[str]:
    """The columns of a held row that QuickBooks' books do not bear out (the amount is compared apart)."""
    customer = (payment.get("CustomerRef") or invoice.get("CustomerRef") or {}).get("name", "")
    want = {
        "Date": str(invoice.get("TxnDate", "")),
        "Customer": str(customer),
        "Payment Date": str(payment.get("TxnDate", "")),
        "location_id": LOCATION,
    }
    money = {"Invoice Total": invoice.get("TotalAmt", 0), "Open Balance": invoice.get("Balance", 0)}
    wrong = [c for c, v in want.items() if row[c] != v] + [c for c in REQUIRED if not row[c]]
    return wrong + [c for c, v in money.items() if to_cents(Decimal(row[c] or "0")) != to_cents(v)]


def check(
    rows: list[Row],
    realm: str,
    payments: Sequence[Mapping[str, Any]],
    invoices: Sequence[Mapping[str, Any]],
    connected_at: datetime,
) -> tuple[Comparison, dict[tuple[str, str], int]]:
    """The replayed rows against the books: a row names its invoice by number, so it is matched to the invoice of
    that number among those its payment pays; its cash and the columns the books determine must agree. Also
    returns QuickBooks' cash for each row held."""
    held, repeated = replay(rows)
    by_invoice = {str(i["Id"]): i for i in invoices}
    by_id = {str(p["Id"]): p for p in payments}
    expected = expected_cash(realm, payments, connected_at)
    got: list[tuple[str, int]] = []
    wrong: list[str] = []
    books: dict[tuple[str, str], int] = {}
    for (payment_id, number), row in held.items():
        payment = by_id.get(payment_id)
        links = invoice_links(payment) if payment is not None else []
        invoice = next((i for i in links if str(by_invoice.get(i, {}).get("DocNumber") or "") == number), None)
        external_id = f"qbo:{realm}:payment:{payment_id}:invoice:{invoice or 'number-' + number}"
        got.append((external_id, to_cents(Decimal(row["Payment Amount"]))))
        books[(payment_id, number)] = expected.get(external_id, 0)
        if (
            payment is not None
            and invoice is not None
            and (columns := _wrong_columns(row, payment, by_invoice[invoice]))
        ):
            wrong.append(f"{external_id} ({', '.join(columns)})")
    result = compare(expected, got)
    return dataclasses.replace(
        result, duplicated=result.duplicated + repeated, misstated=sorted({*result.misstated, *wrong})
    ), books

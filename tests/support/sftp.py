"""SFTP delivery under test: a real sshd (qbo_operator.harness.sshd), the integration set to deliver to it, and
what its directory must hold, computed from the QBO sandbox's raw Intuit JSON without the product's mapping.

A receiver reads the files in name order; a row replaces any earlier row with the same (Payment ID, Invoice
Number), and a row with Payment Amount 0.00 whose Memo/Description starts "Retracted" removes it (README,
"Green Check's SFTP intake")."""

from __future__ import annotations

import base64
import csv
import io
import threading
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from qbo_operator.core import names
from qbo_operator.harness.sandbox.qbo import QboSandbox
from qbo_operator.harness.sshd import SftpServer
from tests.support.sync import expected_records

PUBLISHED_HEADER = [
    "Date", "Invoice Number", "Customer", "Product", "Quantity", "Price", "Memo/Description", "Invoice Total",
    "Payment Date", "Payment Type", "Payment ID", "Payment Amount", "Open Balance", "location_id",
]  # fmt: skip
REQUIRED = ("Invoice Number", "Customer", "location_id")
LOCATION = "gc-location-0042"
SECRET = "acme-sftp"
# The sandbox's payment methods, read as a person would read them: the card types by QBO's own Type.
METHOD_TYPES = {"Cash": "Cash", "Check": "Check", "ACH/EFT": "ACH", "Debit": "Debit"}
Key = tuple[str, str]


def delivery(server: SftpServer, *, directory: str | None = None, secret: str = SECRET) -> dict[str, Any]:
    return {
        "method": "sftp",
        "sftp": {
            "host": server.host,
            "port": server.port,
            "username": server.username,
            "directory": directory or str(server.directory),
            "locationId": LOCATION,
            "secretName": secret,
        },
    }


def secret(namespace: str, private_key: str, known_hosts: str, name: str = SECRET) -> dict[str, Any]:
    """The SFTP Secret as a platform engineer writes it (type kubernetes.io/ssh-auth, plus the pinned host key)."""
    data = {names.SFTP_PRIVATE_KEY: private_key, names.SFTP_KNOWN_HOSTS: known_hosts}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/ssh-auth",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def _money(value: Any) -> str:
    return f"{Decimal(str(value)).quantize(Decimal('0.01'))}"


def _cents(cents: int) -> str:
    return _money(Decimal(cents) / 100)


def expected_rows(sb: QboSandbox, realm: str, connected_at: datetime) -> dict[Key, dict[str, str]]:
    """(Payment ID, Invoice Number) → the row's columns that the books determine (Memo/Description aside)."""
    company = sb.companies[realm]
    methods = company.payment_methods
    out: dict[Key, dict[str, str]] = {}
    for want in expected_records(sb, realm, connected_at).values():
        pay, inv = company.payments[want["payment"]], company.invoices[want["invoice"]]
        lines = [line for line in inv.get("Line", []) if line.get("DetailType") == "SalesItemLineDetail"]
        qty = sum((Decimal(str(line["SalesItemLineDetail"].get("Qty", 1))) for line in lines), Decimal(0))
        method = methods.get((pay.get("PaymentMethodRef") or {}).get("value", ""), {})
        kind = "Credit" if method.get("Type") == "CREDIT_CARD" else METHOD_TYPES.get(method.get("Name", ""), "")
        if len(lines) == 1:
            detail = lines[0]["SalesItemLineDetail"]
            price = _money(detail["UnitPrice"])
        else:
            price = _money(sum((Decimal(str(line["Amount"])) for line in lines), Decimal(0)))
        out[(str(pay["Id"]), str(inv["DocNumber"]))] = {
            "Date": inv["TxnDate"],
            "Invoice Number": str(inv["DocNumber"]),
            "Customer": (pay.get("CustomerRef") or inv["CustomerRef"])["name"],
            "Product": "; ".join(line["SalesItemLineDetail"]["ItemRef"]["name"] for line in lines),
            "Quantity": format(qty.normalize(), "f") if lines else "",
            "Price": price if lines else "",
            "Invoice Total": _money(inv["TotalAmt"]),
            "Payment Date": pay["TxnDate"],
            "Payment Type": kind,
            "Payment ID": str(pay["Id"]),
            "Payment Amount": _cents(want["amount"]),
            "Open Balance": _money(inv["Balance"]),
            "location_id": LOCATION,
        }
    return out


def read_files(files: list[Path]) -> list[tuple[str, list[dict[str, str]]]]:
    """Each file parsed with Python's csv module (its header checked), in name order."""
    out = []
    for path in sorted(files):
        rows = list(csv.reader(io.StringIO(path.read_text(), newline="")))
        assert rows and rows[0] == PUBLISHED_HEADER, f"{path.name}: header {rows[:1]}"
        out.append((path.name, [dict(zip(PUBLISHED_HEADER, r, strict=True)) for r in rows[1:]]))
    return out


def replay(files: list[Path]) -> dict[Key, dict[str, str]]:
    """What a receiver holds after reading every file in order (module docstring)."""
    held: dict[Key, dict[str, str]] = {}
    for _, rows in read_files(files):
        for r in rows:
            for column in REQUIRED:
                assert r[column], f"required column {column} empty in {r}"
            key = (r["Payment ID"], r["Invoice Number"])
            if r["Payment Amount"] == "0.00" and r["Memo/Description"].startswith("Retracted"):
                held.pop(key, None)
            else:
                held[key] = r
    return held


def repeated(files: list[Path]) -> list[str]:
    """Rows delivered twice: a row equal to the row its key already held (a no-op a crash would cause)."""
    held: dict[Key, dict[str, str]] = {}
    out = []
    for name, rows in read_files(files):
        for r in rows:
            key = (r["Payment ID"], r["Invoice Number"])
            if held.get(key) == r:
                out.append(f"{name}: {key}")
            held[key] = r
    return out


def mismatches(files: list[Path], want: dict[Key, dict[str, str]]) -> list[str]:
    """Where the replayed files differ from the books: missing, unexpected, or a column that differs."""
    held = replay(files)
    out = [f"missing {k}" for k in sorted(set(want) - set(held))]
    out += [f"unexpected {k}" for k in sorted(set(held) - set(want))]
    for key in sorted(set(want) & set(held)):
        wrong = {c: (held[key][c], v) for c, v in want[key].items() if held[key][c] != v}
        if wrong:
            out.append(f"misstated {key}: {wrong}")
    return out


def partial_files(server: SftpServer) -> list[str]:
    """Anything a receiver could see that is not a whole delivered file (visible names only)."""
    return [p.name for p in server.files() if not (p.name.startswith("qbo-") and p.name.endswith(".csv"))]


class Watcher:
    """Lists the directory every few milliseconds while it is entered: every visible file must be whole when
    first seen (the header, rows, a final line end) and never change afterwards."""

    def __init__(self, server: SftpServer) -> None:
        self.server = server
        self.problems: list[str] = []
        self.seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="sftp-watcher", daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.look()
            time.sleep(0.005)

    def look(self) -> None:
        for path in self.server.files():
            try:
                text = path.read_bytes().decode()
            except FileNotFoundError:
                continue
            before = self.seen.setdefault(path.name, text)
            whole = text.startswith(",".join(PUBLISHED_HEADER) + "\r\n") and text.endswith("\r\n")
            problem = f"{path.name}: visible while incomplete or changed"
            if (not path.name.endswith(".csv") or not whole or before != text) and problem not in self.problems:
                self.problems.append(problem)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.look()

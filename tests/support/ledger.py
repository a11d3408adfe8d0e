"""What the reliability and security suites tried and what held, and every secret value they used.

Two process-wide ledgers (one of each per pytest process), filled through tests/conftest.py's `report`
fixture and its secret-hygiene checks:

- `ROWS`: one row per check, appended through the `report` fixture; `tests/report.py` prints them as
  the summary table and writes them to test-artifacts/reliability-report.json.
- `SECRETS`: every token, client secret and signing key a test's stack used, and every piece of text
  the stack produced (process logs, Events, CR status, /metrics, exception texts). `scan()` looks
  for each value in each text; the session-level check in tests/conftest.py fails the run on any hit."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qbo_operator.core import names
from qbo_operator.harness.controlplane import KubeClients
from tests.support.paths import ARTIFACTS

REPORT_FILE = ARTIFACTS / "reliability-report.json"
# Figures that the last line of `make reliability-report` adds up over all rows.
TOTALS = ("kills", "expected", "delivered", "duplicated", "lost", "fuzz_inputs", "nights", "mismatches", "sftp_kills")
NIGHT_AREA, NIGHT_CHECK = "bookkeeping month", "a night's sync against the projection"
MIN_SECRET_LENGTH = 8  # shorter values (ids, "0") would match by accident and are not secrets


@dataclass
class Row:
    area: str
    check: str
    tried: str
    held: str
    nodeid: str
    kind: str = "check"  # "fault": faults=<passed>/<tried>; "sftp-fault": sftp_faults=; "attack": attacks=
    figures: dict[str, int] = field(default_factory=dict)
    outcome: str = "running"  # set by the report plugin from the test's result


ROWS: list[Row] = []


class Report:
    """The `report` fixture: `report.row(area, check, tried=..., held=..., **figures)`."""

    def __init__(self, nodeid: str) -> None:
        self.nodeid = nodeid

    def row(self, area: str, check: str, *, tried: Any, held: Any, kind: str = "check", **figures: int) -> Row:
        row = Row(area, check, str(tried), str(held), self.nodeid, kind, {k: int(v) for k, v in figures.items()})
        ROWS.append(row)
        return row

    def record_night(self, mismatches: int, *, check: str = NIGHT_CHECK) -> Row:
        """One simulated night (bookkeeping, then a sync) and how many records Green Check held that
        night unlike the projection (lost, false or duplicated): `nights=1 mismatches=<n>` in the totals,
        and one table line per `check` summing the nights tried and those with no mismatch."""
        return self.row(NIGHT_AREA, check, tried=1, held=int(mismatches == 0), nights=1, mismatches=mismatches)


# --- secrets ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    source: str
    label: str  # which secret (its kind, never its value)


class SecretLedger:
    """Secret values (with a label saying what each is) and the texts and files to search for them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values: dict[str, str] = {}  # value -> label
        self.texts: dict[str, str] = {}  # source -> text
        self.files: set[Path] = set()
        self.scanned = False
        self.hits: list[Hit] = []
        self.changes = 0  # grows with every registration: tests that registered nothing need no snapshot

    def add_secret(self, value: str | None, label: str) -> None:
        if value and len(value) >= MIN_SECRET_LENGTH:
            with self._lock:
                self.values.setdefault(value, label)
                self.changes += 1

    def add_secrets(self, values: Iterable[str | None], label: str) -> None:
        for value in values:
            self.add_secret(value, label)

    def add_text(self, source: str, text: str) -> None:
        with self._lock:
            n = sum(1 for s in self.texts if s == source or s.startswith(f"{source}#"))
            self.texts[source if n == 0 else f"{source}#{n}"] = text
            self.changes += 1

    def add_file(self, path: Path) -> None:
        with self._lock:
            self.files.add(path)
            self.changes += 1

    def add_dir(self, path: Path, pattern: str = "*.log") -> None:
        for p in sorted(path.glob(pattern)):
            self.add_file(p)

    def add_token_secrets(self, secrets: Iterable[Mapping[str, Any]]) -> None:
        """Every value of the token and credentials Secrets (base64 `data`) as a secret to look for."""
        for secret in secrets:
            name = (secret.get("metadata") or {}).get("name", "?")
            for key, raw in (secret.get("data") or {}).items():
                if key.endswith(("token", "SECRET", "secret")):
                    try:
                        value = base64.b64decode(raw).decode()
                    except (ValueError, UnicodeDecodeError):
                        continue
                    self.add_secret(value, f"{key} of Secret {name}")

    def sources(self) -> dict[str, str]:
        out = dict(self.texts)
        for path in sorted(self.files):
            if path.exists():
                out[str(path)] = path.read_text(errors="replace")
        return out

    def scan(self) -> list[Hit]:
        """Every (source, secret kind) where a secret value appears verbatim, base64-encoded or JSON-escaped."""
        hits: list[Hit] = []
        sources = self.sources()
        for value, label in list(self.values.items()):
            needles = {value, json.dumps(value)[1:-1]}
            for source, text in sources.items():
                if any(n in text for n in needles):
                    hits.append(Hit(source, label))
        return hits

    def final_scan(self) -> list[Hit]:
        """The session-level check, run once at the end of the session."""
        with self._lock:
            if self.scanned:
                return self.hits
            self.scanned = True
        self.hits = self.scan()
        return self.hits


SECRETS = SecretLedger()


def snapshot_cluster(cluster: KubeClients, label: str) -> None:
    """Events of every namespace, every QuickbooksIntegration's status, and the secret values of every
    labelled Secret (token and credentials Secrets), into the ledger."""
    events = cluster.kubectl("get", "events", "-A", "-o", "json", check=False)
    if events.returncode == 0:
        SECRETS.add_text(f"{label}: kubectl get events -A", events.stdout)
    crs = cluster.kubectl("get", names.PLURAL, "-A", "-o", "json", check=False)
    if crs.returncode == 0:
        statuses = [
            (o["metadata"]["namespace"], o["metadata"]["name"], o.get("status"))
            for o in json.loads(crs.stdout)["items"]
        ]
        SECRETS.add_text(f"{label}: status of every QuickbooksIntegration", json.dumps(statuses))
    secrets = cluster.kubectl("get", "secrets", "-A", "-l", names.INTEGRATION_LABEL, "-o", "json", check=False)
    if secrets.returncode == 0:
        SECRETS.add_token_secrets(json.loads(secrets.stdout)["items"])


def write_report_file(extra: Mapping[str, Any]) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    payload = {"rows": [row.__dict__ for row in ROWS], **extra}
    REPORT_FILE.write_text(json.dumps(payload, indent=2, default=str))
    return REPORT_FILE

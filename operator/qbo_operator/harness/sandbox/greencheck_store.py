"""What the Green Check sandbox holds (docs/greencheck.md §2): the current records of each CRB, each payment's set,
and every record's versions for audit. A payment set replaces the payment's current records as a unit: validated
first as a whole, so a set with one bad record changes nothing.

Kept apart from the HTTP server so the replace rule reads as one small, pure-state unit."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from qbo_operator.sync.records import PaymentSet, Record

Json = dict[str, Any]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def record_rules(realm_id: str, payment_id: str, rec: Record) -> list[dict[str, str]]:
    """Green Check's per-record business rules (the schema already holds): field → message."""
    errors: list[dict[str, str]] = []
    prefix = f"qbo:{realm_id}:payment:{payment_id}:"
    if not rec.external_id.startswith(prefix):
        errors.append({"field": "external_id", "message": "must start with qbo:<realm_id>:payment:<payment_id>:"})
    if rec.payment.id != payment_id:
        errors.append({"field": "payment.id", "message": "must equal the set's payment_id"})
    for name, value in (
        ("payment.amount", rec.payment.amount),
        ("payment.total_amount", rec.payment.total_amount),
        ("payment.credit_applied", rec.payment.credit_applied),
        ("payment.unapplied_amount", rec.payment.unapplied_amount),
        ("invoice.total", rec.invoice.total),
    ):
        if value < 0:
            errors.append({"field": name, "message": "must be ≥ 0"})
    if not (rec.invoice.number or "").strip():
        errors.append({"field": "invoice.number", "message": "is required"})
    if len(rec.currency) != 3 or not rec.currency.isalpha() or not rec.currency.isupper():
        errors.append({"field": "currency", "message": "must be an ISO 4217 code"})
    return errors


class GreenCheckStore:
    """Current records per CRB (`records[crb][external_id]`), each payment's current external ids, and versions.

    `results` counts record statuses (created, updated, unchanged, retracted) and rejected sets (`rejected`);
    `received` counts how often each external id arrived in a request that was processed (not replayed)."""

    def __init__(self, clock: Callable[[], str] = _now) -> None:
        self.records: defaultdict[str, dict[str, Json]] = defaultdict(dict)
        self.results: Counter[str] = Counter()
        self.received: Counter[str] = Counter()
        self.reject_external_ids: set[str] = set()
        self._payments: defaultdict[str, dict[tuple[str, str], list[str]]] = defaultdict(dict)
        self._versions: defaultdict[str, dict[str, list[Json]]] = defaultdict(dict)
        self._clock = clock

    def set_errors(self, realm_id: str, payment_set: PaymentSet) -> list[dict[str, str]]:
        """Every reason to reject the set, each field named from the set (`records[2].invoice.total`)."""
        errors: list[dict[str, str]] = []
        if not payment_set.payment_id.strip():
            errors.append({"field": "payment_id", "message": "is required"})
        seen: set[str] = set()
        for i, rec in enumerate(payment_set.records):
            at = f"records[{i}]"
            if rec.external_id in seen:
                errors.append({"field": f"{at}.external_id", "message": "repeats an earlier record of this set"})
            seen.add(rec.external_id)
            if rec.external_id in self.reject_external_ids:
                errors.append({"field": f"{at}.external_id", "message": "refused by the sandbox's reject list"})
            for e in record_rules(realm_id, payment_set.payment_id, rec):
                errors.append({"field": f"{at}.{e['field']}", "message": e["message"]})
        return errors

    def apply(self, crb_id: str, realm_id: str, payment_set: PaymentSet, raw: list[Json]) -> Json:
        """Make `payment_set` the payment's current records (or reject it whole); the result in the wire shape.
        `raw` are the set's records as received, stored and compared as such."""
        for rec in payment_set.records:
            self.received[rec.external_id] += 1
        pid = payment_set.payment_id
        errors = self.set_errors(realm_id, payment_set)
        if errors:
            self.results["rejected"] += 1
            return {"payment_id": pid, "status": "rejected", "records": [], "errors": errors}
        current = self.records[crb_id]
        outcome: list[Json] = []
        for rec, body in zip(payment_set.records, raw, strict=True):
            held = current.get(rec.external_id)
            status = "created" if held is None else "unchanged" if held == body else "updated"
            if status != "unchanged":
                current[rec.external_id] = body
                self._version(crb_id, rec.external_id, status, body)
            outcome.append({"external_id": rec.external_id, "status": status})
        new_ids = [rec.external_id for rec in payment_set.records]
        for gone in sorted(set(self._payments[crb_id].get((realm_id, pid), ())) - set(new_ids)):
            del current[gone]
            self._version(crb_id, gone, "retracted", None)
            outcome.append({"external_id": gone, "status": "retracted"})
        if new_ids:
            self._payments[crb_id][(realm_id, pid)] = new_ids
        else:
            self._payments[crb_id].pop((realm_id, pid), None)
        self.results.update(r["status"] for r in outcome)
        return {"payment_id": pid, "status": "applied", "records": outcome}

    def _version(self, crb_id: str, external_id: str, status: str, record: Json | None) -> None:
        history = self._versions[crb_id].setdefault(external_id, [])
        history.append({"version": len(history) + 1, "status": status, "record": record, "at": self._clock()})

    def current_records(self, crb_id: str) -> dict[str, Json]:
        """external_id → the record Green Check holds now (retracted ones are gone)."""
        return dict(self.records.get(crb_id, {}))

    def versions(self, crb_id: str, external_id: str) -> list[Json]:
        """Every change to the record, oldest first: version, status, record (None once retracted), at."""
        return list(self._versions.get(crb_id, {}).get(external_id, []))

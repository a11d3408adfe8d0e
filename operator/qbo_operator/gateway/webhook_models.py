"""Intuit webhook payloads (docs/qbo.md §5): the legacy `eventNotifications` document and the CloudEvents
array, both normalised to one `WebhookEvent`.

Pure parsing, no I/O. A delivery is parsed event by event, so one malformed element never hides
the good ones beside it; only a body that is not a known shape at all raises PayloadError. The
caller has verified the signature before anything here runs."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

# Bounds on values that end up as dict keys, log text or metric labels.
_MAX_ID = 128


class PayloadError(ValueError):
    """The body is not JSON, or not a shape Intuit sends. The message is safe to log."""


class Operation(StrEnum):
    CREATE = "Create"
    UPDATE = "Update"
    DELETE = "Delete"
    MERGE = "Merge"
    VOID = "Void"
    EMAILED = "Emailed"
    OTHER = "Other"


# CloudEvents verbs (`qbo.<entity>.<verb>.v1`) → the legacy operation words. Voids are spelled
# `void` (WSO2's trigger) or `voided` (elsewhere): both are accepted (docs/qbo.md §5.4).
_VERBS: dict[str, Operation] = {
    "created": Operation.CREATE,
    "create": Operation.CREATE,
    "updated": Operation.UPDATE,
    "update": Operation.UPDATE,
    "deleted": Operation.DELETE,
    "delete": Operation.DELETE,
    "merged": Operation.MERGE,
    "merge": Operation.MERGE,
    "void": Operation.VOID,
    "voided": Operation.VOID,
    "emailed": Operation.EMAILED,
}

# QBO entity names as the Accounting API spells them; webhook metrics use these or "Other".
KNOWN_ENTITIES: tuple[str, ...] = (
    "Account",
    "Bill",
    "BillPayment",
    "Budget",
    "Class",
    "CreditMemo",
    "Currency",
    "Customer",
    "Department",
    "Deposit",
    "Employee",
    "Estimate",
    "Invoice",
    "Item",
    "JournalCode",
    "JournalEntry",
    "Payment",
    "PaymentMethod",
    "Preferences",
    "Purchase",
    "PurchaseOrder",
    "RefundReceipt",
    "SalesReceipt",
    "TaxAgency",
    "Term",
    "TimeActivity",
    "Transfer",
    "Vendor",
    "VendorCredit",
)
_ENTITY_BY_LOWER = {e.lower(): e for e in KNOWN_ENTITIES}
_CE_TYPE = re.compile(r"^qbo\.([A-Za-z0-9_]{1,64})\.([A-Za-z]{1,32})\.v[0-9]{1,4}$")


def canonical_entity(name: str) -> str:
    """`payment`/`PAYMENT`/`Payment` → `Payment`; anything unknown → `Other` (bounded metric labels)."""
    return _ENTITY_BY_LOWER.get(name.strip().lower(), "Other")


def canonical_operation(word: str) -> Operation:
    lowered = word.strip().lower()
    for op in Operation:
        if op.value.lower() == lowered:
            return op
    return _VERBS.get(lowered, Operation.OTHER)


class WebhookEvent(BaseModel):
    """One change notification, whatever format it arrived in. Carries ids only: the sync re-reads
    the entity through the API, so nothing here is trusted beyond "something changed"."""

    model_config = ConfigDict(frozen=True)

    key: str  # de-duplication key: sha256 of the CloudEvents id, or of the legacy event's fields
    realm_id: str
    entity: str  # canonical name, or "Other"
    entity_id: str
    operation: Operation
    time: datetime | None
    source_format: Literal["cloudevents", "legacy"]


class Delivery(BaseModel):
    """A parsed body: the events that validated, and one short line per element that did not."""

    source_format: Literal["cloudevents", "legacy"]
    events: list[WebhookEvent] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)


# --- wire models ------------------------------------------------------------------------------


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, str_strip_whitespace=True)


_W = TypeVar("_W", bound=_Wire)


def _bounded(value: str) -> str:
    if not value:
        raise ValueError("is empty")
    if len(value) > _MAX_ID:
        raise ValueError(f"is longer than {_MAX_ID} characters")
    return value


# An id, name or word that becomes a dict key, log text or a metric label: present and bounded.
BoundedText = Annotated[str, AfterValidator(_bounded)]


class CloudEvent(_Wire):
    """One element of the CloudEvents array (dotnet `WebhooksCloudEvent`, docs/qbo.md §5.4)."""

    specversion: str
    id: BoundedText
    type: str
    intuitaccountid: BoundedText
    intuitentityid: BoundedText
    source: str | None = None
    time: datetime | None = None
    data: Any = None

    @field_validator("type")
    @classmethod
    def _type_shape(cls, value: str) -> str:
        if not _CE_TYPE.fullmatch(value):
            raise ValueError("is not of the form qbo.<entity>.<verb>.v<N>")
        return value

    def normalise(self) -> WebhookEvent:
        match = _CE_TYPE.fullmatch(self.type)
        assert match is not None  # checked by the validator
        entity, verb = match.groups()
        return WebhookEvent(
            key=_digest("ce", self.id),
            realm_id=self.intuitaccountid,
            entity=canonical_entity(entity),
            entity_id=self.intuitentityid,
            operation=_VERBS.get(verb.lower(), Operation.OTHER),
            time=_utc(self.time),
            source_format="cloudevents",
        )


class LegacyEntity(_Wire):
    name: BoundedText
    id: BoundedText
    operation: BoundedText
    last_updated: datetime | None = Field(default=None, alias="lastUpdated")
    deleted_id: str | None = Field(default=None, alias="deletedId")


class LegacyNotification(_Wire):
    realm_id: BoundedText = Field(alias="realmId")
    data_change_event: dict[str, Any] = Field(alias="dataChangeEvent")


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. year 9999 with a negative offset: no usable time
        return None


def _problem(where: str, exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(root)"
    return f"{where}: {loc} {err['msg']}"[:300]


# --- parsing ----------------------------------------------------------------------------------


def parse_delivery(body: bytes) -> Delivery:
    """Parse a verified body. Raises PayloadError when it is not JSON or not a known shape."""
    try:
        doc = json.loads(body)
    except RecursionError:
        raise PayloadError("body nests JSON too deeply") from None
    except ValueError as exc:  # includes UnicodeDecodeError
        raise PayloadError(f"body is not JSON: {type(exc).__name__}") from None
    if isinstance(doc, list):
        return _parse_cloudevents(doc)
    if isinstance(doc, dict):
        if "eventNotifications" in doc:
            return _parse_legacy(doc["eventNotifications"])
        if "specversion" in doc:  # structured-mode single CloudEvent
            return _parse_cloudevents([doc])
        raise PayloadError("JSON object has neither `eventNotifications` nor `specversion`")
    raise PayloadError(f"JSON {type(doc).__name__} is neither a CloudEvents array nor a notification object")


def _parse_cloudevents(items: Iterable[Any]) -> Delivery:
    delivery = Delivery(source_format="cloudevents")
    for i, item in enumerate(items):
        try:
            delivery.events.append(CloudEvent.model_validate(item).normalise())
        except ValidationError as exc:
            delivery.problems.append(_problem(f"event[{i}]", exc))
    return delivery


def _parse_legacy(notifications: Any) -> Delivery:
    delivery = Delivery(source_format="legacy")
    if not isinstance(notifications, list):
        raise PayloadError("`eventNotifications` is not a list")
    for i, raw in enumerate(notifications):
        note = _validated(LegacyNotification, raw, f"eventNotifications[{i}]", delivery)
        if note is None:
            continue
        entities = note.data_change_event.get("entities")
        if not isinstance(entities, list):
            delivery.problems.append(f"eventNotifications[{i}].dataChangeEvent.entities is not a list")
            continue
        for j, raw_entity in enumerate(entities):
            entity = _validated(LegacyEntity, raw_entity, f"eventNotifications[{i}].entities[{j}]", delivery)
            if entity is not None:
                delivery.events.append(_legacy_event(note.realm_id, entity))
    return delivery


def _validated(model: type[_W], raw: Any, where: str, delivery: Delivery) -> _W | None:
    """`raw` as `model`, or None with the first problem noted on `delivery`."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        delivery.problems.append(_problem(where, exc))
        return None


def _legacy_event(realm_id: str, ent: LegacyEntity) -> WebhookEvent:
    when = _utc(ent.last_updated)
    return WebhookEvent(
        # Legacy events have no id: the same change re-sent by Intuit has the same fields.
        key=_digest("legacy", realm_id, ent.name, ent.id, ent.operation, when.isoformat() if when else ""),
        realm_id=realm_id,
        entity=canonical_entity(ent.name),
        entity_id=ent.id,
        operation=canonical_operation(ent.operation),
        time=when,
        source_format="legacy",
    )

"""Typed views of the QuickbooksIntegration resource and its token Secret (docs/design.md §2, §3).

Handlers, the gateway and the sync parse the raw dicts here first, so that everything past this
boundary works with validated values."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qbo_operator.core import names


class Phase(StrEnum):
    PENDING = "Pending"
    CONNECTED = "Connected"
    DISCONNECTED = "Disconnected"
    ERROR = "Error"


class SyncResult(StrEnum):
    SUCCEEDED = "Succeeded"
    PARTIALLY_SUCCEEDED = "PartiallySucceeded"
    FAILED = "Failed"


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")


class SftpDelivery(_Model):
    """Where Green Check's documented SFTP intake takes the Wholesale CSV files (docs/greencheck.md §4).

    Green Check does not publish the host, account or directory: they come with the set-up, so they are per
    integration. The key and the pinned host key live in the Secret `secret_name` (keys `ssh-privatekey` and
    `known_hosts`, `names.SFTP_PRIVATE_KEY` / `names.SFTP_KNOWN_HOSTS`), which the sync's Role may read by name."""

    host: str
    port: int = 22
    username: str
    directory: str
    location_id: str = Field(alias="locationId")
    secret_name: str = Field(alias="secretName")


class Delivery(_Model):
    """How the sync hands payment sets to Green Check: the assumed JSON API (the default), or the SFTP intake,
    the one Green Check documents. The CRD refuses `sftp` without its block and the block without `sftp`."""

    method: Literal["api", "sftp"] = "api"
    sftp: SftpDelivery | None = None


class IntegrationSpec(_Model):
    company_id: str = Field(alias="companyId")
    company_name: str | None = Field(default=None, alias="companyName")
    environment: Literal["production", "sandbox"] = "production"
    schedule: str | None = None
    time_zone: str | None = Field(default=None, alias="timeZone")
    suspend: bool = False
    token_secret_name: str | None = Field(default=None, alias="tokenSecretName")
    revoke_on_delete: bool = Field(default=True, alias="revokeOnDelete")
    # Webhook-gated nights: read QuickBooks at least every N days even without webhooks (0: every night);
    # None takes the operator's --full-read-every-days.
    full_read_every_days: int | None = Field(default=None, alias="fullReadEveryDays", ge=0, le=30)
    delivery: Delivery = Field(default_factory=Delivery)


class LastSync(_Model):
    job_name: str | None = Field(default=None, alias="jobName")
    trigger: Literal["Schedule", "Manual", "Webhook"] | None = None
    started_at: datetime | None = Field(default=None, alias="startedAt")
    finished_at: datetime | None = Field(default=None, alias="finishedAt")
    result: SyncResult | None = None
    payments_synced: int = Field(default=0, alias="paymentsSynced")
    payments_skipped: int = Field(default=0, alias="paymentsSkipped")
    records_rejected: int = Field(default=0, alias="recordsRejected")
    records_created: int = Field(default=0, alias="recordsCreated")
    records_updated: int = Field(default=0, alias="recordsUpdated")
    records_retracted: int = Field(default=0, alias="recordsRetracted")
    amount_synced_cents: int = Field(default=0, alias="amountSyncedCents")
    qbo_requests: int = Field(default=0, alias="qboRequests")
    gate: str | None = None  # why the run read QuickBooks, or NoWebhooks when it did not (sync.gate.Gate)
    green_check_requests: int = Field(default=0, alias="greenCheckRequests")
    message: str | None = None


class RejectedPayment(_Model):
    payment_id: str = Field(alias="paymentId")
    sync_token: str = Field(default="", alias="syncToken")
    reason: str = ""


class RejectedStatus(_Model):
    """Payments whose set Green Check refused: kept here, sent again every run until accepted or changed."""

    count: int = 0
    payments: list[RejectedPayment] = Field(default_factory=list)


class WebhookStatus(_Model):
    last_event_time: datetime | None = Field(default=None, alias="lastEventTime")
    events_since_last_sync: int = Field(default=0, alias="eventsSinceLastSync")


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: datetime | None = Field(default=None, alias="lastTransitionTime")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")


class MeteredReads(_Model):
    """Metered Accounting API calls (queries, reads, CDC; OAuth is not metered) the sync made this calendar month
    (UTC). Intuit meters reads per app, not per company, and cuts a Builder-tier app off past its monthly cap
    (docs/qbo.md); the operator sums these per app against `--read-budget`."""

    month: str  # YYYY-MM, UTC
    requests: int = 0

    @staticmethod
    def month_of(at: datetime) -> str:
        return at.astimezone(UTC).strftime("%Y-%m")

    def in_month(self, month: str) -> int:
        """This month's count; a count from an earlier month is 0 now."""
        return self.requests if self.month == month else 0

    @classmethod
    def after(cls, previous: MeteredReads | None, at: datetime, requests: int) -> MeteredReads:
        """The count once a run that made `requests` calls ends at `at`: added within a month, anew in the next."""
        month = cls.month_of(at)
        return cls(month=month, requests=(previous.in_month(month) if previous else 0) + requests)


class IntegrationStatus(_Model):
    phase: Phase | None = None
    authorization_url: str | None = Field(default=None, alias="authorizationURL")
    authorization_url_expires_at: datetime | None = Field(default=None, alias="authorizationURLExpiresAt")
    realm_id: str | None = Field(default=None, alias="realmId")
    connected_at: datetime | None = Field(default=None, alias="connectedAt")
    sync_watermark: datetime | None = Field(default=None, alias="syncWatermark")
    last_sync: LastSync | None = Field(default=None, alias="lastSync")
    last_successful_sync_time: datetime | None = Field(default=None, alias="lastSuccessfulSyncTime")
    last_read_time: datetime | None = Field(default=None, alias="lastReadTime")
    rejected: RejectedStatus | None = None
    refresh_token_expires_at: datetime | None = Field(default=None, alias="refreshTokenExpiresAt")
    refresh_token_hard_expires_at: datetime | None = Field(default=None, alias="refreshTokenHardExpiresAt")
    last_handled_sync_request: str | None = Field(default=None, alias="lastHandledSyncRequest")
    webhook: WebhookStatus | None = None
    cron_job_name: str | None = Field(default=None, alias="cronJobName")
    cron_job_namespace: str | None = Field(default=None, alias="cronJobNamespace")
    metered_reads: MeteredReads | None = Field(default=None, alias="meteredReads")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    conditions: list[Condition] = Field(default_factory=list)

    def condition(self, type_: str) -> Condition | None:
        return next((c for c in self.conditions if c.type == type_), None)


class Integration(_Model):
    """A QuickbooksIntegration as read from the API server."""

    namespace: str
    name: str
    uid: str
    generation: int = 0
    resource_version: str | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    deleting: bool = False
    spec: IntegrationSpec
    status: IntegrationStatus = Field(default_factory=IntegrationStatus)

    @classmethod
    def from_object(cls, obj: dict[str, Any]) -> Integration:
        meta = obj.get("metadata") or {}
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            uid=meta.get("uid", ""),
            generation=meta.get("generation") or 0,
            resource_version=meta.get("resourceVersion"),
            annotations=meta.get("annotations") or {},
            deleting=bool(meta.get("deletionTimestamp")),
            spec=IntegrationSpec.model_validate(obj.get("spec") or {}),
            status=IntegrationStatus.model_validate(obj.get("status") or {}),
        )

    @property
    def token_secret_name(self) -> str:
        return self.spec.token_secret_name or names.token_secret_name(self.name)

    @property
    def sync_requested(self) -> str | None:
        return self.annotations.get(names.SYNC_REQUESTED_ANNOTATION)


# ---------------------------------------------------------------------------------------------
# The token Secret (docs/design.md §3)

TOKEN_KEYS: tuple[str, ...] = (
    "access_token",
    "refresh_token",
    "realm_id",
    "scope",
    "connected_at",
    "expires_at",
    "refresh_token_expires_at",
)
OPTIONAL_TOKEN_KEYS: tuple[str, ...] = ("refresh_token_hard_expires_at", "refreshed_at")
_TIME_KEYS = (
    "connected_at",
    "expires_at",
    "refresh_token_expires_at",
    "refresh_token_hard_expires_at",
    "refreshed_at",
)


class TokenSecretError(ValueError):
    """The Secret is present but unusable; `key` names what a person must fix."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"token Secret key {key!r} {problem}")
        self.key = key


def secret_text(data: Mapping[str, str] | None, key: str) -> str | None:
    """The stripped text under `key` of a Secret's base64 `data`: None when the key is absent,
    TokenSecretError when it is not base64 text or is blank. The strict parser and the gateway's
    lenient look at a broken Secret both read keys through this."""
    raw = (data or {}).get(key)
    if raw is None:
        return None
    try:
        value = base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise TokenSecretError(key, "is not valid base64 text") from None
    if not value.strip():
        raise TokenSecretError(key, "is empty")
    return value.strip()


class Tokens(_Model):
    """The decoded token Secret. `repr` hides the token values so they never reach a log."""

    access_token: str = Field(repr=False)
    refresh_token: str = Field(repr=False)
    realm_id: str
    scope: str
    connected_at: datetime
    expires_at: datetime
    refresh_token_expires_at: datetime
    refresh_token_hard_expires_at: datetime | None = None
    refreshed_at: datetime | None = None

    @classmethod
    def from_secret_data(cls, data: Mapping[str, str] | None) -> Tokens:
        """Decode a Secret's base64 `data`; raises TokenSecretError naming the first bad key."""
        decoded: dict[str, str] = {}
        for key in TOKEN_KEYS + OPTIONAL_TOKEN_KEYS:
            value = secret_text(data, key)
            if value is None:
                if key in TOKEN_KEYS:
                    raise TokenSecretError(key, "is missing")
                continue
            decoded[key] = value
        for key in _TIME_KEYS:
            if key in decoded:
                try:
                    parse_rfc3339(decoded[key])
                except TimeZoneMissing:
                    raise TokenSecretError(key, "has no time zone (use RFC 3339 with Z)") from None
                except ValueError:
                    raise TokenSecretError(key, "is not an RFC 3339 time") from None
        try:
            return cls.model_validate(decoded)
        except ValidationError as exc:  # pragma: no cover - every key was checked above
            key = str(exc.errors()[0]["loc"][0])
            raise TokenSecretError(key, "cannot be parsed") from None

    def to_secret_data(self) -> dict[str, str]:
        """The Secret's `data` (base64), times in RFC 3339 UTC."""
        out: dict[str, str] = {}
        for key, value in self.model_dump().items():
            if value is None:
                continue
            text = rfc3339(value) if isinstance(value, datetime) else str(value)
            out[key] = base64.b64encode(text.encode()).decode()
        return out


# ---------------------------------------------------------------------------------------------
# RFC 3339: the one time format on the wire (Kubernetes, the token Secret, Intuit's answers)


class TimeZoneMissing(ValueError):
    """An ISO 8601 time without an offset: RFC 3339 requires one, and a naive time compared with an
    aware one fails later, far from the bad value."""


def rfc3339(value: datetime) -> str:
    """UTC, second precision, with a Z: the one time format written to Kubernetes."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> datetime:
    """An aware datetime from RFC 3339 text (`Z` or an offset). ValueError when it is not a time,
    TimeZoneMissing (a ValueError) when it has no offset."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise TimeZoneMissing("has no time zone")
    return parsed

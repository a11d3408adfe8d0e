"""Operator-wide configuration from environment variables (docs/design.md §6).

Each command loads only what it needs; anything missing or malformed fails at start-up with one
line per variable, so a person fixes the chart values in one go. The sync's tuning and run metadata
are read here too (`Tuning`, `trigger_from_env`, `job_name_from_env`), so one module reads the environment."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, SecretStr, ValidationError

from qbo_operator.core import endpoints
from qbo_operator.core.schedule import ScheduleError, validate_schedule

Component = Literal["operator", "gateway", "sync"]

INTUIT_DISCOVERY_URL = "https://developer.api.intuit.com/.well-known/openid_configuration"
INTUIT_AUTH_URL = "https://appcenter.intuit.com/connect/oauth2"
INTUIT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"  # noqa: S105 - a URL
INTUIT_REVOKE_URL = "https://developer.api.intuit.com/v2/oauth2/tokens/revoke"
INTUIT_API_URLS = {
    "production": "https://quickbooks.api.intuit.com",
    "sandbox": "https://sandbox-quickbooks.api.intuit.com",
}

# What the sync Job itself needs besides an Intuit app's credentials: Green Check's.
_SYNC_REQUIRED = (
    "GREENCHECK_API_URL",
    "GREENCHECK_CLIENT_ID",
    "GREENCHECK_CLIENT_SECRET",
    "GREENCHECK_SERVICE_PROVIDER_ID",
)
# Which variables each command cannot start without (the Intuit apps' come from `app_problems`).
REQUIRED: dict[Component, tuple[str, ...]] = {
    # The operator mirrors the client credentials into each sync Job's Secret and the Green Check
    # settings into its CronJob: without them every Job would fail, so it refuses to start instead.
    "operator": ("QBO_STATE_SIGNING_KEY", "QBO_GATEWAY_URL", *_SYNC_REQUIRED),
    "gateway": ("QBO_STATE_SIGNING_KEY", "QBO_REDIRECT_URI", "QBO_GATEWAY_URL"),
    "sync": _SYNC_REQUIRED,
}

# Intuit gives each app two key pairs: development keys for sandbox companies, production keys for real
# ones (docs/qbo.md "Corrections" 8), and the developer portal shows a webhook verifier token for each.
# So everything that belongs to an Intuit app exists once per environment. Production keeps the names it
# always had; sandbox's carry QBO_SANDBOX_. Either app may be absent; an integration of an absent one is
# refused (phase Error, `missing_credentials`).
Environment = Literal["production", "sandbox"]
ENVIRONMENTS: tuple[Environment, ...] = ("production", "sandbox")
_APP_PREFIX: dict[Environment, str] = {"production": "QBO_", "sandbox": "QBO_SANDBOX_"}
# The parts of an app: the keys every command needs, and the verifier token the gateway needs too.
_APP_KEYS = ("CLIENT_ID", "CLIENT_SECRET")
_GATEWAY_APP_KEYS = (*_APP_KEYS, "WEBHOOK_VERIFIER_TOKEN")
# Endpoint overrides a sandbox app may have of its own (the local test stack runs one QBO per app);
# unset, the sandbox app uses the shared ones, as Intuit serves both environments' OAuth from one host.
_APP_ENDPOINTS = ("AUTH_URL", "TOKEN_URL", "REVOKE_URL", "API_URL")


def app_variables(environment: Environment, component: Component = "sync") -> tuple[str, ...]:
    """The variables that hold `environment`'s Intuit app for `component`, e.g. QBO_SANDBOX_CLIENT_ID."""
    keys = _GATEWAY_APP_KEYS if component == "gateway" else _APP_KEYS
    return tuple(_APP_PREFIX[environment] + key for key in keys)


def app_problems(component: Component, env: Mapping[str, str]) -> list[str]:
    """Pure: an app is all there or all absent, and at least one is there. None at all names the
    production variables (the usual case), with the sandbox alternative."""
    present = {e: [v for v in app_variables(e, component) if env.get(v, "").strip()] for e in ENVIRONMENTS}
    if not any(present.values()):
        return [
            f"{var} is required for `qbo-operator {component}` (or {alt} for sandbox companies only) but is not set"
            for var, alt in zip(
                app_variables("production", component), app_variables("sandbox", component), strict=True
            )
        ]
    # Half an app: name what is missing of it.
    return [
        f"{var} is required for `qbo-operator {component}` but is not set"
        for e, given in present.items()
        if given
        for var in app_variables(e, component)
        if var not in given
    ]


def missing_credentials_message(environment: str, variables: Sequence[str]) -> str:
    """Why an integration of an environment without an Intuit app is refused, naming the variables."""
    listed = " and ".join(variables)
    keys = "development" if environment == "sandbox" else "production"
    verb = "is" if len(variables) == 1 else "are"
    return (
        f"spec.environment is {environment}, but the operator has no credentials for it: {listed} {verb} not "
        f"set. Put the Intuit app's {keys} keys there (the operator's credentials Secret), or use the other "
        "environment."
    )


_URLS = (
    "QBO_REDIRECT_URI",
    "QBO_GATEWAY_URL",
    "GREENCHECK_API_URL",
    "QBO_DISCOVERY_URL",
    "QBO_AUTH_URL",
    "QBO_TOKEN_URL",
    "QBO_REVOKE_URL",
    "QBO_API_URL",
    *(_APP_PREFIX["sandbox"] + endpoint for endpoint in _APP_ENDPOINTS),
)
# Our own public URLs; every other URL is an endpoint override: https unless loopback (core/endpoints.py).
_OWN_URLS = ("QBO_REDIRECT_URI", "QBO_GATEWAY_URL")
_MIN_KEY_BYTES = 32


class ConfigError(Exception):
    """Start-up configuration problems, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    qbo_client_id: str = ""
    qbo_client_secret: SecretStr = SecretStr("")
    qbo_webhook_verifier_token: SecretStr = SecretStr("")
    qbo_state_signing_key: SecretStr = SecretStr("")
    qbo_redirect_uri: str = ""
    qbo_gateway_url: str = ""
    greencheck_api_url: str = ""
    greencheck_client_id: str = ""
    greencheck_client_secret: SecretStr = SecretStr("")
    greencheck_service_provider_id: str = ""
    qbo_default_schedule: str = "H 2 * * *"
    qbo_default_time_zone: str = "UTC"
    # Webhook-gated nights (sync/gate.py): every integration without spec.fullReadEveryDays reads QuickBooks at
    # least this often; 0 reads every night. The operator passes it to each CronJob; at most 30 (CDC's reach).
    qbo_full_read_every_days: int = Field(default=7, ge=0, le=30)
    qbo_sync_image: str = "ghcr.io/greencheck/qbo-operator:0.1.0"
    # QBO_LOG_FORMAT as the operator was given it, passed on to the sync Jobs so their lines match (the chart: json)
    qbo_log_format: str = ""
    # "<namespace>/<name>" of the gateway's ServiceAccount: the operator grants it each token Secret by name.
    qbo_gateway_service_account: str = ""
    # The release's own namespace (the chart sets it from the downward API): the realm claims live there,
    # where no tenant and no sync Job can write (gateway/realm_claims.py).
    pod_namespace: str = "qbo-system"
    qbo_auth_url: str = INTUIT_AUTH_URL
    qbo_token_url: str = INTUIT_TOKEN_URL
    qbo_revoke_url: str = INTUIT_REVOKE_URL
    qbo_api_url: str = ""  # empty: Intuit's host for the integration's spec.environment
    qbo_discovery_url: str = ""
    # The sandbox Intuit app (`app_variables("sandbox")`); empty endpoints fall back to the shared ones.
    qbo_sandbox_client_id: str = ""
    qbo_sandbox_client_secret: SecretStr = SecretStr("")
    qbo_sandbox_webhook_verifier_token: SecretStr = SecretStr("")
    qbo_sandbox_auth_url: str = ""
    qbo_sandbox_token_url: str = ""
    qbo_sandbox_revoke_url: str = ""
    qbo_sandbox_api_url: str = ""
    # Which Intuit app the qbo_client_* fields hold: production unless made by `for_environment("sandbox")`.
    # Private, so no environment variable can set it.
    _environment: Environment = PrivateAttr("production")

    @property
    def environment(self) -> Environment:
        """The environment of the Intuit app in qbo_client_id/qbo_client_secret (errors name its variables)."""
        return self._environment

    def api_url(self, environment: str) -> str:
        return (self.qbo_api_url or INTUIT_API_URLS[environment]).rstrip("/")

    def missing_credentials(self, environment: Environment) -> tuple[str, ...]:
        """The variables an integration of `environment` needs and this process lacks (empty: usable)."""
        app = self.for_environment(environment)
        values = (app.qbo_client_id, app.qbo_client_secret.get_secret_value())
        return tuple(var for var, value in zip(app_variables(environment), values, strict=True) if not value)

    @property
    def environments(self) -> tuple[Environment, ...]:
        """The environments whose Intuit app this process has."""
        return tuple(e for e in ENVIRONMENTS if not self.missing_credentials(e))

    def webhook_verifier_tokens(self) -> dict[Environment, str]:
        """Each configured app's webhook verifier token, by environment (the gateway tries each)."""
        return {e: self.for_environment(e).qbo_webhook_verifier_token.get_secret_value() for e in self.environments}

    def for_environment(self, environment: Environment) -> Settings:
        """These settings with `environment`'s Intuit app in the qbo_client_id, qbo_client_secret,
        qbo_webhook_verifier_token and endpoint fields, so OAuth, the token refresh and the QBO client
        work with one app without knowing there are two."""
        if environment == "production":
            return self
        update: dict[str, Any] = {
            "qbo_client_id": self.qbo_sandbox_client_id,
            "qbo_client_secret": self.qbo_sandbox_client_secret,
            "qbo_webhook_verifier_token": self.qbo_sandbox_webhook_verifier_token,
        }
        for field in ("qbo_auth_url", "qbo_token_url", "qbo_revoke_url", "qbo_api_url"):
            own = getattr(self, field.replace("qbo_", "qbo_sandbox_", 1))
            if own:
                update[field] = own
        app = self.model_copy(update=update)
        app._environment = "sandbox"
        return app

    @property
    def redirect_uri(self) -> str:
        return self.qbo_redirect_uri or self.qbo_gateway_url.rstrip("/") + "/oauth/callback"


def load_settings(component: Component, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and check the variables `component` needs; raise ConfigError naming each bad one."""
    env = dict(os.environ if environ is None else environ)
    problems: list[str] = []
    for var in REQUIRED[component]:
        if not env.get(var, "").strip():
            problems.append(f"{var} is required for `qbo-operator {component}` but is not set")
    problems += app_problems(component, env)
    for var in _URLS:
        value = env.get(var, "").strip()
        check = endpoints.not_a_url if var in _OWN_URLS else endpoints.insecure
        if value and (problem := check(var, value)):
            problems.append(problem)
    for var in ("QBO_STATE_SIGNING_KEY",):
        value = env.get(var, "")
        if value and len(value.encode()) < _MIN_KEY_BYTES:
            problems.append(f"{var} must be at least {_MIN_KEY_BYTES} bytes (e.g. `openssl rand -hex 32`)")
    account = env.get("QBO_GATEWAY_SERVICE_ACCOUNT", "").strip()
    if account and (account.count("/") != 1 or not all(account.split("/"))):
        problems.append(f"QBO_GATEWAY_SERVICE_ACCOUNT={account!r} must be <namespace>/<name>")
    schedule = env.get("QBO_DEFAULT_SCHEDULE", "").strip()
    if schedule:
        try:
            validate_schedule(schedule)
        except ScheduleError as exc:
            problems.append(f"QBO_DEFAULT_SCHEDULE: {exc}")
    zone = env.get("QBO_DEFAULT_TIME_ZONE", "").strip()
    if zone:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"QBO_DEFAULT_TIME_ZONE={zone!r} is not an IANA time zone")
    days = env.get("QBO_FULL_READ_EVERY_DAYS", "").strip()
    if days and not (days.isdigit() and 0 <= int(days) <= 30):
        problems.append(
            f"QBO_FULL_READ_EVERY_DAYS={days!r} must be a whole number of days from 0 (read every night) to 30"
        )
    if problems:
        raise ConfigError(problems)
    fields = {name: env[name.upper()].strip() for name in Settings.model_fields if env.get(name.upper(), "").strip()}
    if fields.get("qbo_discovery_url"):
        try:
            discovered = discover_endpoints(fields["qbo_discovery_url"])
        except DiscoveryError as exc:
            raise ConfigError([f"QBO_DISCOVERY_URL: {exc}"]) from None
        insecure = [endpoints.insecure(f"{name.upper()} (from QBO_DISCOVERY_URL)", v) for name, v in discovered.items()]
        if any(insecure):
            raise ConfigError([p for p in insecure if p])
        for name, value in discovered.items():
            fields.setdefault(name, value)  # an explicit QBO_AUTH_URL etc. still wins
    return Settings.model_validate(fields)


class DiscoveryError(Exception):
    pass


class _Discovery(BaseModel):
    authorization_endpoint: str
    token_endpoint: str
    revocation_endpoint: str


def discover_endpoints(url: str) -> dict[str, str]:
    """Intuit's OpenID discovery document → the three OAuth endpoints, fetched once at start-up."""
    try:
        response = httpx.get(url, timeout=10, headers={"Accept": "application/json"})
        response.raise_for_status()
        doc = _Discovery.model_validate(response.json())
    except httpx.HTTPError as exc:
        raise DiscoveryError(f"could not fetch {url}: {type(exc).__name__}") from None
    except (ValueError, ValidationError):
        raise DiscoveryError(f"{url} is not an OpenID discovery document with the OAuth endpoints") from None
    return {
        "qbo_auth_url": doc.authorization_endpoint,
        "qbo_token_url": doc.token_endpoint,
        "qbo_revoke_url": doc.revocation_endpoint,
    }


# ---------------------------------------------------------------------------------------------
# The sync's tuning and run metadata

# The two APIs' hard limits; they bound the tuning, and the clients use the same constants.
QBO_MAX_RESULTS = 1000  # Intuit's MAXRESULTS cap on one query page
GREENCHECK_MAX_RECORDS = 500  # records in one Green Check ingestion request
Trigger = Literal["Schedule", "Manual", "Webhook"]


class RetryKnobs(TypedDict):
    """The retry settings both API clients take from the tuning."""

    backoff_initial: float
    backoff_max: float
    transient_retries: int
    timeout: float


# Intuit lets one API request run about 120 s before its gateway gives up (docs/qbo.md "Corrections" 6): the
# default per-request timeout leaves room for that, so a slow page is answered (or 504'd and halved by the
# client) rather than cut off by us.
INTUIT_REQUEST_SECONDS = 120.0


@dataclass(frozen=True)
class Knob:
    """One tuning variable: its `Tuning` field, number kind, inclusive range and why the range."""

    variable: str
    field: str
    kind: type[int] | type[float]
    low: float
    high: float
    why: str

    def check(self, raw: str) -> tuple[int | float | None, str | None]:
        """Pure: (value, None) or (None, one line naming the variable, the value and the allowed range)."""
        allowed = f"allowed {self.low:g}..{self.high:g}"
        try:
            value = self.kind(raw)
        except ValueError:
            what = "a whole number" if self.kind is int else "a number"
            return None, f"{self.variable}={raw!r} is not {what} ({allowed}: {self.why})"
        if not self.low <= value <= self.high:  # NaN fails this too
            return None, f"{self.variable}={raw} is out of range ({allowed}: {self.why})"
        return value, None


TUNING_KNOBS: tuple[Knob, ...] = (
    Knob("QBO_SYNC_PAGE_SIZE", "page_size", int, 10, QBO_MAX_RESULTS, "Intuit refuses MAXRESULTS above 1000"),
    Knob("QBO_SYNC_BATCH_SIZE", "batch_size", int, 1, GREENCHECK_MAX_RECORDS, "Green Check takes 500 a request"),
    Knob("QBO_THROTTLE_WAIT_SECONDS", "throttle_wait", float, 0.1, 300, "the QBO client waits at most 300 s"),
    Knob("QBO_SYNC_BACKOFF_SECONDS", "backoff", float, 0.01, 60, "the first back-off"),
    Knob("QBO_SYNC_BACKOFF_MAX_SECONDS", "backoff_max", float, 0.01, 600, "the longest back-off"),
    Knob("QBO_SYNC_RETRIES", "retries", int, 0, 20, "retries of one request"),
    Knob("QBO_SYNC_TIMEOUT_SECONDS", "timeout", float, 1, 600, "Intuit allows about 120 s a request"),
    Knob("QBO_SYNC_SETTLE_SECONDS", "settle", float, 0, 3600, "how far behind the run's start the watermark stays"),
)


@dataclass(frozen=True)
class Tuning:
    """How the sync pages, batches and retries. Defaults are production values; tests shorten them. Each
    variable has a range (`TUNING_KNOBS`, docs/sync.md "Tuning"): out of it the command does not start,
    because a value such as a page of 1 row or no timeout fails only later, and silently (a run that never
    ends)."""

    page_size: int = QBO_MAX_RESULTS
    batch_size: int = GREENCHECK_MAX_RECORDS
    throttle_wait: float = 60.0
    backoff: float = 1.0
    backoff_max: float = 30.0
    retries: int = 5
    timeout: float = INTUIT_REQUEST_SECONDS + 10
    settle: float = 600.0  # changes stamped this close to a run's start are read again by the next run

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Tuning:
        """The tuning in `env`; ConfigError with one line per bad variable."""
        problems: list[str] = []
        values: dict[str, Any] = {}
        for knob in TUNING_KNOBS:
            raw = env.get(knob.variable, "").strip()
            if not raw:
                continue
            value, problem = knob.check(raw)
            if problem is not None:
                problems.append(problem)
            else:
                values[knob.field] = value
        tuning = cls(**values)
        if not problems and tuning.backoff_max < tuning.backoff:
            problems.append(
                f"QBO_SYNC_BACKOFF_MAX_SECONDS={tuning.backoff_max:g} is below "
                f"QBO_SYNC_BACKOFF_SECONDS={tuning.backoff:g} (allowed: at least the first back-off)"
            )
        if problems:
            raise ConfigError(problems)
        return tuning

    @property
    def gives_up_after(self) -> float:
        """Seconds a request that never answers is waited for, all attempts together (back-offs not counted)."""
        return self.timeout * (self.retries + 1)

    def retry(self) -> RetryKnobs:
        return RetryKnobs(
            backoff_initial=self.backoff,
            backoff_max=self.backoff_max,
            transient_retries=self.retries,
            timeout=self.timeout,
        )


def trigger_from_env(env: Mapping[str, str]) -> Trigger:
    """QBO_SYNC_TRIGGER: what started this run (Schedule | Manual | Webhook; default Schedule)."""
    raw = env.get("QBO_SYNC_TRIGGER", "").strip() or "Schedule"
    for trigger in ("Schedule", "Manual", "Webhook"):
        if raw.lower() == trigger.lower():
            return trigger
    raise ConfigError([f"QBO_SYNC_TRIGGER={raw!r} must be Schedule, Manual or Webhook"])


def job_name_from_env(env: Mapping[str, str], hostname: str | None = None) -> str:
    """JOB_NAME, else the pod's hostname without the pod suffix (`<job>-<5 chars>`)."""
    if env.get("JOB_NAME", "").strip():
        return env["JOB_NAME"].strip()
    host = hostname if hostname is not None else socket.gethostname()
    head, sep, tail = host.rpartition("-")
    return head if sep and head and len(tail) == 5 and tail.isalnum() else host

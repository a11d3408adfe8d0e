"""What the operator observes: the kopf indexes, summarised, and its own writes until the watches catch up.

kopf fills every index (`@kopf.index`, see `registration`) from the initial listing before any handler
runs, so a freshly started operator never mistakes "not listed yet" for "missing". The indexes hold the
CRs, the labelled Secrets (token and credentials Secrets, summarised without their values),
ServiceAccounts, Roles, RoleBindings, CronJobs and sync Jobs. `Views` answers the reconcile's questions
from them: the CR and each child as fresh as we know it, the token, the last finished Job, and who holds a
QuickBooks realm. What the operator remembers about one integration between reconciles is one
`IntegrationState`, so forgetting an integration drops one entry."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import kopf

from qbo_operator.core import names
from qbo_operator.core.models import Integration, parse_rfc3339
from qbo_operator.reconciler import manifests
from qbo_operator.reconciler.conditions import JobOutcome, SpecProblem, TokenState

CR = (names.GROUP, names.VERSION, names.PLURAL)
SECRETS = ("", "v1", "secrets")
SERVICE_ACCOUNTS = ("", "v1", "serviceaccounts")
ROLES = ("rbac.authorization.k8s.io", "v1", "roles")
ROLE_BINDINGS = ("rbac.authorization.k8s.io", "v1", "rolebindings")
CRONJOBS = ("batch", "v1", "cronjobs")
JOBS = ("batch", "v1", "jobs")
CHILD_RESOURCES = (SECRETS, SERVICE_ACCOUNTS, ROLES, ROLE_BINDINGS, CRONJOBS, JOBS)
LABELLED: dict[str, Any] = {names.INTEGRATION_LABEL: kopf.PRESENT}

# Index ids double as the kwargs names kopf passes them under.
INDEXES = (
    "integrations",
    "realm_claims",
    "secrets",
    "realm_secrets",
    "serviceaccounts",
    "roles",
    "rolebindings",
    "cronjobs",
    "jobs",
)

Key = tuple[str, str]


# --- what the indexes hold -------------------------------------------------------------------


@dataclass(frozen=True)
class SecretView:
    """A labelled Secret without its values: token Secrets parsed, credentials Secrets digested."""

    integration: str
    credentials: bool
    token: TokenState | None
    observed: dict[str, Any]

    @property
    def resource_version(self) -> str:
        return str(self.observed["metadata"].get("resourceVersion", ""))

    @property
    def owner_references(self) -> list[dict[str, Any]]:
        return list(self.observed["metadata"].get("ownerReferences") or [])


@dataclass(frozen=True)
class JobView:
    name: str
    trigger: str | None
    outcome: JobOutcome | None


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy without managedFields (kopf's bodies are live views; we keep snapshots)."""
    out = copy.deepcopy(dict(body))
    (out.get("metadata") or {}).pop("managedFields", None)
    return out


def _time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        return parse_rfc3339(str(value))
    except ValueError:
        return None


def job_view(body: Mapping[str, Any]) -> JobView:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    outcome = None
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        when = _time(cond.get("lastTransitionTime")) or _time(status.get("completionTime"))
        if cond.get("type") == "Failed" and when is not None:
            outcome = JobOutcome(meta.get("name", ""), True, when, cond.get("reason"), cond.get("message"))
        elif cond.get("type") == "Complete" and outcome is None and when is not None:
            outcome = JobOutcome(meta.get("name", ""), False, _time(status.get("completionTime")) or when)
    trigger = (meta.get("annotations") or {}).get(names.TRIGGER_ANNOTATION)
    return JobView(meta.get("name", ""), trigger, outcome)


def secret_view(body: Mapping[str, Any]) -> SecretView:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    credentials = labels.get(manifests.COMPONENT_LABEL) == manifests.CREDENTIALS_COMPONENT
    token = None if credentials else TokenState.from_secret_data(body.get("data"))
    return SecretView(labels.get(names.INTEGRATION_LABEL, ""), credentials, token, manifests.comparable(body))


def _rv(obj: Mapping[str, Any] | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or -1)
    except ValueError:
        return -1


def fresher(indexed: dict[str, Any] | None, written: dict[str, Any] | None) -> dict[str, Any] | None:
    """Our own last write until the watch catches up with it (resourceVersions of one object only grow)."""
    if written is None:
        return indexed
    if indexed is None or _rv(written) > _rv(indexed):
        return written
    return indexed


def only(index: kopf.Index[Any, Any] | None, key: Any) -> Any:
    """The one value an index holds under `key` (None when absent)."""
    if index is None:
        return None
    store = index.get(key)
    return next(iter(store), None) if store else None


# --- what the operator remembers -------------------------------------------------------------


@dataclass
class IntegrationState:
    """One integration's memory between reconciles: its lock, our last writes, retries, and what the
    housekeeping learnt (a dead grant to record, the day of the last hard-expiry warning)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    written: dict[str, Any] | None = None  # the CR as our last write returned it
    children: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (kind, name): our last write
    refused_cronjob: dict[int, SpecProblem] = field(default_factory=dict)  # by generation
    failures: int = 0
    retry: asyncio.Task[None] | None = None
    warned_day: str | None = None
    dead_grant: tuple[str, str] | None = None  # (reason, message) until the status records it


# --- reading them ----------------------------------------------------------------------------


@dataclass
class Views:
    """The indexes (set by the startup handler) and our own writes, read together."""

    indices: dict[str, kopf.Index[Any, Any]] = field(default_factory=dict)
    states: dict[Key, IntegrationState] = field(default_factory=dict)
    # The realm each labelled token Secret held when last seen (a Secret's memory, not an integration's: it
    # says which integrations to look at again once the Secret changes or goes).
    secret_realms: dict[Key, str] = field(default_factory=dict)

    def state(self, key: Key) -> IntegrationState:
        return self.states.setdefault(key, IntegrationState())

    def index(self, name: str) -> kopf.Index[Any, Any] | None:
        return self.indices.get(name)

    def integration_bodies(self) -> Iterable[dict[str, Any]]:
        index = self.index("integrations")
        if index is None:
            return []
        return [body for store in list(index.values()) for body in list(store)]

    def body(self, namespace: str, name: str) -> dict[str, Any] | None:
        indexed = only(self.index("integrations"), (namespace, name))
        if indexed is None:
            return None  # deleted (or not listed): never resurrect it from our own writes
        state = self.states.get((namespace, name))
        return fresher(indexed, state.written if state is not None else None)

    def child(
        self, owner: Key, index: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """A child of `owner` named `name` (in `namespace`, by default the owner's), as fresh as we know it."""
        indexed = only(self.index(index), (namespace or owner[0], name))
        if index == "secrets" and indexed is not None:
            indexed = indexed.observed
        state = self.states.get(owner)
        return fresher(indexed, state.children.get((kind, name)) if state is not None else None)

    def forget_child(self, owner: Key, kind: str, name: str) -> None:
        """Our last write of a child that is gone now: the next reconcile must not mistake it for present."""
        if (state := self.states.get(owner)) is not None:
            state.children.pop((kind, name), None)

    def secret(self, namespace: str, name: str) -> SecretView | None:
        view: SecretView | None = only(self.index("secrets"), (namespace, name))
        return view

    def last_job(self, namespace: str, name: str) -> JobOutcome | None:
        index = self.index("jobs")
        store = index.get((namespace, name)) if index is not None else None
        finished = [v.outcome for v in (store or []) if v.outcome is not None]
        return max(finished, key=lambda o: (o.finished_at, o.name), default=None)

    def realm_holders(self, realm: str) -> set[Key]:
        """Integrations that claim `realm` in status.realmId or hold it in their token Secret."""
        holders: set[Key] = set()
        claims, secrets = self.index("realm_claims"), self.index("realm_secrets")
        holders.update(claims.get(realm, ()) if claims is not None else ())
        for ns, integration, secret_name in secrets.get(realm, ()) if secrets is not None else ():
            body = self.body(ns, integration)
            if body is None:
                continue
            integ, view = Integration.from_object(body), self.secret(ns, secret_name)
            # Only the integration whose uid owns the Secret holds its realm: naming a Secret claims nothing.
            owners = view.owner_references if view is not None else []
            if integ.token_secret_name == secret_name and any(o.get("uid") == integ.uid for o in owners):
                holders.add((ns, integration))
        return holders

    def realm_owner(self, realm: str, me: Key) -> str | None:
        """The integration that owns `realm` when it is not `me`: the oldest that claimed it in its status,
        else the oldest whose token Secret holds it."""
        holders = {h for h in self.realm_holders(realm) if h == me or self._alive(h)}
        if holders <= {me}:
            return None
        claims = self.index("realm_claims")
        claimed = {h for h in holders if claims is not None and h in (claims.get(realm) or ())}
        pool = claimed or holders

        def age(key: Key) -> tuple[str, str, str]:
            body = self.body(*key) or {}
            return str((body.get("metadata") or {}).get("creationTimestamp") or ""), key[0], key[1]

        owner = min(pool, key=age)
        return None if owner == me else f"{owner[0]}/{owner[1]}"

    def secret_targets(
        self, namespace: str, name: str, integration: str | None, body: Mapping[str, Any] | None
    ) -> set[Key]:
        """Integrations to reconcile after a labelled Secret changed (`body` None: it was deleted): its own,
        and every other that holds the realm it holds now or held before (DuplicateRealm may resolve)."""
        targets: set[Key] = {(namespace, integration)} if integration else set()
        realms = {self.secret_realms.pop((namespace, name), None)}
        view = secret_view(body) if body is not None else None
        if view is not None and view.token is not None and view.token.realm_id:
            realms.add(view.token.realm_id)
            self.secret_realms[(namespace, name)] = view.token.realm_id
        for realm in realms:
            if realm:
                targets.update(self.realm_holders(realm))
        return targets

    def _alive(self, key: Key) -> bool:
        body = self.body(*key)
        return body is not None and not (body.get("metadata") or {}).get("deletionTimestamp")

"""What the operator observes: its indexes, summarised, and its own writes until the watches catch up.

One `core.informer` per kind fills the indexes (`apply`, from `registration`); no reconcile runs before every
kind has been listed once, so a freshly started operator never mistakes "not listed yet" for "missing". The
indexes hold the CRs, the labelled Secrets (token and credentials Secrets, summarised without their values),
ServiceAccounts, Roles, RoleBindings, CronJobs and sync Jobs. `Views` answers the reconcile's questions
from them: the CR and each child as fresh as we know it, the token, the last finished Job, and who holds a
QuickBooks realm. What the operator remembers about one integration between reconciles is one
`IntegrationState`, so forgetting an integration drops one entry.

Memory grows with the fleet (six kinds of object per integration), so nothing here keeps a whole body (the
informer's parsed body is garbage once `apply` returns): an index holds a `Snapshot`, the fields the
reconcile reads (the CR without managedFields and foreign annotations; a child as `manifests.comparable`
reduces it) as compressed JSON with its resourceVersion, unpacked only while a reconcile compares it. Our own
writes are kept the same way, and only until the watch catches up with them."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import json
import zlib
from collections.abc import Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qbo_operator.core import names
from qbo_operator.core.informer import Resource, object_key
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

Key = tuple[str, str]


# --- what the indexes hold -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An object reduced to what the reconcile reads, as compressed JSON (a tenth of the memory of the
    parsed dict, which matters at 10,000 integrations), with the resourceVersion to order it by."""

    resource_version: int
    blob: bytes

    def object(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(zlib.decompress(self.blob))
        return out


def snapshot(obj: Mapping[str, Any]) -> Snapshot:
    blob = zlib.compress(json.dumps(obj, separators=(",", ":"), default=str).encode())
    return Snapshot(_rv(obj), blob)


def newer(indexed: Snapshot | None, written: Snapshot | None) -> tuple[Snapshot | None, bool]:
    """Our own write until the watch catches up with it (resourceVersions of one object only grow), and whether
    it has: then the caller drops its copy and keeps one, the index's."""
    if written is None:
        return indexed, False
    if indexed is None or written.resource_version > indexed.resource_version:
        return written, False
    return indexed, True


def integration_essence(body: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a QuickbooksIntegration the reconcile, the housekeeping and the metrics read: spec,
    status and the metadata they use (annotations under our group only; not managedFields)."""
    meta = body.get("metadata") or {}
    kept = {k: meta[k] for k in _CR_METADATA if k in meta}
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k.startswith(names.GROUP + "/")}
    if annotations:
        kept["annotations"] = annotations
    return {"metadata": kept, "spec": body.get("spec") or {}, "status": body.get("status") or {}}


_CR_METADATA = (
    "name",
    "namespace",
    "uid",
    "generation",
    "resourceVersion",
    "creationTimestamp",
    "deletionTimestamp",
    "finalizers",
)


@dataclass(frozen=True, slots=True)
class SecretView:
    """A labelled Secret without its values: token Secrets parsed, credentials Secrets digested."""

    integration: str
    credentials: bool
    token: TokenState | None
    owner_uids: tuple[str, ...]
    snapshot: Snapshot

    @property
    def observed(self) -> dict[str, Any]:
        return self.snapshot.object()

    @property
    def resource_version(self) -> str:
        return str(self.snapshot.resource_version)


@dataclass(frozen=True, slots=True)
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


def _is_credentials(body: Mapping[str, Any]) -> bool:
    labels = (body.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(manifests.COMPONENT_LABEL) == manifests.CREDENTIALS_COMPONENT)


def secret_token(body: Mapping[str, Any]) -> TokenState | None:
    """A labelled Secret's tokens (None for a credentials Secret), without building its snapshot."""
    return None if _is_credentials(body) else TokenState.from_secret_data(body.get("data"))


def secret_view(body: Mapping[str, Any]) -> SecretView:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    owners = tuple(str(o.get("uid", "")) for o in meta.get("ownerReferences") or [])
    return SecretView(
        labels.get(names.INTEGRATION_LABEL, ""),
        _is_credentials(body),
        secret_token(body),
        owners,
        snapshot(manifests.comparable(body)),
    )


def _rv(obj: Mapping[str, Any] | None) -> int:
    try:
        return int(((obj or {}).get("metadata") or {}).get("resourceVersion") or -1)
    except ValueError:
        return -1


# --- the indexes -------------------------------------------------------------------------------


class Index:
    """key → the values every object maps to it (kopf's index shape: a realm may be claimed by several)."""

    def __init__(self) -> None:
        self._stores: dict[Hashable, dict[Key, Any]] = {}
        self._keys_of: dict[Key, tuple[Hashable, ...]] = {}

    def put(self, obj: Key, entries: Mapping[Hashable, Any]) -> None:
        self.drop(obj)
        for key, value in entries.items():
            self._stores.setdefault(key, {})[obj] = value
        if entries:
            self._keys_of[obj] = tuple(entries)

    def drop(self, obj: Key) -> None:
        for key in self._keys_of.pop(obj, ()):
            store = self._stores[key]
            del store[obj]
            if not store:
                del self._stores[key]

    def get(self, key: Hashable, default: Collection[Any] | None = None) -> Collection[Any] | None:
        store = self._stores.get(key)
        return store.values() if store else default

    def keys(self) -> Iterable[Hashable]:
        return self._stores.keys()

    def __len__(self) -> int:
        return len(self._stores)


def only(index: Index, key: Any) -> Any:
    """The one value an index holds under `key` (None when absent)."""
    store = index.get(key)
    return next(iter(store), None) if store else None


def _child(body: Mapping[str, Any]) -> Mapping[Key, Snapshot]:
    return {object_key(body): snapshot(manifests.comparable(body))}


def _realm_claim(body: Mapping[str, Any]) -> Mapping[str, Key]:
    realm = (body.get("status") or {}).get("realmId")
    return {str(realm): object_key(body)} if realm else {}


def _realm_secret(body: Mapping[str, Any]) -> Mapping[str, tuple[str, str, str]]:
    token = secret_token(body)
    if token is None or token.realm_id is None:
        return {}
    namespace, name = object_key(body)
    integration = ((body.get("metadata") or {}).get("labels") or {}).get(names.INTEGRATION_LABEL, "")
    return {token.realm_id: (namespace, integration, name)}


def _job(body: Mapping[str, Any]) -> Mapping[Key, JobView]:
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    owner_namespace = labels.get(names.INTEGRATION_NAMESPACE_LABEL) or meta.get("namespace") or ""
    return {(owner_namespace, labels.get(names.INTEGRATION_LABEL, "")): job_view(body)}


Indexer = Callable[[Mapping[str, Any]], Mapping[Any, Any]]

# Each watched kind's indexes, by id; the children are watched by label (`names.INTEGRATION_LABEL`).
INDEXERS: dict[Resource, dict[str, Indexer]] = {
    CR: {
        "integrations": lambda body: {object_key(body): snapshot(integration_essence(body))},
        "realm_claims": _realm_claim,
    },
    SECRETS: {"secrets": lambda body: {object_key(body): secret_view(body)}, "realm_secrets": _realm_secret},
    SERVICE_ACCOUNTS: {"serviceaccounts": _child},
    ROLES: {"roles": _child},
    ROLE_BINDINGS: {"rolebindings": _child},
    CRONJOBS: {"cronjobs": _child},
    JOBS: {"jobs": _job},
}


# --- what the operator remembers -------------------------------------------------------------


@dataclass
class IntegrationState:
    """One integration's memory between reconciles: its lock, our last writes, retries, and what the
    housekeeping learnt (a dead grant to record, the day of the last hard-expiry warning)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    written: Snapshot | None = None  # the CR as our last write returned it, until the watch catches up
    children: dict[tuple[str, str], Snapshot] = field(default_factory=dict)  # (kind, name): our last write, the same
    refused_cronjob: dict[int, SpecProblem] = field(default_factory=dict)  # by generation
    failures: int = 0
    retry: asyncio.Task[None] | None = None
    warned_day: str | None = None
    dead_grant: tuple[str, str] | None = None  # (reason, message) until the status records it


# --- reading them ----------------------------------------------------------------------------


@dataclass
class Views:
    """The indexes (fed by the informers through `apply`) and our own writes, read together."""

    indices: dict[str, Index] = field(
        default_factory=lambda: {index: Index() for indexers in INDEXERS.values() for index in indexers}
    )
    states: dict[Key, IntegrationState] = field(default_factory=dict)
    # The realm each labelled token Secret held when last seen (a Secret's memory, not an integration's: it
    # says which integrations to look at again once the Secret changes or goes).
    secret_realms: dict[Key, str] = field(default_factory=dict)

    def state(self, key: Key) -> IntegrationState:
        return self.states.setdefault(key, IntegrationState())

    def apply(self, resource: Resource, event_type: str | None, body: Mapping[str, Any]) -> None:
        """One listed object or watch event of `resource` into its indexes."""
        obj = object_key(body)
        for index_id, indexer in INDEXERS[resource].items():
            if event_type == "DELETED":
                self.indices[index_id].drop(obj)
            else:
                self.indices[index_id].put(obj, indexer(body))

    def last_known(self, resource: Resource, key: Key) -> dict[str, Any] | None:
        """What the indexes last held of an object (the CR, or a child as `comparable` reduced it): a relisting
        reports an object that went during a gap by its name only."""
        if resource == CR:
            return self.body(*key)
        value = only(self.index(next(iter(INDEXERS[resource]))), key)
        if isinstance(value, SecretView):
            value = value.snapshot
        return value.object() if isinstance(value, Snapshot) else None

    def index(self, name: str) -> Index:
        return self.indices[name]

    def integration_keys(self) -> list[Key]:
        return list(self.index("integrations").keys())  # type: ignore[arg-type]

    def integration_snapshots(self) -> list[Snapshot]:
        """Every integration as `body` would read it, still compressed: the metrics parse only those that changed."""
        return [snap for key in self.integration_keys() if (snap := self._snapshot(*key)) is not None]

    def body(self, namespace: str, name: str) -> dict[str, Any] | None:
        chosen = self._snapshot(namespace, name)
        return chosen.object() if chosen is not None else None

    def _snapshot(self, namespace: str, name: str) -> Snapshot | None:
        indexed: Snapshot | None = only(self.index("integrations"), (namespace, name))
        if indexed is None:
            return None  # deleted (or not listed): never resurrect it from our own writes
        state = self.states.get((namespace, name))
        chosen, caught_up = newer(indexed, state.written if state is not None else None)
        if state is not None and caught_up:
            state.written = None
        return chosen

    def child(
        self, owner: Key, index: str, kind: str, name: str, namespace: str | None = None
    ) -> dict[str, Any] | None:
        """A child of `owner` named `name` (in `namespace`, by default the owner's), as fresh as we know it."""
        indexed = only(self.index(index), (namespace or owner[0], name))
        if isinstance(indexed, SecretView):
            indexed = indexed.snapshot
        state = self.states.get(owner)
        chosen, caught_up = newer(indexed, state.children.get((kind, name)) if state is not None else None)
        if state is not None and caught_up:
            del state.children[(kind, name)]
        return chosen.object() if chosen is not None else None

    def remember_child(self, owner: Key, kind: str, name: str, written: Mapping[str, Any]) -> None:
        """Our write of a child, until the watch brings it (a reconcile meanwhile must not write it again)."""
        self.state(owner).children[(kind, name)] = snapshot(written)

    def forget_child(self, owner: Key, kind: str, name: str) -> None:
        """Our last write of a child that is gone now: the next reconcile must not mistake it for present."""
        if (state := self.states.get(owner)) is not None:
            state.children.pop((kind, name), None)

    def secret(self, namespace: str, name: str) -> SecretView | None:
        view: SecretView | None = only(self.index("secrets"), (namespace, name))
        return view

    def last_job(self, namespace: str, name: str) -> JobOutcome | None:
        index = self.index("jobs")
        store = index.get((namespace, name))
        finished = [v.outcome for v in (store or []) if v.outcome is not None]
        return max(finished, key=lambda o: (o.finished_at, o.name), default=None)

    def realm_holders(self, realm: str) -> set[Key]:
        """Integrations that claim `realm` in status.realmId or hold it in their token Secret."""
        holders: set[Key] = set()
        claims, secrets = self.index("realm_claims"), self.index("realm_secrets")
        holders.update(claims.get(realm, ()) or ())
        for ns, integration, secret_name in secrets.get(realm, ()) or ():
            body = self.body(ns, integration)
            if body is None:
                continue
            integ, view = Integration.from_object(body), self.secret(ns, secret_name)
            # Only the integration whose uid owns the Secret holds its realm: naming a Secret claims nothing.
            owners = view.owner_uids if view is not None else ()
            if integ.token_secret_name == secret_name and integ.uid in owners:
                holders.add((ns, integration))
        return holders

    def realm_owner(self, realm: str, me: Key) -> str | None:
        """The integration that owns `realm` when it is not `me`: the oldest that claimed it in its status,
        else the oldest whose token Secret holds it."""
        holders = {h for h in self.realm_holders(realm) if h == me or self._alive(h)}
        if holders <= {me}:
            return None
        claims = self.index("realm_claims")
        claimed = {h for h in holders if h in (claims.get(realm) or ())}
        pool = claimed or holders

        def age(key: Key) -> tuple[str, str, str]:
            body = self.body(*key) or {}
            return str((body.get("metadata") or {}).get("creationTimestamp") or ""), key[0], key[1]

        owner = min(pool, key=age)
        return None if owner == me else f"{owner[0]}/{owner[1]}"

    def remember_secret_realm(self, namespace: str, name: str, realm: str | None) -> set[str]:
        """Record the realm a labelled Secret holds now (None: none, or the Secret is gone); returns the realms
        it holds now or held before."""
        realms = {self.secret_realms.pop((namespace, name), None), realm}
        if realm:
            self.secret_realms[(namespace, name)] = realm
        return {r for r in realms if r}

    def secret_targets(self, namespace: str, name: str, integration: str | None, realm: str | None) -> set[Key]:
        """Integrations to reconcile after a labelled Secret changed: its own, and every other that holds the
        realm it holds now (`realm`) or held before (DuplicateRealm may resolve)."""
        targets: set[Key] = {(namespace, integration)} if integration else set()
        for held in self.remember_secret_realm(namespace, name, realm):
            targets.update(self.realm_holders(held))
        return targets

    def _alive(self, key: Key) -> bool:
        body = self.body(*key)
        return body is not None and not (body.get("metadata") or {}).get("deletionTimestamp")

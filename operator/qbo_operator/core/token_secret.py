"""The token Secret: one per integration, holding its QuickBooks grant. Its shape and every write to it.

Three processes touch it, so its labels, owner and concurrency rules live here once:

- the operator creates it, empty, labelled and owned (controller) by the integration's uid, when it first
  reconciles the integration (`empty`): that reserves the name, and is what makes it ours (`owns`);
- the gateway fills it after a Connect (`store`): an update of that existing Secret, never a create, and
  only when it is owned by that integration's uid;
- the sync and the operator's keep-alive replace its data after a refresh (`replace_data`), a JSON patch
  guarded by the resourceVersion the writer read, so a concurrent refresh is never overwritten; right before
  asking Intuit they stamp it (`claim_refresh`, same guard), so a refresh starts only just after a write worked;
- the operator's revoke-on-delete marks it (`mark_revoking`, same guard) before revoking its refresh token: the
  mark changes the resourceVersion, so a refresh in flight cannot store its answer unnoticed (core/tokens.py);
- everyone reads it with `read_tokens` (strict: `Tokens.from_secret_data` names the bad key; an empty Secret
  is `SecretMissing`: not connected yet), except the gateway's look at an earlier connection, which must
  survive a broken Secret (`previous_connection`).

No token value is ever logged or put in a message."""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubernetes_asyncio import client

from qbo_operator.core import names
from qbo_operator.core.kube import ApiException, Kube, owner_reference
from qbo_operator.core.models import Integration, Tokens, TokenSecretError, parse_rfc3339, rfc3339, secret_text

log = logging.getLogger(__name__)

# Annotations on the token Secret (values are RFC 3339 times, never tokens).
REFRESHING_ANNOTATION = f"{names.GROUP}/refresh-started-at"  # a refresher's stamp just before it asks Intuit
REVOKING_ANNOTATION = f"{names.GROUP}/revoking"  # revoke-on-delete's mark: no refresh may be stored after it


class SecretMissing(Exception):
    """No tokens: the Secret does not exist, or holds none yet (the operator's empty Secret)."""

    def __init__(self, namespace: str, name: str, why: str = "does not exist") -> None:
        super().__init__(f"token Secret {namespace}/{name} {why}")


class NotOurs(Exception):
    """A Secret of that name exists and belongs to something else: it is never overwritten."""


@dataclass(frozen=True)
class Stored:
    tokens: Tokens
    resource_version: str
    data: dict[str, str]
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def revoking(self) -> bool:
        """Marked by revoke-on-delete: its grant is being (or was) revoked, so nothing may refresh it."""
        return REVOKING_ANNOTATION in self.annotations


@dataclass(frozen=True)
class Previous:
    realm_id: str | None
    connected_at: datetime | None


# --- shape (pure) ----------------------------------------------------------------------------


def labels(integration_name: str) -> dict[str, str]:
    return {names.MANAGED_BY_LABEL: names.MANAGED_BY, names.INTEGRATION_LABEL: integration_name}


def manifest(
    namespace: str,
    integration_name: str,
    data: Mapping[str, str],
    *,
    name: str | None = None,
    owner: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The Secret with our labels; only one with `owner` (the integration's reference) is ever ours."""
    metadata: dict[str, Any] = {
        "name": name or names.token_secret_name(integration_name),
        "namespace": namespace,
        "labels": labels(integration_name),
    }
    if owner is not None:
        metadata["ownerReferences"] = [dict(owner)]
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": metadata, "data": dict(data)}


def empty(namespace: str, integration_name: str, uid: str, name: str) -> dict[str, Any]:
    """The Secret as the operator creates it before any Connect: no data, owned (controller) by the
    integration's uid, so garbage collection removes it with the integration and the gateway may fill it."""
    return manifest(namespace, integration_name, {}, name=name, owner=owner_reference(integration_name, uid))


def owns(secret: client.V1Secret, integration: Integration) -> bool:
    """Is this Secret this integration's? Only an Opaque Secret with an ownerReference to its uid: a label
    or a name can be written by anyone who may create Secrets, the uid reference only by the operator."""
    if (secret.type or "Opaque") != "Opaque":
        return False
    meta = secret.metadata
    return any(o.uid == integration.uid for o in (meta.owner_references if meta else None) or [])


def replacement(existing: Mapping[str, Any], integration: Integration, data: Mapping[str, str]) -> dict[str, Any]:
    """`existing` (this integration's Secret, as a plain dict) with our labels and new `data`. Its owners stay
    as the operator wrote them; its resourceVersion makes the PUT fail if someone wrote since."""
    body = copy.deepcopy(dict(existing))
    meta = body.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), **labels(integration.name)}
    body["data"] = dict(data)
    return body


def previous_connection(data: Mapping[str, str] | None) -> Previous:
    """realm_id and connected_at of an existing token Secret, read leniently (a broken Secret that a
    person is repairing by reconnecting still tells us when the connection began)."""
    return Previous(_lenient_text(data, "realm_id"), _lenient_time(_lenient_text(data, "connected_at")))


def _lenient_text(data: Mapping[str, str] | None, key: str) -> str | None:
    try:
        return secret_text(data, key)
    except TokenSecretError:
        return None


def _lenient_time(text: str | None) -> datetime | None:
    try:
        return parse_rfc3339(text) if text else None
    except ValueError:
        return None


# --- reads and writes ------------------------------------------------------------------------


async def read_tokens(kube: Kube, namespace: str, name: str) -> Stored:
    """The Secret's tokens and version; SecretMissing or TokenSecretError (naming the key) otherwise."""
    secret = await kube.read_secret(namespace, name)
    if secret is None:
        raise SecretMissing(namespace, name)
    data: dict[str, str] = dict(secret.data or {})
    if not data:
        raise SecretMissing(namespace, name, "holds no tokens yet")
    tokens = Tokens.from_secret_data(data)
    return Stored(tokens, str(secret.metadata.resource_version), data, dict(secret.metadata.annotations or {}))


async def store(kube: Kube, integration: Integration, tokens: Tokens) -> None:
    """Fill this integration's token Secret (created by the operator) with its resourceVersion; a conflict
    (someone else wrote meanwhile) re-reads and retries once. SecretMissing: the operator has not created
    it yet. NotOurs: it is not owned by this integration's uid, and is left alone."""
    namespace, name = integration.namespace, integration.token_secret_name
    data = tokens.to_secret_data()
    for attempt in range(2):
        existing = await kube.read_secret(namespace, name)
        if existing is None:
            raise SecretMissing(namespace, name)
        if not owns(existing, integration):
            raise NotOurs(f"Secret {namespace}/{name} is not this integration's")
        try:
            plain = kube.api.sanitize_for_serialization(existing)
            await kube.replace_secret(namespace, name, replacement(plain, integration, data))
            return
        except ApiException as exc:
            if exc.status == 409 and attempt == 0:
                log.info("Secret %s/%s changed while writing; re-reading once", namespace, name)
                continue
            raise


async def replace_data(
    kube: Kube, namespace: str, name: str, data: dict[str, str], resource_version: str
) -> client.V1Secret:
    """Replace `data` only if nobody wrote since `resource_version` (422 otherwise)."""
    ops = [{"op": "replace", "path": "/data", "value": data}]
    return await kube.patch_secret_if_unchanged(namespace, name, resource_version, ops)


def annotate_ops(annotations: Mapping[str, str], key: str, value: str) -> list[dict[str, Any]]:
    """JSON-patch ops setting one annotation (`add` on a missing /metadata/annotations would fail)."""
    if not annotations:
        return [{"op": "add", "path": "/metadata/annotations", "value": {key: value}}]
    return [{"op": "add", "path": "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1"), "value": value}]


async def claim_refresh(kube: Kube, stored: Stored, namespace: str, name: str, now: datetime) -> Stored:
    """Stamp the Secret just before asking Intuit for new tokens, guarded by `stored`'s resourceVersion
    (422 if anyone wrote since, e.g. revoke-on-delete's mark). A refresh thus starts only when a write of
    this Secret has just succeeded; the answer is stored on the version returned here."""
    ops = annotate_ops(stored.annotations, REFRESHING_ANNOTATION, rfc3339(now))
    secret = await kube.patch_secret_if_unchanged(namespace, name, stored.resource_version, ops)
    return Stored(
        stored.tokens,
        str(secret.metadata.resource_version),
        stored.data,
        dict(secret.metadata.annotations or {}),
    )


async def mark_revoking(
    kube: Kube, namespace: str, name: str, secret: client.V1Secret, now: datetime
) -> client.V1Secret:
    """Revoke-on-delete's fence: mark `secret` (the version whose refresh token is about to be revoked),
    guarded by its resourceVersion (422 if anyone wrote since: re-read and mark that). Every refresh stores
    its answer under a resourceVersion precondition, so one that began before the mark fails to store,
    re-reads, sees the mark and revokes what Intuit just gave it (core/tokens.py)."""
    meta = secret.metadata
    ops = annotate_ops(meta.annotations or {}, REVOKING_ANNOTATION, rfc3339(now))
    return await kube.patch_secret_if_unchanged(namespace, name, str(meta.resource_version), ops)

"""Own only what we created (pure): an object is this integration's only if it carries an ownerReference
to the integration's uid.

A name is not ownership: anyone who may create a QuickbooksIntegration chooses its name and
`spec.tokenSecretName`, so a label or a matching name would let them point the operator (and through the
Roles it writes, the gateway and the sync) at objects that belong to someone else. The uid is assigned by
the API server and only the operator and the gateway write references to it: the operator on what it
creates, the gateway never (it only fills the Secret the operator created)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qbo_operator.core import names
from qbo_operator.core.status import Reason
from qbo_operator.reconciler.conditions import SpecProblem


def owned_by(obj: Mapping[str, Any] | None, uid: str, home_key: tuple[str, str] | None = None) -> bool:
    """Does `obj` (a plain dict) carry an ownerReference to `uid`? At home (`home_key`: the integration's
    namespace and name; the release namespace, where only the operator writes and no ownerReference can point
    across namespaces) its labels say whose it is: an object left by an earlier integration of the same name is
    taken back, its uid label rewritten."""
    meta = (obj or {}).get("metadata") or {}
    if home_key is not None:
        labels = meta.get("labels") or {}
        return (labels.get(names.INTEGRATION_NAMESPACE_LABEL), labels.get(names.INTEGRATION_LABEL)) == home_key
    return bool(uid) and any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or [])


def conflict(
    kind: str,
    name: str,
    observed: Mapping[str, Any] | None,
    uid: str,
    field: str = "",
    *,
    home_key: tuple[str, str] | None = None,
) -> SpecProblem | None:
    """None when the object is absent (we may create it) or ours (we may apply it); otherwise the
    phase-Error problem that names it. `field` names the spec field that chose the name, if one did."""
    if observed is None or owned_by(observed, uid, home_key):
        return None
    reason = Reason.SECRET_CONFLICT if kind == "Secret" else Reason.OBJECT_CONFLICT
    chosen = f" (named by {field})" if field else ""
    mark = "labels naming it" if home_key is not None else "an ownerReference to it"
    fix = f"choose another {field}" if field else "delete or rename it, or rename this integration"
    return SpecProblem(
        reason,
        f"{kind} {name}{chosen} already exists and was not created for this integration (it has no "
        f"{mark}), so the operator does not use, change or grant access to it; {fix}.",
    )

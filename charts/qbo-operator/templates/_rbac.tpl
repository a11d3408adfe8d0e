{{/*
RBAC rules, kept here so the namespaced (Role) and cluster-wide (ClusterRole) forms are identical.
*/}}

{{/*
The operator, in every watched namespace and its own. It owns, per integration: the token Secret (it creates
it, empty, and the gateway fills it), the sync's Role and RoleBinding in the integration's namespace, and in the
release namespace the sync's ServiceAccount and CronJob; there too, once per Intuit environment, the credentials
Secret qbo-sync-credentials-<environment> it mirrors from its own environment. Kubernetes refuses to let anyone create a Role granting more than they hold
(RBAC escalation prevention), so the operator holds every verb the sync Role grants (get/update/patch on
the token Secret, get/patch on the integration and its status, events create) and no `escalate` or `bind` verb.
*/}}
{{- define "qbo-operator.rbac.operatorRules" -}}
# Verbs the operator calls (checked against the API server's audit log in tests/security), plus those it
# must hold only to grant them in each sync Role (get on the integration and its status, update on Secrets).
- apiGroups: ["integrations.greencheckverified.com"]
  resources: ["quickbooksintegrations"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["integrations.greencheckverified.com"]
  resources: ["quickbooksintegrations/status"]
  verbs: ["get", "patch"]
# ownerReferences with blockOwnerDeletion need `update` on the owner's finalizers subresource where the
# OwnerReferencesPermissionEnforcement admission plugin is on (e.g. OpenShift): the CR owns the sync
# objects, the CronJob owns sync-now Jobs. The finalizer itself is added and removed with `patch`.
- apiGroups: ["integrations.greencheckverified.com"]
  resources: ["quickbooksintegrations/finalizers"]
  verbs: ["update"]
- apiGroups: ["batch"]
  resources: ["cronjobs/finalizers"]
  verbs: ["update"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "update", "patch"]
# `get` on the sync objects: before its first write of a name, the operator reads it, and leaves an object
# there alone unless it is owned by the integration's uid (its watches see only labelled objects).
# `delete` on serviceaccounts and cronjobs: the sync CronJob and its ServiceAccount run in the release namespace,
# beside the platform credentials, where no ownerReference to the integration can reach them, so the operator
# deletes them itself when the integration is deleted (and sweeps any whose integration is gone).
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "patch"]
- apiGroups: ["batch"]
  resources: ["cronjobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
The gateway, in every watched namespace: read integrations (Connect pages, realm checks), patch their
status, emit Events. Nothing else: the token Secrets it fills are granted by name, per integration.
*/}}
{{- define "qbo-operator.rbac.gatewayRules" -}}
- apiGroups: ["integrations.greencheckverified.com"]
  resources: ["quickbooksintegrations"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["integrations.greencheckverified.com"]
  resources: ["quickbooksintegrations/status"]
  verbs: ["patch"]
# Token Secrets: no `create` (RBAC cannot narrow `create` by name, so it would be namespace-wide: a
# compromised gateway could mint a service-account-token Secret under a name it may read). The operator
# creates each integration's token Secret, empty, and gives the gateway `get` and `update` on it by name
# in a Role <name>-qbo-gateway owned by the integration. No create, list, watch or delete.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

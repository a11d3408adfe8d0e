{{/*
Names, labels, images, environment and checks shared by the templates.
*/}}

{{- define "qbo-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The object name prefix, at most 52 characters so that "-operator-metrics" still fits in 63.
*/}}
{{- define "qbo-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 45 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 45 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "qbo-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Common labels; call with (dict "root" $ "component" "operator").
*/}}
{{- define "qbo-operator.labels" -}}
helm.sh/chart: {{ include "qbo-operator.chart" .root }}
{{ include "qbo-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: qbo-operator
{{- with .root.Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "qbo-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "qbo-operator.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- if .component }}
app.kubernetes.io/component: {{ .component }}
{{- end }}
{{- end }}

{{- define "qbo-operator.operatorServiceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (printf "%s-operator" (include "qbo-operator.fullname" .)) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "qbo-operator.gatewayServiceAccountName" -}}
{{- if .Values.gateway.serviceAccount.create }}
{{- default (printf "%s-gateway" (include "qbo-operator.fullname" .)) .Values.gateway.serviceAccount.name }}
{{- else }}
{{- required "gateway.serviceAccount.name is required when gateway.serviceAccount.create is false" .Values.gateway.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "qbo-operator.credentialsSecretName" -}}
{{- default (printf "%s-credentials" (include "qbo-operator.fullname" .)) .Values.credentials.existingSecret }}
{{- end }}

{{/*
The image reference: repository:tag, repository:tag@digest when a digest is set.
*/}}
{{- define "qbo-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "qbo-operator.syncImage" -}}
{{- default (include "qbo-operator.image" .) .Values.syncImage }}
{{- end }}

{{- define "qbo-operator.redirectUri" -}}
{{- if .Values.config.redirectUri }}
{{- .Values.config.redirectUri }}
{{- else if .Values.config.gatewayUrl }}
{{- printf "%s/oauth/callback" (trimSuffix "/" .Values.config.gatewayUrl) }}
{{- end }}
{{- end }}

{{/*
"true" when the Prometheus Operator kind should be rendered (renderMode as in External Secrets' chart);
call with (dict "root" $ "mode" .renderMode "kind" "ServiceMonitor" "value" "serviceMonitor").
*/}}
{{- define "qbo-operator.renderMonitoring" -}}
{{- $api := printf "monitoring.coreos.com/v1/%s" .kind }}
{{- if eq .mode "alwaysRender" }}
{{- print "true" }}
{{- else if or (.root.Capabilities.APIVersions.Has $api) (.root.Capabilities.APIVersions.Has "monitoring.coreos.com/v1") }}
{{- print "true" }}
{{- else if eq .mode "failIfMissing" }}
{{- fail (printf "%s.enabled is true with renderMode failIfMissing, but the cluster does not serve %s: install the Prometheus Operator CRDs first, or set %s.renderMode to skipIfMissing or alwaysRender" .value $api .value) }}
{{- end }}
{{- end }}

{{/*
One environment variable from the credentials Secret; call with (dict "root" $ "key" "QBO_CLIENT_ID"),
and "optional" true for a key the Secret may lack.
*/}}
{{- define "qbo-operator.env.secret" -}}
- name: {{ .key }}
  valueFrom:
    secretKeyRef:
      name: {{ include "qbo-operator.credentialsSecretName" .root }}
      key: {{ .key }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end }}

{{/*
The sandbox Intuit app's keys (QBO_SANDBOX_*), when the release has one: inline values, or an existing Secret
that may carry them (optional refs). Call with (dict "root" $ "gateway" true) to add the verifier token.
*/}}
{{- define "qbo-operator.env.sandboxApp" -}}
{{- $c := .root.Values.credentials }}
{{- if or $c.existingSecret $c.sandbox.clientId }}
{{- $keys := list "QBO_SANDBOX_CLIENT_ID" "QBO_SANDBOX_CLIENT_SECRET" }}
{{- if .gateway }}{{ $keys = append $keys "QBO_SANDBOX_WEBHOOK_VERIFIER_TOKEN" }}{{ end }}
{{- range $keys }}
{{ include "qbo-operator.env.secret" (dict "root" $.root "key" . "optional" true) }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Environment shared by the operator and the gateway (docs/design.md §6); empty optional values are left out.
*/}}
{{- define "qbo-operator.env.common" -}}
- name: POD_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: QBO_GATEWAY_URL
  value: {{ .Values.config.gatewayUrl | quote }}
- name: QBO_REDIRECT_URI
  value: {{ include "qbo-operator.redirectUri" . | quote }}
- name: QBO_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- range $var, $key := dict "QBO_DISCOVERY_URL" "qboDiscoveryUrl" "QBO_AUTH_URL" "qboAuthUrl" "QBO_TOKEN_URL" "qboTokenUrl" "QBO_REVOKE_URL" "qboRevokeUrl" "QBO_API_URL" "qboApiUrl" }}
{{- with index $.Values.config $key }}
- name: {{ $var }}
  value: {{ . | quote }}
{{- end }}
{{- end }}
{{- /* An existing Secret may hold the sandbox app only, so the production app's keys are optional there. */}}
{{- $optional := .Values.credentials.existingSecret }}
{{- include "qbo-operator.env.secret" (dict "root" . "key" "QBO_CLIENT_ID" "optional" $optional) | nindent 0 }}
{{- include "qbo-operator.env.secret" (dict "root" . "key" "QBO_CLIENT_SECRET" "optional" $optional) | nindent 0 }}
{{- include "qbo-operator.env.sandboxApp" (dict "root" . "gateway" false) }}
{{- include "qbo-operator.env.secret" (dict "root" . "key" "QBO_STATE_SIGNING_KEY") | nindent 0 }}
{{- end }}

{{/*
Refuse values that JSON Schema cannot express, each with a message that says what to change.
*/}}
{{- define "qbo-operator.validate" -}}
{{- $c := .Values.credentials }}
{{- if $c.existingSecret }}
{{- range $k := list "clientId" "clientSecret" "webhookVerifierToken" "stateSigningKey" }}
{{- if index $c $k }}
{{- fail (printf "credentials.existingSecret is set, so credentials.%s must be empty: put QBO_* keys in the Secret %q instead" $k $c.existingSecret) }}
{{- end }}
{{- end }}
{{- if or $c.sandbox.clientId $c.sandbox.clientSecret $c.sandbox.webhookVerifierToken }}
{{- fail (printf "credentials.existingSecret is set, so credentials.sandbox.* must be empty: put QBO_SANDBOX_CLIENT_ID, QBO_SANDBOX_CLIENT_SECRET and QBO_SANDBOX_WEBHOOK_VERIFIER_TOKEN in the Secret %q instead" $c.existingSecret) }}
{{- end }}
{{- if or $c.greencheck.clientId $c.greencheck.clientSecret }}
{{- fail (printf "credentials.existingSecret is set, so credentials.greencheck.* must be empty: put GREENCHECK_CLIENT_ID and GREENCHECK_CLIENT_SECRET in the Secret %q instead" $c.existingSecret) }}
{{- end }}
{{- end }}
{{- if and $c.stateSigningKey (lt (len $c.stateSigningKey) 32) }}
{{- fail "credentials.stateSigningKey must be at least 32 characters (generate one with `openssl rand -hex 32`), or empty to let the chart generate it" }}
{{- end }}
{{- if and .Values.gateway.ingress.enabled (not .Values.gateway.ingress.host) (not .Values.config.gatewayUrl) }}
{{- fail "gateway.ingress.enabled is true but neither gateway.ingress.host nor config.gatewayUrl is set: set config.gatewayUrl (e.g. https://qbo.example.com)" }}
{{- end }}
{{- if and .Values.gateway.pdb.enabled (le (int .Values.gateway.replicas) 1) (not .Values.gateway.pdb.maxUnavailable) }}
{{- fail "gateway.pdb.enabled with gateway.replicas <= 1 would block node drains: raise gateway.replicas or set gateway.pdb.maxUnavailable" }}
{{- end }}
{{- end }}

{{/*
What is still missing for a working install (empty when nothing is); used by NOTES.txt.
*/}}
{{- define "qbo-operator.missing" -}}
{{- $m := list }}
{{- if not .Values.config.gatewayUrl }}{{ $m = append $m "config.gatewayUrl (QBO_GATEWAY_URL): the public https URL of the gateway" }}{{ end }}
{{- if not .Values.config.greencheckApiUrl }}{{ $m = append $m "config.greencheckApiUrl (GREENCHECK_API_URL)" }}{{ end }}
{{- if not .Values.config.serviceProviderId }}{{ $m = append $m "config.serviceProviderId (GREENCHECK_SERVICE_PROVIDER_ID)" }}{{ end }}
{{- if not .Values.credentials.existingSecret }}
{{- $c := .Values.credentials }}
{{- /* Either Intuit app will do; one given in part is named where it is short. */}}
{{- if or $c.clientId $c.clientSecret $c.webhookVerifierToken (not $c.sandbox.clientId) }}
{{- if not $c.clientId }}{{ $m = append $m "credentials.clientId (QBO_CLIENT_ID)" }}{{ end }}
{{- if not $c.clientSecret }}{{ $m = append $m "credentials.clientSecret (QBO_CLIENT_SECRET)" }}{{ end }}
{{- if not $c.webhookVerifierToken }}{{ $m = append $m "credentials.webhookVerifierToken (QBO_WEBHOOK_VERIFIER_TOKEN)" }}{{ end }}
{{- end }}
{{- if or $c.sandbox.clientId $c.sandbox.clientSecret $c.sandbox.webhookVerifierToken }}
{{- if not $c.sandbox.clientId }}{{ $m = append $m "credentials.sandbox.clientId (QBO_SANDBOX_CLIENT_ID)" }}{{ end }}
{{- if not $c.sandbox.clientSecret }}{{ $m = append $m "credentials.sandbox.clientSecret (QBO_SANDBOX_CLIENT_SECRET)" }}{{ end }}
{{- if not $c.sandbox.webhookVerifierToken }}{{ $m = append $m "credentials.sandbox.webhookVerifierToken (QBO_SANDBOX_WEBHOOK_VERIFIER_TOKEN)" }}{{ end }}
{{- end }}
{{- if not $c.greencheck.clientId }}{{ $m = append $m "credentials.greencheck.clientId (GREENCHECK_CLIENT_ID)" }}{{ end }}
{{- if not $c.greencheck.clientSecret }}{{ $m = append $m "credentials.greencheck.clientSecret (GREENCHECK_CLIENT_SECRET)" }}{{ end }}
{{- end }}
{{- range $m }}
  - {{ . }}
{{- end }}
{{- end }}

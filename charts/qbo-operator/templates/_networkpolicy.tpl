{{/*
Egress shared by both pods: DNS, the API server, HTTPS, and any extra rules.
*/}}
{{- define "qbo-operator.networkPolicy.egress" -}}
{{- $np := .Values.networkPolicy }}
# DNS
- ports:
    - port: 53
      protocol: UDP
    - port: 53
      protocol: TCP
  {{- with $np.dns.to }}
  to:
    {{- toYaml . | nindent 4 }}
  {{- end }}
# The Kubernetes API server
- ports:
    {{- range $np.apiServer.ports }}
    - port: {{ . }}
      protocol: TCP
    {{- end }}
  {{- with $np.apiServer.cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
# HTTPS: Intuit (OAuth, QuickBooks API) and Green Check
- ports:
    - port: 443
      protocol: TCP
  {{- with $np.https.cidrs }}
  to:
    {{- range . }}
    - ipBlock:
        cidr: {{ . }}
    {{- end }}
  {{- end }}
{{- with $np.extraEgress }}
{{ toYaml . }}
{{- end }}
{{- end }}

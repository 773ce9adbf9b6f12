{{/* Names, labels and the image shared by every template. */}}

{{- define "valet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "valet.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains (include "valet.name" .) .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name (include "valet.name" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "valet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "valet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: valet
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Selector labels of one component: call with (dict "ctx" $ "component" "operator"). */}}
{{- define "valet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "valet.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "valet.componentLabels" -}}
{{ include "valet.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "valet.operator.fullname" -}}
{{- printf "%s-operator" (include "valet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "valet.agent.fullname" -}}
{{- printf "%s-agent" (include "valet.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "valet.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "valet.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create is false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "valet.agent.serviceAccountName" -}}
{{- if .Values.agent.serviceAccount.create }}
{{- default (include "valet.agent.fullname" .) .Values.agent.serviceAccount.name }}
{{- else }}
{{- required "agent.serviceAccount.name is required when agent.serviceAccount.create is false" .Values.agent.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "valet.image" -}}
{{- if eq .Values.image.tag "latest" }}
{{- fail "image.tag: \"latest\" is not allowed; pin a version (default: the chart's appVersion) or set image.digest" }}
{{- end }}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* Leader election is on whenever more than one operator replica runs. */}}
{{- define "valet.operator.leaderElect" -}}
{{- if or (gt (int .Values.operator.replicas) 1) .Values.operator.leaderElection.enabled }}true{{ end }}
{{- end }}

{{/* The container security context every valet container runs with. */}}
{{- define "valet.containerSecurityContext" -}}
allowPrivilegeEscalation: false
privileged: false
readOnlyRootFilesystem: true
runAsNonRoot: true
runAsUser: {{ int .Values.securityContext.runAsUser }}
runAsGroup: {{ int .Values.securityContext.runAsGroup }}
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "valet.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ int .Values.securityContext.runAsUser }}
runAsGroup: {{ int .Values.securityContext.runAsGroup }}
fsGroup: {{ int .Values.securityContext.runAsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Namespaces and pods allowed to scrape metrics (NetworkPolicy peers). */}}
{{- define "valet.scrapePeers" -}}
{{- with .Values.networkPolicy.metricsFrom }}
{{ toYaml . }}
{{- else }}
- namespaceSelector: {}
  podSelector:
    matchLabels:
      app.kubernetes.io/name: prometheus
{{- end }}
{{- end }}

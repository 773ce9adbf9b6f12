{{/* The alerts of files/alerts.yaml with their thresholds resolved from .Values.alerts. */}}
{{- define "valet.alerts" -}}
{{- $alerts := list }}
{{- range (.Files.Get "files/alerts.yaml" | fromYaml).alerts }}
{{- $threshold := .threshold }}
{{- if kindIs "string" $threshold }}
{{- $threshold = index $.Values.alerts $threshold }}
{{- end }}
{{- $alerts = append $alerts (merge (dict "threshold" $threshold) (omit . "threshold")) }}
{{- end }}
{{- toYaml (dict "alerts" $alerts) }}
{{- end }}

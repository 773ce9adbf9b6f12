{{/* The alerts of files/alerts.yaml with their thresholds resolved from .Values.alerts, their
`for` overridden by .Values.alerts.for, and their runbook_url: .Values.alerts.runbookUrl plus
the runbook section of the alert (its name in lower case, as docs/runbook.md's headings). */}}
{{- define "valet.alerts" -}}
{{- $alerts := list }}
{{- $for := index .Values.alerts "for" | default dict }}
{{- range (.Files.Get "files/alerts.yaml" | fromYaml).alerts }}
{{- $threshold := .threshold }}
{{- if kindIs "string" $threshold }}
{{- $threshold = index $.Values.alerts $threshold }}
{{- end }}
{{- $runbook := printf "%s#%s" $.Values.alerts.runbookUrl (lower .name) }}
{{- $resolved := dict "threshold" $threshold "for" (index $for .name | default (index . "for")) "runbookUrl" $runbook }}
{{- $alerts = append $alerts (merge $resolved (omit . "threshold" "for")) }}
{{- end }}
{{- toYaml (dict "alerts" $alerts) }}
{{- end }}

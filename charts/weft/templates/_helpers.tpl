{{/* The controller image: repository, then @digest or :tag (appVersion by default). */}}
{{- define "weft.controllerImage" -}}
{{- $i := .Values.controller.image -}}
{{- if eq $i.tag "latest" -}}
{{- fail "controller.image.tag: latest names no version, so replicas and upgrades could run different code: set a version (the chart's appVersion when empty) or controller.image.digest" -}}
{{- end -}}
{{- if $i.digest -}}
{{ $i.repository }}@{{ $i.digest }}
{{- else -}}
{{ $i.repository }}:{{ $i.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Argo CD sync wave: CRDs, the RBAC and the ServiceAccount first (-1), the
fail-closed webhook after weft-controller is healthy (1), as config/default. */}}
{{- define "weft.waveFirst" -}}
argocd.argoproj.io/sync-wave: "-1"
{{- end -}}

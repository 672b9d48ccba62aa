{{/*
Names and labels, and nothing else (object bodies live in their own templates; the service's
configuration in _config.tpl, pod snippets in _pod.tpl). Each object of the chart is
"<fullname>" or "<fullname>-<component>", and carries the standard labels plus
app.kubernetes.io/component so that selectors never mix web pods with job pods.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "flashsale.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified app name: fullnameOverride, else "<release>" when the release name
already contains the chart name, else "<release>-<chart>". 63 characters at most (DNS label).
*/}}
{{- define "flashsale.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* "<fullname>-<suffix>", trimmed to 52 characters so a CronJob's Job names still fit. */}}
{{- define "flashsale.componentName" -}}
{{- printf "%s-%s" (include "flashsale.fullname" .root) .component | trunc 52 | trimSuffix "-" }}
{{- end }}

{{/* chart label value: "<name>-<version>". */}}
{{- define "flashsale.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select this release's pods (all components). */}}
{{- define "flashsale.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flashsale.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels every object carries. */}}
{{- define "flashsale.labels" -}}
helm.sh/chart: {{ include "flashsale.chart" . }}
{{ include "flashsale.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: flashsale
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels of one component: call with (dict "root" $ "component" "web"). */}}
{{- define "flashsale.componentLabels" -}}
{{ include "flashsale.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Selector of one component's pods: call with (dict "root" $ "component" "web"). */}}
{{- define "flashsale.componentSelectorLabels" -}}
{{ include "flashsale.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The ServiceAccount the release's pods run as. */}}
{{- define "flashsale.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "flashsale.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* "repository:tag", the tag defaulting to the chart's appVersion; a digest wins over both. */}}
{{- define "flashsale.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The chart's own Secret: it holds what values.yaml gives inline (the connection URLs, the JWT key,
the pass key); whatever an existingSecret provides is read from that Secret instead.
*/}}
{{- define "flashsale.secretName" -}}
{{- include "flashsale.fullname" . }}
{{- end }}

{{/* The migration hook's short-lived copy of the chart's own Secret (see hooks/). */}}
{{- define "flashsale.hookSecretName" -}}
{{- include "flashsale.componentName" (dict "root" . "component" "migrate") }}
{{- end }}

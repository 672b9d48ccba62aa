{{/*
Names and labels shared by every template. Each object of the chart is
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

{{/* The Secret that holds REDIS_URL and DATABASE_URL: existingSecret, or the one this chart makes. */}}
{{- define "flashsale.secretName" -}}
{{- default (include "flashsale.fullname" .) .Values.connections.existingSecret }}
{{- end }}

{{/*
The sale settings as environment variables: the single source for the ConfigMap (web pods,
CronJobs) and for the migration hook, which runs before that ConfigMap exists.
*/}}
{{- define "flashsale.configData" -}}
{{- $c := .Values.config -}}
PORT: {{ .Values.containerPort | quote }}
FLASHSALE_ITEMS: {{ $c.items | quote }}
FLASHSALE_PERIOD: {{ $c.period | quote }}
FLASHSALE_USER_LIMIT: {{ $c.userLimit | quote }}
FLASHSALE_CHECKOUT_TTL: {{ $c.checkoutTtl | quote }}
FLASHSALE_RATE_PER_USER: {{ $c.ratePerUser | quote }}
FLASHSALE_RATE_PER_IP: {{ $c.ratePerIp | quote }}
FLASHSALE_CLIENT_IP_HEADER: {{ $c.clientIpHeader | quote }}
WEB_CONCURRENCY: {{ $c.webConcurrency | quote }}
FLASHSALE_SWEEP_INTERVAL: {{ $c.sweepInterval | quote }}
FLASHSALE_PRELOAD_SECONDS: {{ $c.preloadSeconds | quote }}
LOG_LEVEL: {{ $c.logLevel | quote }}
FLASHSALE_REDIS_TIMEOUT: {{ $c.redisTimeout | quote }}
FLASHSALE_PG_CONNECT_TIMEOUT: {{ $c.pgConnectTimeout | quote }}
FLASHSALE_PG_STATEMENT_TIMEOUT_MS: {{ $c.pgStatementTimeoutMs | quote }}
{{- end }}

{{/* REDIS_URL and DATABASE_URL from a Secret; call with (dict "root" $ "secret" "<name>"). */}}
{{- define "flashsale.connectionEnv" -}}
- name: REDIS_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .root.Values.connections.redisUrlKey }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .secret }}
      key: {{ .root.Values.connections.databaseUrlKey }}
{{- end }}

{{/* Environment of every flashsale container but the migration hook's (see hooks/). */}}
{{- define "flashsale.env" -}}
env:
  {{- include "flashsale.connectionEnv" (dict "root" . "secret" (include "flashsale.secretName" .)) | nindent 2 }}
  - name: PROMETHEUS_MULTIPROC_DIR
    value: {{ .Values.metrics.multiprocDir | quote }}
  {{- with .Values.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
envFrom:
  - configMapRef:
      name: {{ include "flashsale.fullname" . }}
{{- end }}

{{/*
The writable paths of a read-only root filesystem: /tmp (gunicorn's heartbeat files) and the
Prometheus multiprocess directory, both emptyDirs, so they start empty with every pod.
*/}}
{{- define "flashsale.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: metrics
  mountPath: {{ .Values.metrics.multiprocDir }}
{{- end }}

{{- define "flashsale.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
- name: metrics
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- end }}

{{/* Pod-level settings shared by the web pods and every job pod. */}}
{{- define "flashsale.podSpecCommon" -}}
{{- with .Values.image.pullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.podSecurityContext }}
securityContext:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with .Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A CronJob running one `flashsale` subcommand. Call with
(dict "root" $ "component" "opener" "job" .Values.opener "args" (list "open-sale" "--next")).
*/}}
{{- define "flashsale.cronJob" -}}
{{- $root := .root -}}
{{- $job := .job -}}
apiVersion: batch/v1
kind: CronJob
metadata:
  name: {{ include "flashsale.componentName" (dict "root" $root "component" .component) }}
  labels:
    {{- include "flashsale.componentLabels" (dict "root" $root "component" .component) | nindent 4 }}
spec:
  schedule: {{ .schedule | default $job.schedule | quote }}
  {{- with $job.timeZone }}
  timeZone: {{ . | quote }}
  {{- end }}
  concurrencyPolicy: {{ $job.concurrencyPolicy }}
  startingDeadlineSeconds: {{ $job.startingDeadlineSeconds }}
  successfulJobsHistoryLimit: {{ $job.successfulJobsHistoryLimit }}
  failedJobsHistoryLimit: {{ $job.failedJobsHistoryLimit }}
  suspend: {{ $job.suspend }}
  jobTemplate:
    metadata:
      labels:
        {{- include "flashsale.componentLabels" (dict "root" $root "component" .component) | nindent 8 }}
    spec:
      backoffLimit: {{ $job.backoffLimit }}
      activeDeadlineSeconds: {{ $job.activeDeadlineSeconds }}
      template:
        metadata:
          labels:
            {{- include "flashsale.componentLabels" (dict "root" $root "component" .component) | nindent 12 }}
          {{- with $root.Values.podAnnotations }}
          annotations:
            {{- toYaml . | nindent 12 }}
          {{- end }}
        spec:
          restartPolicy: Never
          serviceAccountName: {{ include "flashsale.serviceAccountName" $root }}
          automountServiceAccountToken: {{ $root.Values.serviceAccount.automountToken }}
          {{- with include "flashsale.podSpecCommon" $root | trim }}
          {{- . | nindent 10 }}
          {{- end }}
          containers:
            - name: {{ .component }}
              image: {{ include "flashsale.image" $root | quote }}
              imagePullPolicy: {{ $root.Values.image.pullPolicy }}
              command: ["flashsale"]
              args:
                {{- toYaml .args | nindent 16 }}
              {{- include "flashsale.env" $root | nindent 14 }}
              {{- with $root.Values.securityContext }}
              securityContext:
                {{- toYaml . | nindent 16 }}
              {{- end }}
              resources:
                {{- toYaml $job.resources | nindent 16 }}
              volumeMounts:
                {{- include "flashsale.volumeMounts" $root | nindent 16 }}
          volumes:
            {{- include "flashsale.volumes" $root | nindent 12 }}
{{- end }}

{{/*
Pieces of the pod spec shared by the web pods, the CronJobs' pods and the migration hook.
*/}}

{{/*
Environment of the web and CronJob containers: secrets by reference, the settings from the
ConfigMap. Call with the root context. (The migration hook builds its own, see hooks/.)
*/}}
{{- define "flashsale.env" -}}
env:
  {{- include "flashsale.secretEnv" (dict "root" . "secret" (include "flashsale.secretName" .)) | nindent 2 }}
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

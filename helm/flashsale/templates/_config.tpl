{{/*
The service's configuration (service/flashsale/config.py reads it from the environment):
plain settings go into the ConfigMap, secrets into a Secret, and every flashsale container
refers to both. The migration hook inlines the same settings, since it runs before the
ConfigMap exists.
*/}}

{{/* Plain settings, as environment variables: the ConfigMap's data and the migration hook's env. */}}
{{- define "flashsale.configData" -}}
{{- $c := .Values.config -}}
{{- $auth := .Values.auth -}}
{{- $room := .Values.waitingRoom -}}
PORT: {{ .Values.containerPort | int64 | quote }}
FLASHSALE_PROBE_PORT: {{ .Values.probePort | int64 | quote }}
FLASHSALE_RELEASE: {{ .Release.Name | quote }}
FLASHSALE_NAMESPACE: {{ .Release.Namespace | quote }}
FLASHSALE_ITEMS: {{ $c.items | int64 | quote }}
FLASHSALE_PERIOD: {{ $c.period | int64 | quote }}
FLASHSALE_USER_LIMIT: {{ $c.userLimit | int64 | quote }}
FLASHSALE_CHECKOUT_TTL: {{ $c.checkoutTtl | int64 | quote }}
FLASHSALE_PRELOAD_SECONDS: {{ $c.preloadSeconds | int64 | quote }}
FLASHSALE_PENDING_GRACE: {{ $c.pendingGrace | quote }}
FLASHSALE_SWEEPER: {{ ternary "on" "off" $c.sweeper | quote }}
FLASHSALE_SWEEP_INTERVAL: {{ $c.sweepInterval | quote }}
FLASHSALE_RATE_PER_USER: {{ $c.ratePerUser | quote }}
FLASHSALE_RATE_PER_IP: {{ $c.ratePerIp | quote }}
FLASHSALE_CLIENT_IP_HEADER: {{ $c.clientIpHeader | quote }}
FLASHSALE_MAX_INFLIGHT: {{ $c.maxInflight | int64 | quote }}
FLASHSALE_PUBLIC_URL: {{ $c.publicUrl | quote }}
FLASHSALE_HEADER_TIMEOUT: {{ $c.headerTimeout | quote }}
FLASHSALE_MAX_CONN_PER_IP: {{ $c.maxConnPerIp | int64 | quote }}
WEB_CONCURRENCY: {{ $c.webConcurrency | int64 | quote }}
FLASHSALE_REDIS_CLUSTER: {{ ternary "on" "off" $c.redisCluster | quote }}
FLASHSALE_REDIS_SHARDS: {{ $c.redisShards | int64 | quote }}
FLASHSALE_REDIS_TIMEOUT: {{ $c.redisTimeout | quote }}
FLASHSALE_REDIS_MAX_CONNECTIONS: {{ $c.redisMaxConnections | int64 | quote }}
FLASHSALE_PG_POOL_SIZE: {{ $c.pgPoolSize | int64 | quote }}
FLASHSALE_PG_CONNECT_TIMEOUT: {{ $c.pgConnectTimeout | int64 | quote }}
FLASHSALE_PG_STATEMENT_TIMEOUT_MS: {{ $c.pgStatementTimeoutMs | int64 | quote }}
LOG_LEVEL: {{ $c.logLevel | quote }}
FLASHSALE_ACCESS_LOG: {{ ternary "on" "off" $c.accessLog | quote }}
FLASHSALE_AUTH: {{ $auth.mode | quote }}
FLASHSALE_AUTH_HEADER: {{ $auth.header | quote }}
FLASHSALE_JWT_AUDIENCE: {{ $auth.jwt.audience | quote }}
FLASHSALE_JWT_ISSUER: {{ $auth.jwt.issuer | quote }}
FLASHSALE_WAITING_ROOM: {{ ternary "on" "off" $room.enabled | quote }}
FLASHSALE_ADMIT_RATE: {{ $room.admitRate | quote }}
FLASHSALE_QUEUE_OPENS_BEFORE: {{ $room.queueOpensBefore | int64 | quote }}
FLASHSALE_PASS_TTL: {{ $room.passTtl | int64 | quote }}
{{- end }}

{{/*
The secret settings the pods need, each as (dict "env" <variable> "existing" <existingSecret>
"existingKey" <its key> "value" <inline value> "key" <key in the chart's own Secret>).
A setting comes from its existingSecret when one is named, else from the chart's own Secret; a
needed secret given neither way fails the render with a message saying what to set.
*/}}
{{- define "flashsale.secrets" -}}
{{- $conn := .Values.connections -}}
{{- $jwt := .Values.auth.jwt -}}
{{- $room := .Values.waitingRoom -}}
{{- $list := list
  (dict "env" "REDIS_URL" "existing" $conn.existingSecret "existingKey" $conn.redisUrlKey "value" $conn.redisUrl "key" $conn.redisUrlKey "needs" "connections.redisUrl or connections.existingSecret")
  (dict "env" "DATABASE_URL" "existing" $conn.existingSecret "existingKey" $conn.databaseUrlKey "value" $conn.databaseUrl "key" $conn.databaseUrlKey "needs" "connections.databaseUrl or connections.existingSecret") -}}
{{- if eq .Values.auth.mode "jwt" }}
{{- $list = append $list (dict "env" "FLASHSALE_JWT_KEY" "existing" $jwt.existingSecret "existingKey" $jwt.existingSecretKey "value" $jwt.key "key" "FLASHSALE_JWT_KEY" "needs" "auth.mode=jwt needs auth.jwt.key (an HS256 secret or a PEM public key) or auth.jwt.existingSecret") }}
{{- end }}
{{- if $room.enabled }}
{{- $list = append $list (dict "env" "FLASHSALE_PASS_KEY" "existing" $room.existingSecret "existingKey" $room.existingSecretKey "value" $room.passKey "key" "FLASHSALE_PASS_KEY" "needs" "waitingRoom.enabled needs waitingRoom.passKey (e.g. `openssl rand -hex 32`) or waitingRoom.existingSecret: every pod must sign passes with the same key") }}
{{- end }}
{{- toJson $list }}
{{- end }}

{{/*
The data of the chart's own Secret (stringData): the secrets given inline; empty when none. A
value of several lines (a PEM key) is written as a block, one line of YAML per line of the key.
*/}}
{{- define "flashsale.secretData" -}}
{{- range include "flashsale.secrets" . | fromJsonArray }}
{{- if not .existing }}
{{- $value := required .needs .value }}
{{- if contains "\n" (trimSuffix "\n" $value) }}
{{ .key }}: |2-
{{- regexReplaceAll "(?m)[ \t]+$" ($value | trimSuffix "\n" | nindent 2) "" }}
{{- else }}
{{ .key }}: {{ $value | quote }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The secrets as env entries (secretKeyRef), each from its existingSecret or the chart's own Secret.
Call with (dict "root" $ "secret" <name of the chart's own Secret or of the hook's copy>).
*/}}
{{- define "flashsale.secretEnv" -}}
{{- $env := list -}}
{{- range include "flashsale.secrets" .root | fromJsonArray }}
{{- $ref := dict "name" (.existing | default $.secret) "key" (ternary .existingKey .key (not (empty .existing))) }}
{{- $env = append $env (dict "name" .env "valueFrom" (dict "secretKeyRef" $ref)) }}
{{- end }}
{{- toYaml $env }}
{{- end }}

{{/*
The chart name, or nameOverride.
*/}}
{{- define "mlink-bridge.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The resource-name prefix: <release>-<chart name>, or fullnameOverride; 63 characters at most.
*/}}
{{- define "mlink-bridge.fullname" -}}
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

{{- define "mlink-bridge.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels on every object.
*/}}
{{- define "mlink-bridge.labels" -}}
helm.sh/chart: {{ include "mlink-bridge.chart" . }}
{{ include "mlink-bridge.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mlink-bridge
{{- end }}

{{/*
Labels that select the release's objects.
*/}}
{{- define "mlink-bridge.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mlink-bridge.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels that select every connector pod of the release (ServiceMonitor, NetworkPolicy).
*/}}
{{- define "mlink-bridge.connectorsSelectorLabels" -}}
{{ include "mlink-bridge.selectorLabels" . }}
app.kubernetes.io/component: connector
{{- end }}

{{/*
The connector helpers take (dict "root" $ "connector" $connector).
*/}}
{{- define "mlink-bridge.connectorFullname" -}}
{{- printf "%s-%s" (include "mlink-bridge.fullname" .root) .connector.name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "mlink-bridge.connectorSelectorLabels" -}}
{{ include "mlink-bridge.connectorsSelectorLabels" .root }}
mlink-bridge/connector: {{ .connector.name }}
{{- end }}

{{- define "mlink-bridge.connectorLabels" -}}
{{ include "mlink-bridge.labels" .root }}
app.kubernetes.io/component: connector
mlink-bridge/connector: {{ .connector.name }}
{{- end }}

{{- define "mlink-bridge.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mlink-bridge.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "mlink-bridge.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
A number as a plain string: Helm reads numbers in values as float64, and 1000000 would
otherwise print as 1e+06.
*/}}
{{- define "mlink-bridge.str" -}}
{{- if or (kindIs "float64" .) (kindIs "int64" .) (kindIs "int" .) }}
{{- if eq (float64 .) (float64 (int64 .)) }}{{ int64 . }}{{ else }}{{ . }}{{ end }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{/*
The credentials: one row per secret variable, with its value (chart-made Secret) and its key
in the Secret that is used. Returns JSON: {"name": secret name, "create": bool, "refs": [{env, key}],
"data": {key: value}}.
*/}}
{{- define "mlink-bridge.secrets" -}}
{{- $v := .Values }}
{{- $rows := list
  (dict "env" "MLINK_API_KEY" "field" "mlinkApiKey" "key" "mlink-api-key" "value" $v.auth.apiKey)
  (dict "env" "MLINK_API_PASSWORD" "field" "mlinkApiPassword" "key" "mlink-api-password" "value" $v.auth.apiPassword)
  (dict "env" "MLINK_JWT" "field" "mlinkJwt" "key" "mlink-jwt" "value" $v.auth.jwt)
  (dict "env" "SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO" "field" "schemaRegistryBasicAuthUserInfo" "key" "schema-registry-basic-auth-user-info" "value" $v.schemaRegistry.basicAuthUserInfo)
  (dict "env" "KAFKA_SASL_PASSWORD" "field" "kafkaSaslPassword" "key" "kafka-sasl-password" "value" $v.kafka.sasl.password)
}}
{{- $out := dict "refs" (list) "data" (dict) "create" false }}
{{- if $v.existingSecret.name }}
{{- range $rows }}
{{- if .value }}
{{- fail (printf "existingSecret.name is set: put the credential for %s into that Secret instead of the values" .env) }}
{{- end }}
{{- $key := get $v.existingSecret.keys .field }}
{{- if $key }}
{{- $_ := set $out "refs" (append $out.refs (dict "env" .env "key" $key)) }}
{{- end }}
{{- end }}
{{- $_ := set $out "name" $v.existingSecret.name }}
{{- else }}
{{- range $rows }}
{{- if .value }}
{{- $_ := set $out "refs" (append $out.refs (dict "env" .env "key" .key)) }}
{{- $_ := set $out.data .key .value }}
{{- end }}
{{- end }}
{{- $_ := set $out "name" (include "mlink-bridge.fullname" .) }}
{{- $_ := set $out "create" (gt (len $out.refs) 0) }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The plain (non-secret) environment of one connector as a JSON object: the chart's variables,
overridden by the connector's `env`. Takes (dict "root" $ "connector" $connector).
*/}}
{{- define "mlink-bridge.plainEnv" -}}
{{- $v := .root.Values }}
{{- $env := dict
  "MLINK_URL" $v.mlink.url
  "MLINK_AUTH" $v.mlink.auth
  "BRIDGE_TOPIC_PREFIX" $v.bridge.topicPrefix
  "BRIDGE_HTTP_PORT" (include "mlink-bridge.str" $v.bridge.httpPort)
  "BRIDGE_FLUSH_TIMEOUT" (include "mlink-bridge.str" $v.bridge.flushTimeout)
  "LOG_FORMAT" $v.logging.format
  "LOG_LEVEL" $v.logging.level
}}
{{- if $v.kafka.bootstrapServers }}
{{- $_ := set $env "KAFKA_BOOTSTRAP_SERVERS" $v.kafka.bootstrapServers }}
{{- end }}
{{- range $property, $value := $v.kafka.properties }}
{{- $_ := set $env (printf "KAFKA_%s" ($property | upper | replace "." "_")) (include "mlink-bridge.str" $value) }}
{{- end }}
{{- if $v.schemaRegistry.url }}
{{- $_ := set $env "SCHEMA_REGISTRY_URL" $v.schemaRegistry.url }}
{{- end }}
{{- range $name, $value := .connector.env }}
{{- $_ := set $env $name (include "mlink-bridge.str" $value) }}
{{- end }}
{{- $_ := set $env "BRIDGE_SUBSCRIPTIONS_FILE" "/etc/mlink-bridge/subscriptions.json" }}
{{- if $v.auth.jwtFile.secretName }}
{{- $_ := set $env "MLINK_JWT_FILE" "/var/run/secrets/mlink/jwt" }}
{{- end }}
{{- toJson $env }}
{{- end }}

{{/*
The subscriptions file of one connector (the ConfigMap's data, also hashed into the pod
annotations so that a change rolls the pod). JSON, which the bridge reads as YAML: every string
stays quoted, so no value can turn into a date or a boolean on the way.
*/}}
{{- define "mlink-bridge.subscriptionsFile" -}}
{{ toPrettyJson .subscriptions }}
{{- end }}

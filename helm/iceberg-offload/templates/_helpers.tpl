{{/*
The chart's name (nameOverride or iceberg-offload), at most 63 characters.
*/}}
{{- define "iceberg-offload.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name prefix of every resource: fullnameOverride, or <release>-<name> unless the release
name already contains the chart name.
*/}}
{{- define "iceberg-offload.fullname" -}}
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

{{/*
chart label value: <name>-<version>.
*/}}
{{- define "iceberg-offload.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every resource.
*/}}
{{- define "iceberg-offload.labels" -}}
helm.sh/chart: {{ include "iceberg-offload.chart" . }}
{{ include "iceberg-offload.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: iceberg-offload
{{- end }}

{{/*
Selector labels of the operator's pods (never change them: a Deployment's selector is immutable).
*/}}
{{- define "iceberg-offload.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iceberg-offload.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "iceberg-offload.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "iceberg-offload.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The namespaces the operator watches (and where its Role, the Spark driver's ServiceAccount and
the peering object live), as a JSON list: watchNamespaces, or the release namespace. Use with
fromJsonArray.
*/}}
{{- define "iceberg-offload.namespaces" -}}
{{- if .Values.watchNamespaces }}
{{- .Values.watchNamespaces | uniq | toJson }}
{{- else }}
{{- list .Release.Namespace | toJson }}
{{- end }}
{{- end }}

{{/*
Whether kopf peering is on: "true" or "" (replicas > 1, or peering.enabled).
*/}}
{{- define "iceberg-offload.peering" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicas) 1) }}true{{ end }}
{{- end }}

{{/*
The peering object's name.
*/}}
{{- define "iceberg-offload.peeringName" -}}
{{- default (include "iceberg-offload.fullname" .) .Values.peering.name }}
{{- end }}

{{/*
Image references: repository:tag, the tag defaulting to the chart's appVersion.
*/}}
{{- define "iceberg-offload.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "iceberg-offload.sparkImage" -}}
{{- printf "%s:%s" .Values.spark.image.repository (default .Chart.AppVersion .Values.spark.image.tag) }}
{{- end }}

{{/*
The operator's RBAC rules, shared by the namespaced Role and the ClusterRole. Exactly the calls
the operator makes (tests/e2e/test_chart.py records them against a real API server):
  kopf:      offloadtables and offloadbackfills list/watch (the timers' watches), patch (their
             annotations/finalizer), their /status patch (status writes), events create (kopf.event),
             kopfpeerings list/watch/patch (peering only; cluster-wide: clusterkopfpeerings).
  kube.py:   sparkapplications list/create/delete (list_runs, create_run, delete_run),
             offloadtables get (get_table: a backfill's table), configmaps get (catalog),
             secrets get (passwords; resourceNames when rbac.secretNames is set),
             pods/log get (log_tail: the failed driver's error line).
*/}}
{{- define "iceberg-offload.rules" -}}
- apiGroups: ["offload.k2.io"]
  resources: ["offloadtables"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["offload.k2.io"]
  resources: ["offloadbackfills"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["offload.k2.io"]
  resources: ["offloadtables/status", "offloadbackfills/status"]
  verbs: ["patch"]
- apiGroups: ["sparkoperator.k8s.io"]
  resources: ["sparkapplications"]
  verbs: ["list", "create", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
  {{- with .Values.rbac.secretNames }}
  resourceNames: {{ toJson (uniq .) }}
  {{- end }}
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end }}

{{/*
The metrics Service's name: a DNS-1035 label, so at most 63 characters.
*/}}
{{- define "iceberg-offload.metricsServiceName" -}}
{{- printf "%s-metrics" (include "iceberg-offload.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

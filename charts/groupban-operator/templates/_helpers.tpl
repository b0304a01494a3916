{{/* The release's name for its objects, at most 63 characters. */}}
{{- define "groupban.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "groupban.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "groupban.labels" -}}
{{ include "groupban.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "groupban.annotations" -}}
{{- with .Values.commonAnnotations }}
annotations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "groupban.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "groupban.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- /* Never the namespace's default account: the roles would reach every pod using it. */ -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The default credentials Secret as (namespace, name), when set. */}}
{{- define "groupban.defaultSecretNamespace" -}}
{{- with .Values.operator.defaultCredentialsSecret }}{{ (split "/" .)._0 }}{{ end -}}
{{- end -}}
{{- define "groupban.defaultSecretName" -}}
{{- with .Values.operator.defaultCredentialsSecret }}{{ (split "/" .)._1 }}{{ end -}}
{{- end -}}

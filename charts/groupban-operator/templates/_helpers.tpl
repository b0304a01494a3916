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

{{/*
A duration value in seconds. values.schema.json holds durations to whole
hours, minutes and seconds in that order (at most 9 digits each), so the
sum is exact and fits; `run` reads the same text to the same value.
*/}}
{{- define "groupban.seconds" -}}
{{- $hours := regexFind "[0-9]+h" . | trimSuffix "h" | default "0" | atoi -}}
{{- $minutes := regexFind "[0-9]+m" . | trimSuffix "m" | default "0" | atoi -}}
{{- $seconds := regexFind "[0-9]+s" . | trimSuffix "s" | default "0" | atoi -}}
{{- add (mul $hours 3600) (mul $minutes 60) $seconds -}}
{{- end -}}

{{/*
Refuses at render time what `run` would refuse at start (a pod that
crash-loops): each duration between 1s and a year, and leader election's
retry period < renew deadline < lease duration. tests/chart_values.rs walks
these edges through run's own argument check.
*/}}
{{- define "groupban.checkDurations" -}}
{{- $op := .Values.operator -}}
{{- $checked := dict "stalledRecheckInterval" $op.stalledRecheckInterval "resyncInterval" $op.resyncInterval "progressInterval" $op.progressInterval -}}
{{- if $op.leaderElection.enabled -}}
{{- $_ := set $checked "leaderElection.leaseDuration" $op.leaderElection.leaseDuration -}}
{{- $_ := set $checked "leaderElection.renewDeadline" $op.leaderElection.renewDeadline -}}
{{- $_ := set $checked "leaderElection.retryPeriod" $op.leaderElection.retryPeriod -}}
{{- end -}}
{{- range $name, $text := $checked -}}
{{- $value := include "groupban.seconds" $text | atoi -}}
{{- if lt $value 1 -}}
{{- fail (printf "operator.%s is %q: it must be at least 1s" $name $text) -}}
{{- end -}}
{{- if gt $value 31536000 -}}
{{- fail (printf "operator.%s is %q: it must be at most a year (8760h)" $name $text) -}}
{{- end -}}
{{- end -}}
{{- if $op.leaderElection.enabled -}}
{{- $lease := include "groupban.seconds" $op.leaderElection.leaseDuration | atoi -}}
{{- $renew := include "groupban.seconds" $op.leaderElection.renewDeadline | atoi -}}
{{- $retry := include "groupban.seconds" $op.leaderElection.retryPeriod | atoi -}}
{{- if not (and (lt $retry $renew) (lt $renew $lease)) -}}
{{- fail (printf "operator.leaderElection needs retryPeriod (%s) < renewDeadline (%s) < leaseDuration (%s)" $op.leaderElection.retryPeriod $op.leaderElection.renewDeadline $op.leaderElection.leaseDuration) -}}
{{- end -}}
{{- end -}}
{{- end -}}

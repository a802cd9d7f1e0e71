{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "portico.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name; kept short enough for "-external"/"-internal" suffixes. */}}
{{- define "portico.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "portico.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "portico.selectorLabels" -}}
app.kubernetes.io/name: {{ include "portico.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "portico.labels" -}}
helm.sh/chart: {{ include "portico.chart" . }}
{{ include "portico.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: portico
{{- end }}

{{- define "portico.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "portico.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "portico.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Service name of one listener set: (list $ "external"). */}}
{{- define "portico.serviceName" -}}
{{- $root := index . 0 }}
{{- printf "%s-%s" (include "portico.fullname" $root) (index . 1) }}
{{- end }}

{{/* host:port for the bind address; IPv6 addresses get brackets. */}}
{{- define "portico.bind" -}}
{{- $root := index . 0 }}
{{- $port := index . 1 }}
{{- if contains ":" $root.Values.bindAddress }}
{{- printf "[%s]:%d" $root.Values.bindAddress (int $port) }}
{{- else }}
{{- printf "%s:%d" $root.Values.bindAddress (int $port) }}
{{- end }}
{{- end }}

{{/* "true" when the --leader-elect flag is on. */}}
{{- define "portico.leaderElect" -}}
{{- $le := .Values.controller.leaderElection.enabled }}
{{- if kindIs "bool" $le }}
{{- if $le }}true{{ end }}
{{- else if eq .Values.controller.kind "DaemonSet" }}true
{{- else if gt (int .Values.controller.replicas) 1 }}true
{{- end }}
{{- end }}

{{- define "portico.metallbPoolName" -}}
{{- default (include "portico.fullname" .) .Values.metallb.ipAddressPool.name }}
{{- end }}

{{/*
The config file read by `portico run --config`. Built as a dict and serialised with
toYaml, so it is always valid YAML and carries only the keys the binary knows.
*/}}
{{- define "portico.config" -}}
{{- $root := . }}
{{- $sets := list }}
{{- range $name := list "external" "internal" }}
{{- $ls := index $root.Values.listenerSets $name }}
{{- $publish := dict }}
{{- if $ls.publish.addresses }}
{{- $publish = dict "addresses" $ls.publish.addresses }}
{{- else }}
{{- $publish = dict "service" (printf "%s/%s" $root.Release.Namespace (include "portico.serviceName" (list $root $name))) }}
{{- end }}
{{- /* Clients reach HTTPS on the Service's port 443, or on the container port itself with hostNetwork. */}}
{{- $redirectPort := 443 }}
{{- if $root.Values.controller.hostNetwork }}{{- $redirectPort = int $ls.ports.https }}{{- end }}
{{- $set := dict "name" $name "ingressClasses" (list $ls.ingressClass.name) "http" (list (include "portico.bind" (list $root $ls.ports.http))) "https" (list (include "portico.bind" (list $root $ls.ports.https))) "httpsRedirectPort" $redirectPort }}
{{- if $ls.publish.enabled }}{{- $_ := set $set "publish" $publish }}{{- end }}
{{- with $ls.adoptClasses }}{{- $_ := set $set "adoptClasses" . }}{{- end }}
{{- if $ls.shareHostsAcrossNamespaces }}{{- $_ := set $set "shareHostsAcrossNamespaces" true }}{{- end }}
{{- if and $root.Values.acme.enabled (has $name $root.Values.acme.listenerSets) }}
{{- $acme := dict "directory" $root.Values.acme.directory }}
{{- if $root.Values.acme.email }}{{- $_ := set $acme "email" $root.Values.acme.email }}{{- end }}
{{- $_ := set $set "acme" $acme }}
{{- end }}
{{- $sets = append $sets $set }}
{{- end }}
{{- $upstream := dict "connectTimeout" .Values.upstream.connectTimeout "responseHeaderTimeout" .Values.upstream.responseHeaderTimeout "idleTimeout" .Values.upstream.idleTimeout }}
{{- $cfg := dict "listenerSets" $sets "admin" (dict "address" (include "portico.bind" (list $root .Values.admin.port))) "upstream" $upstream }}
{{- toYaml $cfg }}
{{- end }}

{{/* Checks the schema cannot express; fails the render with a clear message. */}}
{{- define "portico.validate" -}}
{{- $ext := .Values.listenerSets.external }}
{{- $int := .Values.listenerSets.internal }}
{{- $ports := list (int $ext.ports.http) (int $ext.ports.https) (int $int.ports.http) (int $int.ports.https) (int .Values.admin.port) }}
{{- if ne (len $ports) (len (uniq $ports)) }}
{{- fail (printf "listenerSets.*.ports and admin.port must all differ, got %v" $ports) }}
{{- end }}
{{- if eq $ext.ingressClass.name $int.ingressClass.name }}
{{- fail "listenerSets.external.ingressClass.name and listenerSets.internal.ingressClass.name must differ" }}
{{- end }}
{{- $classes := concat (list $ext.ingressClass.name $int.ingressClass.name) $ext.adoptClasses $int.adoptClasses }}
{{- if ne (len $classes) (len (uniq $classes)) }}
{{- fail (printf "a class name may appear once across listenerSets.*.ingressClass.name and listenerSets.*.adoptClasses, got %v" $classes) }}
{{- end }}
{{- if and $ext.ingressClass.default $int.ingressClass.default }}
{{- fail "only one IngressClass can be the cluster default: set one of listenerSets.*.ingressClass.default to false" }}
{{- end }}
{{- if and .Values.metallb.l2Advertisement.enabled (not .Values.metallb.ipAddressPool.enabled) (not .Values.metallb.ipAddressPool.name) }}
{{- fail "metallb.l2Advertisement needs metallb.ipAddressPool.enabled, or metallb.ipAddressPool.name naming an existing pool" }}
{{- end }}
{{- end }}

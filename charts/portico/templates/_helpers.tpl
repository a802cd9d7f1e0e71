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

{{/*
Deep merge of two dicts, (list base override), as JSON: a key present in override wins (false and 0
included, unlike mergeOverwrite); dicts merge recursively; lists are replaced.
*/}}
{{- define "portico.deepMerge" -}}
{{- $out := deepCopy (index . 0 | default dict) }}
{{- range $k, $v := (index . 1 | default dict) }}
{{- $b := index $out $k }}
{{- if and (kindIs "map" $v) (kindIs "map" $b) }}
{{- $_ := set $out $k (include "portico.deepMerge" (list $b $v) | fromJson) }}
{{- else }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
The enabled listener sets as JSON, name -> settings: listenerSetDefaults deep-merged with the set's own
values, plus className (the own class, "" when none) and portPrefix (container port names).
*/}}
{{- define "portico.sets" -}}
{{- $root := . }}
{{- $out := dict }}
{{- range $name, $set := .Values.listenerSets }}
{{- if kindIs "map" $set }}
{{- $ls := include "portico.deepMerge" (list $root.Values.listenerSetDefaults $set) | fromJson }}
{{- if $ls.enabled }}
{{- $class := "" }}
{{- if $ls.ingressClass.enabled }}{{ $class = $ls.ingressClass.name | default (printf "portico-%s" $name) }}{{ end }}
{{- $_ := set $ls "className" $class }}
{{- $prefix := $ls.portNamePrefix }}
{{- if not $prefix }}
{{- $prefix = get (dict "external" "ext" "internal" "int") $name | default ($name | trunc 9 | trimSuffix "-") }}
{{- end }}
{{- $_ := set $ls "portPrefix" $prefix }}
{{- $_ := set $ls "gatewayName" ($ls.gateway.name | default (printf "%s-%s" (include "portico.fullname" $root) $name)) }}
{{- $_ := set $out $name $ls }}
{{- end }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* A duration (250ms, 5s, 2m, 1h) in milliseconds. */}}
{{- define "portico.durationMs" -}}
{{- $s := toString . }}
{{- $n := regexFind "^[0-9]+" $s | int64 }}
{{- $unit := regexReplaceAll "^[0-9]+" $s "" }}
{{- $scale := get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) $unit | int64 }}
{{- mul $n $scale }}
{{- end }}

{{/* A duration in whole seconds, rounded up. */}}
{{- define "portico.durationSeconds" -}}
{{- div (add (include "portico.durationMs" . | int64) 999) 1000 }}
{{- end }}

{{/* The preStop sleep in seconds, "" when none. */}}
{{- define "portico.preStopSeconds" -}}
{{- if .Values.shutdown.preStopSleep }}
{{- $s := include "portico.durationSeconds" .Values.shutdown.drainDelay | int64 }}
{{- if gt $s 0 }}{{ $s }}{{ end }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: the value, or drainDelay + gracePeriod + 5 s. */}}
{{- define "portico.terminationGracePeriod" -}}
{{- $tgp := .Values.controller.terminationGracePeriodSeconds }}
{{- if kindIs "invalid" $tgp }}
{{- add (include "portico.durationSeconds" .Values.shutdown.drainDelay | int64) (include "portico.durationSeconds" .Values.shutdown.gracePeriod | int64) 5 }}
{{- else }}
{{- $tgp | int64 }}
{{- end }}
{{- end }}

{{/* "true" when the --leader-elect flag is on. */}}
{{- define "portico.leaderElect" -}}
{{- $le := .Values.controller.leaderElection.enabled }}
{{- if kindIs "bool" $le }}
{{- if $le }}true{{ end }}
{{- else if eq .Values.controller.kind "DaemonSet" }}true
{{- else if and .Values.autoscaling.enabled (gt (int .Values.autoscaling.maxReplicas) 1) }}true
{{- else if gt (int .Values.controller.replicas) 1 }}true
{{- end }}
{{- end }}

{{- define "portico.metallbPoolName" -}}
{{- default (include "portico.fullname" .) .Values.metallb.ipAddressPool.name }}
{{- end }}

{{/* namespace/name for a reference written as "name" (release namespace) or "namespace/name". */}}
{{- define "portico.ref" -}}
{{- $root := index . 0 }}
{{- $ref := index . 1 }}
{{- if contains "/" $ref }}{{ $ref }}{{ else }}{{ printf "%s/%s" $root.Release.Namespace $ref }}{{ end }}
{{- end }}

{{/*
The config file read by `portico run --config` (src/config.rs). Built as a dict and serialised with
toYaml, so it is always valid YAML and carries only the keys the binary knows, plus the raw extraConfig and
config merges.
*/}}
{{- define "portico.config" -}}
{{- $root := . }}
{{- $sets := list }}
{{- range $name, $ls := include "portico.sets" . | fromJson }}
{{- $set := dict "name" $name }}
{{- with $ls.className }}{{- $_ := set $set "ingressClasses" (list .) }}{{- end }}
{{- with $ls.adoptClasses }}{{- $_ := set $set "adoptClasses" . }}{{- end }}
{{- if $ls.gateway.enabled }}{{- $_ := set $set "gateways" (list (printf "%s/%s" $root.Release.Namespace $ls.gatewayName)) }}{{- end }}
{{- if $ls.shareHostsAcrossNamespaces }}{{- $_ := set $set "shareHostsAcrossNamespaces" true }}{{- end }}
{{- if not (kindIs "invalid" $ls.ports.http) }}{{- $_ := set $set "http" (list (include "portico.bind" (list $root $ls.ports.http))) }}{{- end }}
{{- if not (kindIs "invalid" $ls.ports.https) }}{{- $_ := set $set "https" (list (include "portico.bind" (list $root $ls.ports.https))) }}{{- end }}
{{- if $ls.publish.enabled }}
{{- if $ls.publish.addresses }}
{{- $_ := set $set "publish" (dict "addresses" $ls.publish.addresses) }}
{{- else if $ls.publish.service }}
{{- $_ := set $set "publish" (dict "service" (include "portico.ref" (list $root $ls.publish.service))) }}
{{- else if $ls.service.enabled }}
{{- $_ := set $set "publish" (dict "service" (printf "%s/%s" $root.Release.Namespace (include "portico.serviceName" (list $root $name)))) }}
{{- end }}
{{- end }}
{{- /* Clients reach HTTPS on the Service's port 443, or on the container port itself with hostNetwork. */}}
{{- if not (kindIs "invalid" $ls.httpsRedirectPort) }}
{{- $_ := set $set "httpsRedirectPort" (int $ls.httpsRedirectPort) }}
{{- else if not (kindIs "invalid" $ls.ports.https) }}
{{- $_ := set $set "httpsRedirectPort" (ternary (int $ls.ports.https) 443 $root.Values.controller.hostNetwork) }}
{{- end }}
{{- with $ls.defaultCertificate }}
{{- if .secret }}
{{- $_ := set $set "defaultCertificate" (dict "secret" (include "portico.ref" (list $root .secret))) }}
{{- else if or .certFile .keyFile }}
{{- $_ := set $set "defaultCertificate" (dict "certFile" .certFile "keyFile" .keyFile) }}
{{- end }}
{{- end }}
{{- if and $root.Values.acme.enabled (has $name $root.Values.acme.listenerSets) }}
{{- $acme := dict "directory" $root.Values.acme.directory }}
{{- if $root.Values.acme.email }}{{- $_ := set $acme "email" $root.Values.acme.email }}{{- end }}
{{- with $root.Values.acme.externalAccountBinding }}
{{- if .keyId }}{{- $_ := set $acme "externalAccountBinding" (dict "keyId" .keyId "hmacKey" .hmacKey) }}{{- end }}
{{- end }}
{{- with $root.Values.acme.caRoot }}{{- $_ := set $acme "caRoot" . }}{{- end }}
{{- $_ := set $set "acme" $acme }}
{{- end }}
{{- if $ls.proxyProtocol }}{{- $_ := set $set "proxyProtocol" true }}{{- end }}
{{- with $ls.trustedProxies }}{{- $_ := set $set "trustedProxies" . }}{{- end }}
{{- with $ls.allowSourceRanges }}{{- $_ := set $set "allowSourceRanges" . }}{{- end }}
{{- with $ls.denySourceRanges }}{{- $_ := set $set "denySourceRanges" . }}{{- end }}
{{- with $ls.errorPages }}{{- $_ := set $set "errorPages" (dict "service" .service "codes" .codes) }}{{- end }}
{{- if not (kindIs "invalid" $ls.maxConnections) }}{{- $_ := set $set "maxConnections" (int $ls.maxConnections) }}{{- end }}
{{- range $key := list "headerReadTimeout" "keepAliveTimeout" "bodyReadTimeout" }}
{{- with index $ls $key }}{{- $_ := set $set $key . }}{{- end }}
{{- end }}
{{- $set = include "portico.deepMerge" (list $set ($ls.extraConfig | default dict)) | fromJson }}
{{- $sets = append $sets $set }}
{{- end }}
{{- $u := .Values.upstream }}
{{- $upstream := dict "connectTimeout" $u.connectTimeout "responseHeaderTimeout" $u.responseHeaderTimeout "idleTimeout" $u.idleTimeout }}
{{- with $u.readTimeout }}{{- $_ := set $upstream "readTimeout" . }}{{- end }}
{{- $budget := dict }}
{{- range $key, $v := ($u.retryBudget | default dict) }}
{{- if not (kindIs "invalid" $v) }}{{- $_ := set $budget $key $v }}{{- end }}
{{- end }}
{{- with $budget }}{{- $_ := set $upstream "retryBudget" . }}{{- end }}
{{- /* With the preStop sleep the kubelet does the drain; the binary's own delay would double it. */}}
{{- $drain := .Values.shutdown.drainDelay }}
{{- if .Values.shutdown.preStopSleep }}{{ $drain = "0s" }}{{ end }}
{{- $shutdown := dict "drainDelay" $drain "gracePeriod" .Values.shutdown.gracePeriod }}
{{- $admin := dict "address" (include "portico.bind" (list $root .Values.admin.port)) }}
{{- if not .Values.admin.api.expose }}{{- $_ := set $admin "apiAddress" (printf "127.0.0.1:%d" (int .Values.admin.api.port)) }}{{- end }}
{{- $cfg := dict "listenerSets" $sets "admin" $admin "upstream" $upstream "shutdown" $shutdown }}
{{- $cfg = include "portico.deepMerge" (list $cfg (.Values.config | default dict)) | fromJson }}
{{- toYaml $cfg }}
{{- end }}

{{/* Checks the schema cannot express; fails the render with a clear message. */}}
{{- define "portico.validate" -}}
{{- $root := . }}
{{- $sets := include "portico.sets" . | fromJson }}
{{- if not $sets }}
{{- fail "listenerSets: at least one listener set must be enabled" }}
{{- end }}
{{- $ports := list (int .Values.admin.port) }}
{{- if not .Values.admin.api.expose }}{{- $ports = append $ports (int .Values.admin.api.port) }}{{- end }}
{{- $portNames := list }}
{{- $classes := list }}
{{- $defaults := list }}
{{- range $name, $ls := $sets }}
{{- if and (kindIs "invalid" $ls.ports.http) (kindIs "invalid" $ls.ports.https) }}
{{- fail (printf "listenerSets.%s.ports: give http, https or both" $name) }}
{{- end }}
{{- range $proto := list "http" "https" }}
{{- with index $ls.ports $proto }}{{ $ports = append $ports (int .) }}{{ end }}
{{- end }}
{{- if or (gt (len $ls.portPrefix) 9) (not (regexMatch "^[a-z]([a-z0-9]|-[a-z0-9])*$" $ls.portPrefix)) }}
{{- fail (printf "listenerSets.%s: %q cannot prefix container port names (at most 9 lowercase letters, digits, single '-'): set listenerSets.%s.portNamePrefix" $name $ls.portPrefix $name) }}
{{- end }}
{{- $portNames = append $portNames $ls.portPrefix }}
{{- if $ls.className }}{{ $classes = append $classes $ls.className }}{{ end }}
{{- $classes = concat $classes ($ls.adoptClasses | default list) }}
{{- if not (or $ls.className $ls.adoptClasses) }}
{{- fail (printf "listenerSets.%s: with ingressClass.enabled false, adoptClasses must name at least one class" $name) }}
{{- end }}
{{- if and $ls.className $ls.ingressClass.default }}{{ $defaults = append $defaults $name }}{{ end }}
{{- if and $ls.proxyProtocol (not $ls.trustedProxies) }}
{{- fail (printf "listenerSets.%s.proxyProtocol needs trustedProxies (the addresses of the proxies that send it)" $name) }}
{{- end }}
{{- if and $ls.defaultCertificate.secret (or $ls.defaultCertificate.certFile $ls.defaultCertificate.keyFile) }}
{{- fail (printf "listenerSets.%s.defaultCertificate: give secret, or certFile and keyFile, not both" $name) }}
{{- end }}
{{- if ne (not $ls.defaultCertificate.certFile) (not $ls.defaultCertificate.keyFile) }}
{{- fail (printf "listenerSets.%s.defaultCertificate: certFile and keyFile go together" $name) }}
{{- end }}
{{- if and $ls.publish.enabled (not $ls.publish.addresses) (not $ls.publish.service) (not $ls.service.enabled) }}
{{- fail (printf "listenerSets.%s.publish: without a Service (service.enabled false) give publish.addresses or publish.service, or set publish.enabled false" $name) }}
{{- end }}
{{- if $ls.service.enabled }}
{{- $svc := include "portico.serviceName" (list $root $name) }}
{{- if gt (len $svc) 63 }}
{{- fail (printf "listenerSets.%s: Service name %s is longer than 63 characters: shorten the set name or fullnameOverride" $name $svc) }}
{{- end }}
{{- end }}
{{- if and $root.Values.acme.enabled (has $name $root.Values.acme.listenerSets) (kindIs "invalid" $ls.ports.http) }}
{{- fail (printf "acme.listenerSets: %s has no plain-HTTP port (HTTP-01 needs listenerSets.%s.ports.http)" $name $name) }}
{{- end }}
{{- end }}
{{- if ne (len $ports) (len (uniq $ports)) }}
{{- fail (printf "listenerSets.*.ports, admin.port and admin.api.port must all differ, got %v" $ports) }}
{{- end }}
{{- if ne (len $portNames) (len (uniq $portNames)) }}
{{- fail (printf "container port name prefixes must differ, got %v: set listenerSets.<name>.portNamePrefix" $portNames) }}
{{- end }}
{{- if ne (len $classes) (len (uniq $classes)) }}
{{- fail (printf "a class name may appear once across listenerSets.*.ingressClass.name and listenerSets.*.adoptClasses, got %v" $classes) }}
{{- end }}
{{- if gt (len $defaults) 1 }}
{{- fail (printf "only one IngressClass can be the cluster default, got listener sets %v: set the others' ingressClass.default to false" $defaults) }}
{{- end }}
{{- if .Values.acme.enabled }}
{{- range .Values.acme.listenerSets }}
{{- if not (hasKey $sets .) }}
{{- fail (printf "acme.listenerSets: %q is not an enabled listener set" .) }}
{{- end }}
{{- end }}
{{- end }}
{{- if ne (not .Values.acme.externalAccountBinding.keyId) (not .Values.acme.externalAccountBinding.hmacKey) }}
{{- fail "acme.externalAccountBinding: keyId and hmacKey go together" }}
{{- end }}
{{- if hasKey (.Values.config | default dict) "listenerSets" }}
{{- fail "config.listenerSets: set listener sets with listenerSets.<name> (and listenerSets.<name>.extraConfig for raw keys)" }}
{{- end }}
{{- $tgp := .Values.controller.terminationGracePeriodSeconds }}
{{- if not (kindIs "invalid" $tgp) }}
{{- $need := add (include "portico.durationSeconds" .Values.shutdown.drainDelay | int64) (include "portico.durationSeconds" .Values.shutdown.gracePeriod | int64) }}
{{- if lt (int64 $tgp) $need }}
{{- fail (printf "controller.terminationGracePeriodSeconds (%d) must cover shutdown.drainDelay + shutdown.gracePeriod (%ds), or be left null" (int64 $tgp) $need) }}
{{- end }}
{{- end }}
{{- if and (include "portico.preStopSeconds" .) (not (semverCompare ">=1.30.0-0" .Capabilities.KubeVersion.Version)) }}
{{- fail (printf "shutdown.preStopSleep needs Kubernetes >= 1.30 (the sleep lifecycle action), this is %s: set shutdown.preStopSleep=false (the binary then waits shutdown.drainDelay itself)" .Capabilities.KubeVersion.Version) }}
{{- end }}
{{- if and .Values.autoscaling.enabled (ne .Values.controller.kind "Deployment") }}
{{- fail "autoscaling needs controller.kind: Deployment" }}
{{- end }}
{{- if and .Values.autoscaling.enabled (lt (int .Values.autoscaling.maxReplicas) (int .Values.autoscaling.minReplicas)) }}
{{- fail "autoscaling.maxReplicas must be at least autoscaling.minReplicas" }}
{{- end }}
{{- with .Values.metrics }}
{{- if and .prometheusRule.enabled (not .serviceMonitor.enabled) (not .prometheusRule.selector) }}
{{- fail "metrics.prometheusRule selects the ServiceMonitor's job: enable metrics.serviceMonitor, or set metrics.prometheusRule.selector to match how you scrape Portico" }}
{{- end }}
{{- end }}
{{- if and .Values.metallb.l2Advertisement.enabled (not .Values.metallb.ipAddressPool.enabled) (not .Values.metallb.ipAddressPool.name) }}
{{- fail "metallb.l2Advertisement needs metallb.ipAddressPool.enabled, or metallb.ipAddressPool.name naming an existing pool" }}
{{- end }}
{{- end }}

{{/* Whether to render the GatewayClass: gatewayAPI.gatewayClass.enabled, or with null whether the cluster serves
the Gateway API (or a listener set asks for a Gateway). */}}
{{- define "portico.gatewayClassEnabled" -}}
{{- $e := .Values.gatewayAPI.gatewayClass.enabled }}
{{- if kindIs "invalid" $e }}
{{- $wanted := false }}
{{- range $name, $ls := include "portico.sets" . | fromJson }}{{- if $ls.gateway.enabled }}{{- $wanted = true }}{{- end }}{{- end }}
{{- if or $wanted (.Capabilities.APIVersions.Has "gateway.networking.k8s.io/v1/GatewayClass") }}true{{- end }}
{{- else if $e }}true{{- end }}
{{- end }}

{{/* Names, labels and the pieces every workload shares. */}}

{{- define "its.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Full name. Kept to 26 characters so that an ingest pod name (<fullname>-ingest-<hash>-<xxxxx>)
stays within the 50 characters the binary allows for a camera id prefix.
*/}}
{{- define "its.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 26 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 26 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 26 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "its.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "its.labels" -}}
helm.sh/chart: {{ include "its.chart" . }}
{{ include "its.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: its-camera-ai
{{- end -}}

{{- define "its.selectorLabels" -}}
app.kubernetes.io/name: {{ include "its.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Labels of one component: (list $ "gpu"). */}}
{{- define "its.componentLabels" -}}
{{ include "its.labels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "its.componentSelector" -}}
{{ include "its.selectorLabels" (index . 0) }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "its.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "its.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Image reference: (list $ "gpu" | "slim"). */}}
{{- define "its.image" -}}
{{- $ := index . 0 -}}
{{- $repo := ternary $.Values.image.gpuRepository $.Values.image.slimRepository (eq (index . 1) "gpu") -}}
{{- $tag := default $.Chart.AppVersion $.Values.image.tag -}}
{{- if $.Values.image.registry -}}
{{- printf "%s/%s:%s" $.Values.image.registry $repo $tag -}}
{{- else -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{/* Service of the bundled NATS server (charts/nats names it <release>-nats). */}}
{{- define "its.natsUrl" -}}
{{- if .Values.nats.enabled -}}
{{- printf "nats://%s-nats.%s.svc:4222" .Release.Name .Release.Namespace -}}
{{- else -}}
{{- .Values.externalNats.url -}}
{{- end -}}
{{- end -}}

{{/* Ingest replicas: ceil(cameras.count / ingest.camerasPerReplica), at least minReplicas. */}}
{{- define "its.ingestReplicas" -}}
{{- $count := int .Values.cameras.count -}}
{{- $per := int .Values.ingest.camerasPerReplica -}}
{{- $n := div (add $count $per -1) $per -}}
{{- max $n (int .Values.ingest.minReplicas) -}}
{{- end -}}

{{/*
The its.toml of one component, as TOML: (list $ "gpu" | "ingest" | "admin").
Layers: .Values.config, then the component's config, then what the chart computes.
*/}}
{{- define "its.componentConfig" -}}
{{- $ := index . 0 -}}
{{- $component := index . 1 -}}
{{- $values := index $.Values $component -}}
{{- $cfg := deepCopy $.Values.config -}}
{{- include "its.merge" (list $cfg (deepCopy $values.config)) -}}
{{- $nats := dict "url" (include "its.natsUrl" $) -}}
{{- if and (not $.Values.nats.enabled) $.Values.externalNats.tls.enabled -}}
{{- $_ := set $nats "tls_required" true -}}
{{- if $.Values.externalNats.tls.caSecret -}}
{{- $_ := set $nats "tls_ca_file" (printf "/etc/its/nats-tls/%s" $.Values.externalNats.tls.caKey) -}}
{{- end -}}
{{- end -}}
{{- if and (not $.Values.nats.enabled) (eq $.Values.externalNats.auth.type "credsFile") -}}
{{- $_ := set $nats "creds_file" (printf "/etc/its/nats-creds/%s" $.Values.externalNats.auth.credsKey) -}}
{{- end -}}
{{- $computed := dict "nats" $nats -}}
{{- if include "its.adminApi" $ -}}
{{- $_ := set $computed "admin" (dict "enabled" true "bind" (printf "0.0.0.0:%d" (int $.Values.http.port)) "tokens_file" (printf "/etc/its/tokens/%s" $.Values.admin.tokens.key)) -}}
{{- end -}}
{{- if eq $component "ingest" -}}
{{- $replicas := int (include "its.ingestReplicas" $) -}}
{{- $count := int $.Values.cameras.count -}}
{{- $share := div (add $count $replicas -1) $replicas -}}
{{- if not $.Values.cameras.synthetic -}}{{- $share = 0 -}}{{- end -}}
{{- $_ := set $computed "cameras" (dict "registry" $.Values.cameras.registry "synthetic_count" $share "fps" $.Values.cameras.fps "width" $.Values.cameras.width "height" $.Values.cameras.height) -}}
{{- end -}}
{{- include "its.merge" (list $cfg $computed) -}}
{{- include "its.toml" (list "" $cfg) -}}
{{- end -}}

{{/* Environment shared by every container: node id from the pod name, log filter, secrets. */}}
{{- define "its.env" -}}
- name: ITS__NODE__ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: ITS_LOG
  value: {{ .Values.logLevel | quote }}
{{- if .Values.nats.enabled }}
{{- if and .Values.nats.auth .Values.nats.auth.enabled }}
- name: ITS__NATS__TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ default (printf "%s-nats-auth" .Release.Name) .Values.nats.auth.existingSecret }}
      key: token
{{- end }}
{{- else }}
{{- $auth := .Values.externalNats.auth }}
{{- if eq $auth.type "token" }}
- name: ITS__NATS__TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ $auth.existingSecret }}
      key: {{ $auth.tokenKey }}
{{- else if eq $auth.type "userPassword" }}
- name: ITS__NATS__USER
  valueFrom:
    secretKeyRef:
      name: {{ $auth.existingSecret }}
      key: {{ $auth.userKey }}
- name: ITS__NATS__PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $auth.existingSecret }}
      key: {{ $auth.passwordKey }}
{{- end }}
{{- end }}
{{- end -}}

{{/* Volume mounts shared by every container. */}}
{{- define "its.volumeMounts" -}}
- name: config
  mountPath: /etc/its/its.toml
  subPath: its.toml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if include "its.adminApi" . }}
- name: tokens
  mountPath: /etc/its/tokens
  readOnly: true
{{- end }}
{{- if not .Values.nats.enabled }}
{{- if eq .Values.externalNats.auth.type "credsFile" }}
- name: nats-creds
  mountPath: /etc/its/nats-creds
  readOnly: true
{{- end }}
{{- if and .Values.externalNats.tls.enabled .Values.externalNats.tls.caSecret }}
- name: nats-tls
  mountPath: /etc/its/nats-tls
  readOnly: true
{{- end }}
{{- end }}
{{- if .Values.models.volume }}
- name: models
  mountPath: {{ .Values.models.mountPath }}
  readOnly: true
{{- end }}
{{- end -}}

{{/* Volumes of a component: (list $ "gpu"). */}}
{{- define "its.volumes" -}}
{{- $ := index . 0 -}}
- name: config
  configMap:
    name: {{ include "its.fullname" $ }}-config
    items:
      - key: {{ index . 1 }}.toml
        path: its.toml
- name: tmp
  emptyDir:
    sizeLimit: 256Mi
{{- if include "its.adminApi" $ }}
- name: tokens
  secret:
    secretName: {{ include "its.tokensSecret" $ }}
    defaultMode: 0440
{{- end }}
{{- if not $.Values.nats.enabled }}
{{- if eq $.Values.externalNats.auth.type "credsFile" }}
- name: nats-creds
  secret:
    secretName: {{ $.Values.externalNats.auth.existingSecret }}
    defaultMode: 0440
{{- end }}
{{- if and $.Values.externalNats.tls.enabled $.Values.externalNats.tls.caSecret }}
- name: nats-tls
  secret:
    secretName: {{ $.Values.externalNats.tls.caSecret }}
{{- end }}
{{- end }}
{{- if $.Values.models.volume }}
- name: models
{{ toYaml $.Values.models.volume | indent 2 }}
{{- end }}
{{- end -}}

{{- define "its.tokensSecret" -}}
{{- default (printf "%s-admin-tokens" (include "its.fullname" .)) .Values.admin.tokens.existingSecret -}}
{{- end -}}

{{/*
Whether the binary this chart targets has the [admin] section (HTTP server with probes,
metrics and the REST API). Non-empty = yes. See README, "Chart and binary".
*/}}
{{- define "its.adminApi" -}}
{{- if .Values.http.enabled -}}true{{- end -}}
{{- end -}}

{{/* Probes and lifecycle of a container: (list $ componentValues). */}}
{{- define "its.probes" -}}
{{- $ := index . 0 -}}
{{- $p := $.Values.probes -}}
{{- if include "its.adminApi" $ }}
{{- if $p.startup.enabled }}
startupProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: {{ $p.startup.periodSeconds }}
  failureThreshold: {{ $p.startup.failureThreshold }}
  timeoutSeconds: {{ $p.startup.timeoutSeconds }}
{{- end }}
{{- if $p.liveness.enabled }}
livenessProbe:
  httpGet:
    path: /healthz
    port: http
  periodSeconds: {{ $p.liveness.periodSeconds }}
  failureThreshold: {{ $p.liveness.failureThreshold }}
  timeoutSeconds: {{ $p.liveness.timeoutSeconds }}
{{- end }}
{{- if $p.readiness.enabled }}
readinessProbe:
  httpGet:
    path: /readyz
    port: http
  periodSeconds: {{ $p.readiness.periodSeconds }}
  failureThreshold: {{ $p.readiness.failureThreshold }}
  timeoutSeconds: {{ $p.readiness.timeoutSeconds }}
{{- end }}
{{- end }}
{{- end -}}

{{/* One its container: (list $ component imageKind resources). */}}
{{- define "its.container" -}}
{{- $ := index . 0 -}}
{{- $component := index . 1 -}}
{{- $v := index $.Values $component -}}
- name: its
  image: {{ include "its.image" (list $ (index . 2)) }}
  imagePullPolicy: {{ $.Values.image.pullPolicy }}
  args:
    - --config
    - /etc/its/its.toml
    - run
    {{- range $v.extraArgs }}
    - {{ . | quote }}
    {{- end }}
  env:
    {{- include "its.env" $ | nindent 4 }}
    {{- if eq $component "ingest" }}
    # synthetic camera ids <pod name>-<n>: unique across ingest pods
    - name: ITS__CAMERAS__ID_PREFIX
      valueFrom:
        fieldRef:
          fieldPath: metadata.name
    {{- end }}
    {{- with $v.extraEnv }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    - name: http
      containerPort: {{ $.Values.http.port }}
      protocol: TCP
  {{- include "its.probes" (list $ $v) | trim | nindent 2 }}
  lifecycle:
    preStop:
      exec:
        command: ["/bin/sh", "-c", "sleep {{ $v.preStopSleepSeconds }}"]
  resources:
    {{- toYaml (index . 3) | nindent 4 }}
  securityContext:
    {{- toYaml $.Values.securityContext | nindent 4 }}
  volumeMounts:
    {{- include "its.volumeMounts" $ | nindent 4 }}
{{- end -}}

{{/* Pod-level fields shared by every workload: (list $ component). */}}
{{- define "its.podSpecCommon" -}}
{{- $ := index . 0 -}}
{{- $v := index $.Values (index . 1) -}}
serviceAccountName: {{ include "its.serviceAccountName" $ }}
automountServiceAccountToken: {{ $.Values.serviceAccount.automountToken }}
securityContext:
  {{- toYaml $.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ $v.terminationGracePeriodSeconds }}
{{- with $.Values.image.pullSecrets }}
imagePullSecrets:
  {{- range . }}
  - name: {{ . }}
  {{- end }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- $affinity := deepCopy (default (dict) $v.affinity) -}}
{{- if and $v.drainLabel (not (hasKey $affinity "nodeAffinity")) -}}
{{- /* a node labelled <drainLabel>=<anything> loses its pod: see README, Drain a GPU node */ -}}
{{- $term := dict "matchExpressions" (list (dict "key" $v.drainLabel "operator" "DoesNotExist")) -}}
{{- $_ := set $affinity "nodeAffinity" (dict "requiredDuringSchedulingIgnoredDuringExecution" (dict "nodeSelectorTerms" (list $term))) -}}
{{- end -}}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* Pod template metadata: (list $ component). */}}
{{- define "its.podMetadata" -}}
{{- $ := index . 0 -}}
labels:
  {{- include "its.componentLabels" . | nindent 2 }}
  {{- with $.Values.podLabels }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
annotations:
  checksum/config: {{ include (print $.Template.BasePath "/configmap.yaml") $ | sha256sum }}
  {{- with $.Values.podAnnotations }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- end -}}

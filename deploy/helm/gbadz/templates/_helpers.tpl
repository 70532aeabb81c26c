{{/* Names and labels shared by every template. */}}
{{- define "gbadz.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "gbadz.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gbadz.labels" -}}
{{ include "gbadz.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "gbadz.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The pod-level and container-level security contexts of every gbadz pod. */}}
{{- define "gbadz.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.uid }}
runAsGroup: {{ .Values.gid }}
fsGroup: {{ .Values.gid }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "gbadz.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Secret keys every gbadz process reads (values never appear in the chart). */}}
{{- define "gbadz.secretEnv" -}}
{{- range list "GBADZ_DB__URL" "GBADZ_S3__ACCESS_KEY" "GBADZ_S3__SECRET_KEY" "GBADZ_CRYPTO__PASSPHRASE" "GBADZ_AIRFLOW__PASSWORD" }}
- name: {{ . }}
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.existingSecret }}
      key: {{ . }}
{{- end }}
- name: GBADZ_CRYPTO__KEYRING_PATH
  value: {{ printf "%s/keyring.bin" .Values.keyring.mountPath | quote }}
{{- end -}}

{{- define "gbadz.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
- name: home
  emptyDir:
    sizeLimit: 256Mi
- name: keyring
  persistentVolumeClaim:
    claimName: {{ .Values.keyring.existingClaim }}
{{- end -}}

{{- define "gbadz.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: home
  mountPath: /var/lib/gbadz
- name: keyring
  mountPath: {{ .Values.keyring.mountPath }}
{{- end -}}

{{/*
TOML output of a values tree, for its.toml. Helm reads every number as a float, and the
binary wants integers where its settings are integers, so a whole number is written without a
decimal point (a float setting accepts an integer). Null values are left out.
*/}}

{{/* A table: (list "dotted.prefix" map). Scalars first, then sub-tables. */}}
{{- define "its.toml" -}}
{{- $prefix := index . 0 -}}
{{- $m := index . 1 -}}
{{- range $k, $v := $m }}
{{- if not (or (kindIs "map" $v) (kindIs "invalid" $v)) }}
{{ $k }} = {{ include "its.tomlValue" $v }}
{{- end }}
{{- end }}
{{- range $k, $v := $m }}
{{- if kindIs "map" $v }}
{{- $name := ternary $k (printf "%s.%s" $prefix $k) (eq $prefix "") }}

[{{ $name }}]
{{- include "its.toml" (list $name $v) }}
{{- end }}
{{- end }}
{{- end -}}

{{/* One value: string, bool, number, list or inline table. */}}
{{- define "its.tomlValue" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- toJson $v -}}
{{- else if kindIs "bool" $v -}}
{{- $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "float32" $v) -}}
{{- if eq (float64 $v) (floor $v) -}}{{- int64 $v -}}{{- else -}}{{- $v -}}{{- end -}}
{{- else if or (kindIs "int" $v) (kindIs "int64" $v) (kindIs "int32" $v) (kindIs "uint64" $v) -}}
{{- $v -}}
{{- else if kindIs "slice" $v -}}
[{{- range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "its.tomlValue" $e }}{{ end -}}]
{{- else if kindIs "map" $v -}}
{ {{- $first := true }}{{ range $k, $e := $v }}{{ if not (kindIs "invalid" $e) }}{{ if not $first }}, {{ end }}{{ $k }} = {{ include "its.tomlValue" $e }}{{ $first = false }}{{ end }}{{ end -}} }
{{- else -}}
{{- fail (printf "config: cannot write %v (%s) as TOML" $v (kindOf $v)) -}}
{{- end -}}
{{- end -}}

{{/* Deep merge in place: (list dst src); src wins, maps merge, everything else replaces. */}}
{{- define "its.merge" -}}
{{- $dst := index . 0 -}}
{{- $src := index . 1 -}}
{{- range $k, $v := $src -}}
{{- if and (kindIs "map" $v) (kindIs "map" (index $dst $k)) -}}
{{- include "its.merge" (list (index $dst $k) $v) -}}
{{- else -}}
{{- $_ := set $dst $k $v -}}
{{- end -}}
{{- end -}}
{{- end -}}

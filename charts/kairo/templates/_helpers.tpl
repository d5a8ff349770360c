{{/*
Helpers shared by the templates. Object names are fixed (the workflow templates name them), so the
helpers give labels, image references and the cluster config rather than names.
*/}}

{{/* The chart label value: name-version. */}}
{{- define "kairo.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels every object carries. */}}
{{- define "kairo.labels" -}}
app.kubernetes.io/name: kairo
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: kairo
helm.sh/chart: {{ include "kairo.chart" . }}
{{- end -}}

{{/* The step images' tag: images.tag, else the chart's appVersion (the kairo version). */}}
{{- define "kairo.imageTag" -}}
{{- .Values.images.tag | default .Chart.AppVersion -}}
{{- end -}}

{{/* The full reference of one step image: include "kairo.image" (list $ "kairo-provision"). */}}
{{- define "kairo.image" -}}
{{- $root := index . 0 -}}
{{- printf "%s/%s:%s" (trimSuffix "/" $root.Values.images.repository) (index . 1) (include "kairo.imageTag" $root) -}}
{{- end -}}

{{/* Name of a cluster-scoped object: namespaced, since the chart may be installed in several namespaces. */}}
{{- define "kairo.clusterName" -}}
{{- $root := index . 0 -}}
{{- printf "%s-%s" (index . 1) $root.Release.Namespace | trunc 253 -}}
{{- end -}}

{{/*
The cluster config (kairo.cluster.ClusterConfig) as YAML: the values above, then clusterConfig merged
over them. Workflows run in the release namespace as kairo-workflow.
*/}}
{{- define "kairo.clusterConfig" -}}
{{- $p := .Values.provisioner -}}
{{- $config := dict
  "provisioner" (dict
    "kind" $p.kind
    "azure" (dict "subscriptionId" $p.azure.subscriptionId "resourceGroup" $p.azure.resourceGroup "clusterName" $p.azure.clusterName)
    "karpenter" (dict "nodeClassRef" $p.karpenter.nodeClassRef)
    "gpuTaint" $p.gpuTaint)
  "registry" (dict "anonymous" .Values.registry.anonymous "plainHttp" .Values.registry.plainHttp)
  "images" (dict "repository" .Values.images.repository "tag" (include "kairo.imageTag" .) "pullPolicy" .Values.images.pullPolicy)
  "argo" (dict "server" .Values.argo.server "uiUrl" .Values.argo.uiUrl "namespace" .Release.Namespace
               "serviceAccount" "kairo-workflow" "artifactRepositoryRef" .Values.artifactRepository.key)
  "storage" (dict "storageClassName" .Values.workVolume.storageClassName)
-}}
{{- toYaml (mustMergeOverwrite $config (deepCopy .Values.clusterConfig)) -}}
{{- end -}}

{{/*
Refuse to take over a CustomResourceDefinition another owner installed (Kaito's, most often):
include "kairo.refuseForeignCRD" (dict "existing" $found "release" .Release "name" "workspaces.kaito.sh").
Offline rendering (helm template) finds nothing and passes.
*/}}
{{- define "kairo.refuseForeignCRD" -}}
{{- if .existing -}}
{{- $annotations := .existing.metadata.annotations | default dict -}}
{{- $owner := index $annotations "meta.helm.sh/release-name" | default "" -}}
{{- $ownerNamespace := index $annotations "meta.helm.sh/release-namespace" | default "" -}}
{{- if or (ne $owner .release.Name) (ne $ownerNamespace .release.Namespace) -}}
{{- fail (printf "workspaceCRD.install: the CustomResourceDefinition %s already exists and belongs to %s, not to this release — Kaito's CRD serves kairo as it is: set workspaceCRD.install=false" .name (ternary (printf "release %s/%s" $ownerNamespace $owner) "another installer (Kaito?)" (ne $owner ""))) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The rules Argo's executor needs in every workflow pod: it records outputs as WorkflowTaskResults
(Argo 3.4+); older executors read and annotate their own pod.
*/}}
{{- define "kairo.executorRules" -}}
- apiGroups: ["argoproj.io"]
  resources: ["workflowtaskresults"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "patch"]
{{- end -}}

{{/*
The teardown workflow a deleted Workspace gets: `kairo-step cleanup --ephemeral true --workspace-deleted` as
kairo-provision, with the cluster config mounted. Its parameter `workspace` is set by the Sensor. Kubernetes
removes the inference Deployment the Workspace owned in the background: cleanup waits for it (bounded), and
exits 75 when it is still there, which the retries below try again. The pod runs as the images' user
(kairo.images.IMAGE_UID).
*/}}
{{- define "kairo.teardownWorkflow" -}}
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: kairo-teardown-
  namespace: {{ .Release.Namespace }}
  labels:
    app.kubernetes.io/part-of: kairo
    app.kubernetes.io/component: teardown
    kairo.sh/workspace: ""
spec:
  entrypoint: teardown
  serviceAccountName: kairo-provision
  arguments:
    parameters:
      - name: workspace
        value: ""
  ttlStrategy:
    secondsAfterCompletion: 86400
  securityContext:
    runAsNonRoot: true
    runAsUser: 10001
    runAsGroup: 10001
    seccompProfile:
      type: RuntimeDefault
  volumes:
    - name: cluster-config
      configMap:
        name: kairo-cluster
    - name: tmp
      emptyDir: {}
  templates:
    - name: teardown
      retryStrategy:
        limit: "3"
        retryPolicy: Always
        expression: asInt(lastRetry.exitCode) != 2
        # no backoff.cap: Argo 3.6 does not know it, and three retries (30 s, 60 s, 120 s) never reach one
        backoff:
          duration: 30s
          factor: 2
      container:
        image: {{ include "kairo.image" (list . "kairo-provision") }}
        imagePullPolicy: {{ .Values.images.pullPolicy }}
        command: ["kairo-step"]
        args:
          - cleanup
          - --workspace
          - {{ `"{{workflow.parameters.workspace}}"` }}
          - --namespace
          - {{ `"{{workflow.namespace}}"` }}
          - --ephemeral
          - "true"
          - --workspace-deleted
        volumeMounts:
          - name: cluster-config
            mountPath: /etc/kairo/cluster.yaml
            subPath: cluster.yaml
            readOnly: true
          - name: tmp
            mountPath: /tmp
        resources:
          requests:
            cpu: 100m
            memory: 256Mi
          limits:
            cpu: 500m
            memory: 512Mi
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities:
            drop: ["ALL"]
{{- end -}}

{{/*
A WorkflowTemplate generated from kairo.pipelines (files/, `make chart`): include "kairo.workflowTemplate"
(list $ "files/workflowtemplate-tuning.yaml"). What depends on the cluster comes from the values: image repository
and tag (the generator writes placeholders), pull policy, the GPU taint the GPU steps tolerate, the work volume's
StorageClass and the artifact repository. Timeouts are kairo.cluster's defaults, baked in when the file was generated.
*/}}
{{- define "kairo.workflowTemplate" -}}
{{- $root := index . 0 }}
{{- $file := index . 1 }}
{{- $text := $root.Files.Get $file }}
{{- $text = $text | replace "KAIRO_IMAGE_REPOSITORY" (trimSuffix "/" $root.Values.images.repository) | replace "KAIRO_IMAGE_TAG" (include "kairo.imageTag" $root) }}
{{- $template := $text | fromYaml }}
{{- $_ := set $template.metadata "namespace" $root.Release.Namespace }}
{{- $_ := set $template.metadata "labels" (merge (include "kairo.labels" $root | fromYaml) ($template.metadata.labels | default dict)) }}
{{- $taint := $root.Values.provisioner.gpuTaint }}
{{- range $template.spec.templates }}
{{- if .container }}
{{- $_ := set .container "imagePullPolicy" $root.Values.images.pullPolicy }}
{{- end }}
{{- if .tolerations }}
{{- $_ := set . "tolerations" (list (dict "key" $taint.key "operator" "Equal" "value" $taint.value "effect" $taint.effect)) }}
{{- end }}
{{- end }}
{{- $storageClass := $root.Values.workVolume.storageClassName }}
{{- if $storageClass }}
{{- range $template.spec.volumeClaimTemplates }}
{{- $_ := set .spec "storageClassName" $storageClass }}
{{- end }}
{{- end }}
{{- with $root.Values.artifactRepository }}
{{- if or .configMap .key }}
{{- $_ := set $template.spec "artifactRepositoryRef" (dict "configMap" (.configMap | default "artifact-repositories") "key" (.key | default "default")) }}
{{- end }}
{{- end }}
{{ toYaml $template }}
{{- end -}}

{{/*
A Sensor submitting a generated WorkflowTemplate for each Workspace event of one kind, its parameters mapped from
the Workspace by files/events/<mapping>-parameters.yaml: include "kairo.workspaceSensor" (dict "root" $ "kind"
"tuning" "prefix" "workspace" "mapping" "workspace" "verb" "tune"). Status patches do not change
metadata.generation, so the workflow's own status writes never start another run.
*/}}
{{- define "kairo.workspaceSensor" -}}
{{- $root := .root }}
{{- $kind := .kind }}
{{- $prefix := .prefix }}
{{- $mapping_name := .mapping }}
{{- $verb := .verb }}
{{- $template := $root.Files.Get (printf "files/workflowtemplate-%s.yaml" $kind) | fromYaml }}
{{- $mapping := $root.Files.Get (printf "files/events/%s-parameters.yaml" $mapping_name) | fromYaml }}
{{- $parameters := list }}
{{- range $template.spec.arguments.parameters }}
{{- if hasKey $mapping .name }}
{{- $parameters = append $parameters (dict "name" .name "default" (.value | default "" | toString) "template" (index $mapping .name)) }}
{{- end }}
{{- end }}
apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: kairo-{{ $kind }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "kairo.labels" $root | nindent 4 }}
    app.kubernetes.io/component: events
spec:
  eventBusName: {{ $root.Values.events.eventBusName }}
  template:
    serviceAccountName: kairo-events
  dependencies:
    - name: {{ $prefix }}-added
      eventSourceName: kairo-workspaces
      eventName: {{ $prefix }}-added
    - name: {{ $prefix }}-updated
      eventSourceName: kairo-workspaces
      eventName: {{ $prefix }}-updated
      filters:
        exprs:
          # Only a spec change: the API server bumps metadata.generation for spec edits, never for status.
          - expr: generation != previous
            fields:
              - name: generation
                path: body.metadata.generation
              - name: previous
                path: oldBody.metadata.generation
  triggers:
    {{- range $dependency := list (printf "%s-added" $prefix) (printf "%s-updated" $prefix) }}
    - template:
        name: {{ $verb }}-on-{{ trimPrefix (printf "%s-" $prefix) $dependency }}
        conditions: {{ $dependency }}
        argoWorkflow:
          operation: submit
          source:
            resource:
              apiVersion: argoproj.io/v1alpha1
              kind: Workflow
              metadata:
                generateName: kairo-{{ $kind }}-
                namespace: {{ $root.Release.Namespace }}
                labels:
                  app.kubernetes.io/part-of: kairo
                  kairo.sh/workspace: ""
              spec:
                workflowTemplateRef:
                  name: kairo-{{ $kind }}
                arguments:
                  parameters:
                    {{- range $parameters }}
                    - name: {{ .name }}
                      value: {{ .default | quote }}
                    {{- end }}
          parameters:
            - src:
                dependencyName: {{ $dependency }}
                dataKey: body.metadata.name
              dest: metadata.labels.kairo\.sh/workspace
            - src:
                dependencyName: {{ $dependency }}
                dataTemplate: {{ `{{ .Input.body.metadata.name }}-` | quote }}
              dest: metadata.generateName
            {{- range $index, $parameter := $parameters }}
            - src:
                dependencyName: {{ $dependency }}
                dataTemplate: {{ $parameter.template | quote }}
                value: {{ $parameter.default | quote }}
              dest: spec.arguments.parameters.{{ $index }}.value
            {{- end }}
      retryStrategy:
        steps: 3
        duration: 10s
    {{- end }}
{{- end -}}

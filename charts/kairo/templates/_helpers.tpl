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

"""The cluster config: choices an operator makes once per cluster, not per workspace.

Read from `--cluster-config FILE` (YAML), or in the cluster from the chart's ConfigMap mounted at
`/etc/kairo/cluster.yaml`. Every field has a default, so an empty file is a valid config.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kairo.contract import CLUSTER_CONFIG_PATH
from kairo.problems import InvalidInput, Problem, path_of

IN_CLUSTER_PATH = Path(CLUSTER_CONFIG_PATH)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AzureSettings(_Section):
    """Where the AKS cluster lives; credentials come from DefaultAzureCredential (workload identity)."""

    subscriptionId: str = Field("", description="Azure subscription holding the AKS cluster")
    resourceGroup: str = Field("", description="Resource group of the AKS cluster")
    clusterName: str = Field("", description="Name of the AKS managed cluster")
    armEndpoint: str = Field("https://management.azure.com", description="ARM endpoint (sovereign clouds, tests)")
    operationTimeoutSeconds: int = Field(1800, ge=1, description="Longest wait for one agent-pool operation")


class NodeClassRef(_Section):
    group: str = Field("karpenter.azure.com", description="API group of the node class")
    kind: str = Field("AKSNodeClass", description="Kind of the node class")
    name: str = Field("default", description="Name of the node class")


class KarpenterSettings(_Section):
    nodeClassRef: NodeClassRef = Field(default_factory=NodeClassRef, description="NodeClass the NodeClaim uses")


class Taint(_Section):
    key: str = "sku"
    value: str = "gpu"
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] = "NoSchedule"


class Provisioner(_Section):
    kind: Literal["azure", "karpenter", "existing"] = Field(
        "existing", description="How GPU nodes appear: AKS node pools, Karpenter NodeClaims, or nodes already there"
    )
    azure: AzureSettings = Field(default_factory=AzureSettings)
    karpenter: KarpenterSettings = Field(default_factory=KarpenterSettings)
    gpuTaint: Taint = Field(default_factory=Taint, description="Taint on GPU nodes; GPU pods tolerate it")
    nodeReadyTimeoutSeconds: int = Field(1800, ge=1, description="Longest wait for nodes to be Ready with GPUs")


class Registry(_Section):
    anonymous: list[str] = Field(
        default_factory=list, description="Registry hosts that take pushes without credentials (no imagePushSecret)"
    )
    plainHttp: list[str] = Field(default_factory=list, description="Registry hosts reached over plain HTTP")
    retries: int = Field(3, ge=0, description="Attempts after the first on a failed push or pull")


class Images(_Section):
    repository: str = Field("ghcr.io/kairo-project", description="Where the step images live")
    tag: str = Field("", description="Tag of the step images; empty means the kairo version")
    pullPolicy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    vllm: str = Field("vllm/vllm-openai:v0.11.0",
                      description="vLLM's OpenAI server image, for workspaces annotated kaito.sh/runtime: vllm (pin a "
                                  "digest in production: tag@sha256:…)")


class Network(_Section):
    allow: list[str] = Field(
        default_factory=list,
        description="CIDRs or host names that dataset URLs may reach although private, loopback or link-local",
    )

    @field_validator("allow")
    @classmethod
    def _cidrs_or_hosts(cls, values: list[str]) -> list[str]:
        for value in values:
            if "/" in value:
                ipaddress.ip_network(value, strict=False)
        return values


class Limits(_Section):
    maxDatasetBytes: int = Field(20 * 1024**3, ge=1, description="Largest dataset download, all files together")
    maxRows: int = Field(10_000_000, ge=1, description="Most rows a dataset may have")
    maxRowChars: int = Field(1_000_000, ge=1, description="Longest row (characters over all messages)")
    maxDroppedFraction: float = Field(0.1, ge=0, le=1, description="Share of rows that may be dropped as unusable")
    minDownloadBytesPerSecond: int = Field(
        10 * 1024, ge=0, description="A dataset download slower than this (over each --timeout seconds) is cut off; 0: none"
    )


class Timeouts(_Section):
    pendingSeconds: int = Field(
        1800, ge=60, description="A GPU step that cannot be scheduled fails after this long (counts Pending time)"
    )
    trainSeconds: int = Field(48 * 3600, ge=60, description="Longest a train step may run")
    stepSeconds: int = Field(3600, ge=60, description="Longest any other step may run")
    downloadSeconds: int = Field(
        3300, ge=1, description="Longest the dataset download may take, every file and retry together"
    )
    rolloutSeconds: int = Field(1800, ge=30, description="Longest wait for the inference Deployment to roll out")


class Argo(_Section):
    server: str = Field("", description="Argo Server URL for `kairo submit` (token from ARGO_TOKEN)")
    namespace: str = Field("argo", description="Namespace workflows run in")
    serviceAccount: str = Field("kairo-workflow", description="ServiceAccount of the workflow pods")
    uiUrl: str = Field("", description="Argo UI base URL for links; defaults to the server URL")
    artifactRepositoryRef: str = Field("", description="ConfigMap key of the artifact repository, if not the default")


class Storage(_Section):
    storageClassName: str = Field("", description="StorageClass of the work volume; empty uses the cluster default")
    readWriteManyClassName: str = Field(
        "", description="A ReadWriteMany StorageClass (Azure Files, NFS, CSI…): the work volume of a run on several "
                        "nodes, which every node mounts (resource.count > 1 needs it)"
    )


class Training(_Section):
    """How a tuning run on several nodes is run: by an engine already in the cluster, never a launcher of kairo's."""

    engine: Literal["jobset", "trainjob"] = Field(
        "jobset", description="jobset: a JobSet (kubernetes-sigs/jobset) of N indexed pods; trainjob: a Kubeflow "
                              "Trainer TrainJob on `runtime`"
    )
    runtime: str = Field("torch-distributed", description="The ClusterTrainingRuntime a TrainJob names (engine trainjob)")
    maxRestarts: int = Field(3, ge=0, description="How often a failed multi-node run restarts as a whole, resuming "
                                                   "from its last checkpoint")
    rendezvousPort: int = Field(29500, ge=1, le=65535, description="The port torchrun's c10d rendezvous listens on")


class ClusterConfig(_Section):
    """Everything kairo needs to know about the cluster it runs in."""

    provisioner: Provisioner = Field(default_factory=Provisioner)
    registry: Registry = Field(default_factory=Registry)
    images: Images = Field(default_factory=Images)
    network: Network = Field(default_factory=Network)
    limits: Limits = Field(default_factory=Limits)
    timeouts: Timeouts = Field(default_factory=Timeouts)
    argo: Argo = Field(default_factory=Argo)
    storage: Storage = Field(default_factory=Storage)
    training: Training = Field(default_factory=Training)
    local: bool = Field(False, description="Set by `kairo run --local`: loopback dataset URLs are allowed")

    def registry_is_anonymous(self, host: str) -> bool:
        return host in self.registry.anonymous

    def registry_is_plain_http(self, host: str) -> bool:
        return host in self.registry.plainHttp


def load_cluster_config(path: str | os.PathLike[str] | None = None) -> ClusterConfig:
    """Read the cluster config from `path`, the in-cluster ConfigMap, or defaults; clear errors on typos."""
    if path is None and "KAIRO_CLUSTER_CONFIG" in os.environ:
        path = os.environ["KAIRO_CLUSTER_CONFIG"]
    if path is None and IN_CLUSTER_PATH.is_file():  # an optional ConfigMap by subPath may leave a folder
        path = IN_CLUSTER_PATH
    if path is None:
        return ClusterConfig()
    source = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise InvalidInput([Problem("", f"cannot read the cluster config: {err}")], source) from err
    if not isinstance(data, dict):
        raise InvalidInput([Problem("", "the cluster config must be a mapping")], source)
    try:
        return ClusterConfig.model_validate(data)
    except ValidationError as err:
        problems = [Problem(path_of(e["loc"]), e["msg"]) for e in err.errors()]
        raise InvalidInput(problems, source) from err

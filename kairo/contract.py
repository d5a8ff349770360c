"""The step ↔ pipeline contract: where a step's pod finds things, who it runs as, what it must write.

One home for the values both sides type: the templates (`kairo.pipelines`), the inference Deployment
(`kairo.manifests.inference`), the steps (`kairo.stepkit` and the steps themselves), the images
(`kairo.images`) and the cluster config's in-cluster path. Plain values only — no Hera, no Kubernetes
client — so everything may import it. docs/steps.md describes the same contract for people.
"""

from __future__ import annotations

# -- who runs ------------------------------------------------------------------------------------------

# The `kairo` user every image creates and runs as (`USER 10001:10001`); every pod runs as it too, so files
# one step writes on the work volume are readable by the next (safetensors writes 0600).
IMAGE_UID = 10001

# Service accounts by role (docs/steps.md, "Service accounts"): provisioning nodes, and the namespace's
# Deployments, Services and Workspace status.
SA_PROVISION = "kairo-provision"
SA_DEPLOY = "kairo-deploy"

# -- where things are mounted --------------------------------------------------------------------------

WORKDIR = "/kairo/work"  # the work volume every step shares: data/, model/, adapter/, checkpoints/
TMP = "/tmp"  # an emptyDir: the root filesystem is read-only
OUTPUTS = f"{TMP}/outputs"  # output parameters and artifacts; Argo reads them from here after the step
HOME = TMP  # images set HOME to a folder of the read-only root; tools that write under ~ need it writable
INPUT_PATH = "/kairo/input"  # tuning.input.volumeSource
OUTPUT_PATH = "/kairo/output"  # tuning.output.volumeSource
ADAPTER_SOURCE_PATH = "/kairo/adapter-source"  # an inference adapter's volumeSource, in its pull task's pod
ADAPTERS_DIR = f"{WORKDIR}/adapters"  # an inference workspace's adapters, one folder per name

CLUSTER_CONFIG_MAP = "kairo-cluster"
CLUSTER_CONFIG_PATH = "/etc/kairo/cluster.yaml"
TRAINING_DIR = "/etc/kairo/training"
TRAINING_CONFIG = f"{TRAINING_DIR}/training_config.yaml"
URLS_DIR = "/etc/kairo/dataset"
URLS_FILE = f"{URLS_DIR}/urls.txt"

# Secrets arrive as files, never as arguments or environment in the rendered YAML.
SECRETS_DIR = "/etc/kairo/secrets"
DOCKER_CONFIG = ".dockerconfigjson"  # the key of a kubernetes.io/dockerconfigjson Secret
PUSH_SECRET_DIR = f"{SECRETS_DIR}/push"
PULL_SECRET_DIR = f"{SECRETS_DIR}/pull"
MODEL_PULL_SECRET_DIR = f"{SECRETS_DIR}/model-pull"
MODEL_TOKEN_DIR = f"{SECRETS_DIR}/model"  # a Hugging Face token under the key `token`
API_KEY_DIR = f"{SECRETS_DIR}/api-key"
API_KEY_SECRET_KEY = "api-key"  # the key of the Secret `kairo.sh/api-key-secret` names
PUSH_SECRET_FILE = f"{PUSH_SECRET_DIR}/{DOCKER_CONFIG}"
PULL_SECRET_FILE = f"{PULL_SECRET_DIR}/{DOCKER_CONFIG}"
MODEL_PULL_SECRET_FILE = f"{MODEL_PULL_SECRET_DIR}/{DOCKER_CONFIG}"
API_KEY_FILE = f"{API_KEY_DIR}/{API_KEY_SECRET_KEY}"

# -- what each step writes -----------------------------------------------------------------------------

# The output parameters each step writes into OUTPUTS (one file each); the templates declare exactly these,
# and a test reads every step's `write_output` calls to hold them to it.
STEP_OUTPUTS: dict[str, tuple[str, ...]] = {
    "workspace": ("gpus", "cpu", "memory"),
    "provision": ("nodes", "node-pool", "provisioner"),
    "deployed": ("adapter-ref", "dataset-digest", "eval-loss"),
    "download": ("rows", "eval-rows", "dropped", "digest", "tokens", "unchanged"),
    "fetch-model": ("model-dir", "revision"),
    "train": ("train-loss", "eval-loss", "steps"),
    "evaluate": ("decision", "new-loss", "old-loss", "message"),
    "push": ("digest", "ref", "tag"),
    "pull-adapter": ("digest", "ref", "refs"),
    "deploy": ("service-url",),
    "cleanup": ("outcome",),
}

# -- how every pod is secured --------------------------------------------------------------------------

# Kubernetes field names, so the Argo templates (through Hera's models) and the inference Deployment share them.
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": IMAGE_UID,
    "runAsGroup": IMAGE_UID,
    "fsGroup": IMAGE_UID,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}

"""vLLM as the inference runtime (`kaito.sh/runtime: vllm`, Kaito's annotation): the Deployment runs vLLM's
OpenAI server (the pinned `vllm/vllm-openai` image of the cluster config) on the same Service, port 80 → the
container's port, with the tuned adapter pulled by digest into /adapters/NAME and passed as a LoRA module.

The flags are vLLM's own, read from its source (vllm-project/vllm, stored commit 0052233):
- `--lora-modules NAME=PATH`: `BaseFrontendArgs.lora_modules` (vllm/entrypoints/openai/cli_args.py:75), parsed by
  `LoRAParserAction` (:32), whose "name=path" form is read at :49-51;
- `--host`, `--port`: `FrontendArgs.host` / `.port` (same file, class FrontendArgs; the flag is the field name
  with '-' for '_', `BaseFrontendArgs.add_cli_args`);
- `--enable-lora`, `--max-loras`, `--max-lora-rank`: `EngineArgs.add_cli_args`, the LoRAConfig group
  (vllm/engine/arg_utils.py, "# LoRA related configs");
- `--model`, `--revision`, `--served-model-name`, `--max-model-len`, `--download-dir`: ModelConfig / LoadConfig
  fields registered by the same method (EngineArgs.create_model_config / create_load_config pass them on).
vLLM's LoRA rules (vllm/lora/peft_helper.py, vllm/config/lora.py; GOTCHAS.md): no `modules_to_save`, no DoRA,
`bias` "none", and `r` within `--max-lora-rank`, whose allowed values are 1, 8, 16, 32, 64, 128, 256, 320, 512.

Why an adapter change rolls vLLM's pods (kairo's server switches in place instead, kairo.manifests.adapters):
vLLM reads `--lora-modules` at start only. Its runtime loading, `POST /v1/load_lora_adapter` with a
`lora_path` on the server's own disk, exists only when the server starts with VLLM_ALLOW_RUNTIME_LORA_UPDATING,
and vLLM warns that it "should ONLY be used for local development!" (vllm/entrypoints/serve/lora/api_router.py,
`attach_router`, lines 25-31, the route at :40; stored commit 27873ca). Using it would also need a process of
kairo's inside the pod to pull each new image by digest onto that disk and call the route (vLLM pulls nothing),
one that cannot be run against vLLM on our machines; and `--max-loras` / `--max-lora-rank` are fixed at start, so
a further adapter, or one of a larger rank, is refused at load anyway. So the adapters stay in the pod template
(an init container each pulls one by digest): a new digest, an adapter added or removed rolls the pods, and a
restarted pod serves exactly the declared set. Rolling costs a restart of vLLM (`maxSurge: 0`: downtime on one
GPU node), which the README says.

What runs here is checked by schema only: no vLLM build runs on our machines (none for CPU, none on the GPU
machine), so the rendered Deployment is validated strictly (kubernetes-validate) and the arguments against
the flags above, never by starting vLLM. vLLM serves no Kaito `/chat` (nor does Kaito's vLLM runtime): the
smoke test asks `/v1/chat/completions` only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py: MaxLoRARanks
MODELS_DIR = "/kairo/cache/huggingface"


@dataclass(frozen=True)
class LoraModule:
    """One adapter vLLM serves: the name requests use, the folder it was pulled to, its LoRA rank."""

    name: str
    path: str
    rank: int


def adapter_problems(name: str, adapter_config: dict[str, Any]) -> list[str]:
    """What vLLM refuses in a PEFT adapter_config.json (empty when vLLM loads it)."""
    problems = []
    if adapter_config.get("modules_to_save"):
        problems.append(f"{name}: modules_to_save {adapter_config['modules_to_save']} — vLLM loads LoRA weights only; "
                        "train without modules_to_save")
    if adapter_config.get("use_dora"):
        problems.append(f"{name}: use_dora — vLLM does not serve DoRA adapters")
    if adapter_config.get("bias", "none") != "none":
        problems.append(f"{name}: bias {adapter_config.get('bias')!r} — vLLM needs bias 'none'")
    rank = adapter_config.get("r")
    if not isinstance(rank, int) or rank < 1 or rank > VLLM_RANKS[-1]:
        problems.append(f"{name}: r {rank!r} — vLLM serves LoRA ranks from 1 to {VLLM_RANKS[-1]}")
    return problems


def max_lora_rank(ranks: list[int]) -> int:
    """The smallest rank vLLM allows for --max-lora-rank that holds every adapter's."""
    wanted = max(ranks, default=1)
    return next(r for r in VLLM_RANKS if r >= wanted)


def lora_args(modules: list[LoraModule]) -> list[str]:
    """`--enable-lora`, `--lora-modules NAME=PATH…`, `--max-loras` and `--max-lora-rank` for `modules`."""
    if not modules:
        return []
    return ["--enable-lora", "--lora-modules", *(f"{m.name}={m.path}" for m in modules),
            "--max-loras", str(len(modules)), "--max-lora-rank", str(max_lora_rank([m.rank for m in modules]))]


def server_args(model: str, revision: str, served_name: str, port: int, modules: list[LoraModule],
                max_model_len: int = 0) -> list[str]:
    """The arguments of vLLM's OpenAI server (its image's entrypoint) for one base model and its adapters."""
    args = ["--model", model]
    if revision:
        args += ["--revision", revision]
    args += ["--served-model-name", served_name, "--download-dir", MODELS_DIR,
             "--host", "0.0.0.0", "--port", str(port)]
    if max_model_len:
        args += ["--max-model-len", str(max_model_len)]
    return args + lora_args(modules)


def probes(port_name: str = "http") -> dict[str, Any]:
    """vLLM answers /health once its engine is up: readiness on it, and a startup probe long enough for a load."""
    health = {"httpGet": {"path": "/health", "port": port_name}}
    return {
        "startupProbe": {**health, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 180},
        "readinessProbe": {**health, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 3},
        "livenessProbe": {**health, "periodSeconds": 10, "timeoutSeconds": 5, "failureThreshold": 6},
    }

"""vLLM's rules for a LoRA adapter: what makes vLLM (Kaito's default inference runtime) refuse to load it.

Read from vLLM's sources: `vllm/lora/peft_helper.py` refuses `modules_to_save`, DoRA (`use_dora`) and a bias
other than `none`, and a rank `r` above the server's `--max-lora-rank`; `vllm/config/lora.py` allows only
1, 8, 16, 32, 64, 128, 256, 320 and 512 for `--max-lora-rank` (`MaxLoRARanks`), default 16. So a rank up to
16 loads on a default server, a higher one needs the flag raised to the next allowed value, and one above 512
never loads.

`adapter_findings(adapter_config)` checks a PEFT `adapter_config.json` (what train writes; `kairo.json`
records the result), `lora_findings(LoraConfig)` the tuning config that would make one (`kairo validate`
warns). Pure: no vLLM, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vllm/config/lora.py MaxLoRARanks
DEFAULT_MAX_LORA_RANK = 16


@dataclass(frozen=True)
class Finding:
    """One rule the adapter breaks: the field, its value, and what vLLM does with it."""

    field: str
    value: Any
    says: str

    def __str__(self) -> str:
        return f"{self.field}={self.value!r}: {self.says}"


def needed_max_lora_rank(r: int) -> int | None:
    """The smallest `--max-lora-rank` vLLM accepts that holds rank `r`; None above 512."""
    return next((allowed for allowed in MAX_LORA_RANKS if allowed >= r), None)


def adapter_findings(adapter_config: Mapping[str, Any], max_lora_rank: int = DEFAULT_MAX_LORA_RANK) -> list[Finding]:
    """The rules of vLLM the PEFT adapter config breaks, for a server started with `--max-lora-rank`."""
    found = []
    if adapter_config.get("modules_to_save"):
        found.append(Finding("modules_to_save", list(adapter_config["modules_to_save"]),
                             "vLLM refuses the adapter (it loads LoRA weights only, not whole trained modules) — "
                             "train the module through LoRA instead: add it to target_modules"))
    if adapter_config.get("use_dora"):
        found.append(Finding("use_dora", True, "vLLM refuses the adapter: it does not support DoRA"))
    bias = adapter_config.get("bias") or "none"
    if bias != "none":
        found.append(Finding("bias", bias, "vLLM refuses the adapter: it loads LoRA adapters without bias only "
                                           "(bias: none)"))
    r = adapter_config.get("r")
    if isinstance(r, int) and r > max_lora_rank:
        needed = needed_max_lora_rank(r)
        fix = (f"start vLLM with --max-lora-rank {needed} (allowed: {', '.join(map(str, MAX_LORA_RANKS))})"
               if needed else f"vLLM's largest --max-lora-rank is {MAX_LORA_RANKS[-1]}: use r <= {MAX_LORA_RANKS[-1]}")
        found.append(Finding("r", r, f"vLLM refuses a rank above its --max-lora-rank ({max_lora_rank}"
                                     f"{', the default' if max_lora_rank == DEFAULT_MAX_LORA_RANK else ''}) — {fix}"))
    return found


def lora_findings(lora: Any, max_lora_rank: int = DEFAULT_MAX_LORA_RANK) -> list[Finding]:
    """The same rules for a tuning config's LoraConfig section (`kairo.training.config.LoraSection`)."""
    extras = lora.extras() if hasattr(lora, "extras") else {}
    return adapter_findings({"r": lora.r, "bias": lora.bias, "modules_to_save": lora.modules_to_save,
                             "use_dora": extras.get("use_dora")}, max_lora_rank)


def record(adapter_config: Mapping[str, Any], max_lora_rank: int = DEFAULT_MAX_LORA_RANK) -> dict[str, Any]:
    """What `kairo.json` says about vLLM: `vllm_loadable` and, when not, `vllm_reasons`."""
    found = adapter_findings(adapter_config, max_lora_rank)
    out: dict[str, Any] = {"vllm_loadable": not found}
    if found:
        out["vllm_reasons"] = [str(f) for f in found]
    return out

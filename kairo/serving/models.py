"""The served models: one base model in memory, each adapter loaded into it by name, one tokenizer.

PEFT keeps every adapter beside the base weights, and one `generate` call serves rows of different adapters
(and of the base model) — so N adapters cost one base model's memory and share its batches. Such mixed
batches run through the slots' LoRA weights stacked per layer (`mixed_lora`), or through PEFT's own
`adapter_names=` for adapters the stacks cannot reproduce. A served name points at a PEFT slot: a switch loads the new weights into a second slot beside the
running one (`load_slot`), points the name at it, and unloads the old slot once no row uses it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kairo import exitcodes
from kairo.serving.mixed_lora import StackedLora
from kairo.serving.options import COMBINED_ADAPTER, AdapterSource, ServerConfig

log = logging.getLogger("kairo.serve")

# A plain turn-by-turn layout for tokenizers that ship no chat template.
FALLBACK_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


class ModelLoadError(Exception):
    """The model or an adapter could not be loaded; `exit_code` says whether a retry can help."""

    def __init__(self, message: str, exit_code: int = exitcodes.BAD_INPUT):
        super().__init__(message)
        self.exit_code = exit_code


class PromptError(ValueError):
    """The messages cannot be laid out as a prompt (the chat template refused them)."""


@dataclass
class ServedModels:
    """The loaded model (a PeftModel when adapters are served), its tokenizer, and what they are called."""

    model: Any
    tokenizer: Any
    preset: str
    adapters: list[str]
    context_length: int
    eos_ids: frozenset[int]
    pad_id: int
    device: str
    quantized: bool = False
    adapter_info: dict[str, dict[str, Any]] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)  # served name → the digest of its weights ('' unknown)
    slots: dict[str, str] = field(default_factory=dict)  # served name → PEFT adapter name (the name itself at start)
    # mixed batches through stacked LoRA weights (None: always PEFT's adapter_names= path)
    stacked: StackedLora | None = field(default_factory=StackedLora, repr=False)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)  # generate vs load/unload
    _waiting: list[int] = field(default_factory=list, repr=False)  # loads waiting for the lock (see `exclusive`)

    @property
    def names(self) -> list[str]:
        """Every name a request may put in `model`: the adapters, then the base model (the preset)."""
        return [*self.adapters, self.preset]

    def adapter_for(self, name: str) -> str | None:
        """The PEFT slot serving `name` (None for the base model); KeyError when nothing is called that."""
        if name == self.preset:
            return None
        if name in self.adapters:
            return self.slots.get(name, name)
        raise KeyError(name)

    @property
    def loaded_slots(self) -> set[str]:
        """The PEFT adapters in memory (served or about to be retired)."""
        return set(getattr(self.model, "peft_config", {}) or {})

    @contextlib.contextmanager
    def active(self, adapter: str | None) -> Iterator[None]:
        """Run the block with `adapter` switched on, or with none (the base model) when it is None."""
        if not self.loaded_slots:
            yield
        elif adapter is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(adapter)
            yield

    def shared_calls(self, slots: list[str | None]) -> list[list[int]]:
        """The rows (indices into `slots`) that may share one `generate` call: all of them, unless some slot is one
        the stacks do not reproduce (DoRA, modules_to_save…) — each of those runs alone, as PEFT's own mixed path
        refuses DoRA and fails on a modules_to_save adapter beside one without it (peft 0.21)."""
        distinct = set(slots)
        if len(distinct) == 1 or self.stacked is None:
            return [list(range(len(slots)))]
        covered = self.stacked.covered(self.model)
        alone = sorted(s for s in distinct if s is not None and s not in covered)
        groups = [[i for i, s in enumerate(slots) if s not in alone]]
        groups += [[i for i, s in enumerate(slots) if s == slot] for slot in alone]
        return [g for g in groups if g]

    @contextlib.contextmanager
    def rows(self, slots: list[str | None], num_beams: int = 1) -> Iterator[dict[str, Any]]:
        """Run the block with row i of a batch on the slot `slots[i]` (None: the base model); yields what
        `generate` needs besides (PEFT's `adapter_names=` when it is PEFT that mixes the rows).

        One slot for every row: PEFT's plain path (`set_adapter`). Several: the stacked LoRA layers (rows of a
        slot they do not reproduce come one slot at a time: `shared_calls`); without stacks, PEFT's own path."""
        distinct = set(slots)
        if len(distinct) == 1:
            with self.active(slots[0]):
                yield {}
            return
        plain = distinct - {None}
        if self.stacked is not None and not self.model.training and plain <= self.stacked.covered(self.model):
            with self.stacked.rows(self.model, slots, num_beams):
                yield {}
            return
        extra: dict[str, Any] = {"adapter_names": [slot or "__base__" for slot in slots]}
        if num_beams > 1:  # PEFT repeats each row's adapter name per beam only when it sees num_beams
            extra["num_beams"] = num_beams
        yield extra

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """The model to oneself between two batches: the generation thread lets a waiting load go first, so a
        switch under steady load waits for one batch, not for a gap in the traffic."""
        self._waiting.append(1)
        try:
            with self.lock:
                yield
        finally:
            self._waiting.pop()

    def let_loads_go_first(self) -> None:
        """Called by the generation thread before it takes the lock for a batch."""
        while self._waiting:
            time.sleep(0.001)

    def load_slot(self, slot: str, path: Path) -> None:
        """Load the adapter in `path` into a new PEFT slot beside the served ones (the base model stays put)."""
        with self.exclusive():
            if self.stacked is not None:
                self.stacked.clear()  # built again, with the new slot, by the next mixed batch
            try:
                if not self.loaded_slots:
                    from peft import PeftModel

                    self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=slot)
                else:
                    self.model.load_adapter(str(path), adapter_name=slot)
            except (OSError, ValueError, RuntimeError, KeyError) as err:
                if slot in self.loaded_slots:
                    self.unload_slot(slot)
                raise ModelLoadError(f"cannot load the adapter from {path}: {err} — was it trained on "
                                     f"{self.preset}?") from err
            self.model.eval()

    def combine_slot(self, slot: str, weights: dict[str, float], combination_type: str) -> None:
        """Weigh the slots in `weights` (slot → weight) into a new slot beside the served ones, as at start."""
        with self.exclusive():
            if self.stacked is not None:
                self.stacked.clear()
            try:
                _combine(self.model, weights, combination_type, slot)
            except ModelLoadError:
                if slot in self.loaded_slots:
                    self.unload_slot(slot)
                raise
            self.model.eval()

    def unload_slot(self, slot: str) -> None:
        """Free a slot's weights; the rows that used it have finished."""
        with self.exclusive():
            if slot in self.loaded_slots:
                self.model.delete_adapter(slot)
            if self.stacked is not None:
                self.stacked.clear()  # the retired weights go with their stacks

    def serve(self, name: str, slot: str, digest: str, info: dict[str, Any]) -> str | None:
        """Point the served `name` at `slot` (added when new); the slot it had before, to retire, or None."""
        with self.lock:
            old = self.slots.get(name, name if name in self.adapters else None)
            self.slots[name] = slot
            self.digests[name] = digest
            self.adapter_info[name] = info
            if name not in self.adapters:
                self.adapters.append(name)
            return old if old != slot else None

    def stop_serving(self, name: str) -> str | None:
        """Take `name` off the served names; its slot, to retire once no row uses it."""
        with self.lock:
            if name not in self.adapters:
                return None
            self.adapters.remove(name)
            self.digests.pop(name, None)
            self.adapter_info.pop(name, None)
            return self.slots.pop(name, name)

    @property
    def vocab_size(self) -> int:
        """How many token ids the model has embeddings (and logits) for."""
        return int(self.model.get_input_embeddings().weight.shape[0])

    def encode_text(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """The prompt the model's chat template makes of `messages`, ending where the assistant speaks."""
        try:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as err:  # jinja raises its own errors, e.g. "roles must alternate"
            raise PromptError(f"the model's chat template refused these messages: {err}") from err
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: list[int], clean_up: bool = False) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=clean_up)


def load_models(config: ServerConfig) -> ServedModels:
    """Fetch what is missing, then load the base model, the tokenizer and every adapter."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kairo.presets import chat_template_path, get_preset

    transformers.utils.logging.disable_progress_bar()
    preset = get_preset(config.preset)
    base = _base_model_path(config)
    adapters = [(a.name, adapter_path(a, config)) for a in config.adapters]
    info = {name: adapter_info(name, path, config.preset) for name, path in adapters}

    device = config.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("--device cuda, but torch sees no GPU here")
    quantize = config.quantize
    if quantize == "auto":
        # A QLoRA adapter learned its deltas against the NF4 base: served on the full-precision base it answers
        # differently (on the quickstart's tiny model, wrongly: "Paris" in 4-bit, nonsense in float32). So the
        # base is loaded as it was trained, on the CPU too, where bitsandbytes' NF4 runs.
        trained_4bit = any(i.get("method") == "qlora" for i in info.values())
        quantize = "4bit" if trained_4bit else "none"

    kwargs: dict[str, Any] = {"trust_remote_code": preset.trust_remote_code, "use_safetensors": True,
                              "token": _token(config)}
    if preset.source.huggingface and config.model_dir is None:
        kwargs["revision"] = preset.source.huggingface.revision
    dtype = torch.float32
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    kwargs["dtype"] = dtype
    kwargs["device_map"] = "auto" if device == "cuda" else {"": "cpu"}
    if quantize == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    log.info("loading %s from %s on %s%s", config.preset, base, device, " in 4-bit" if quantize == "4bit" else "")
    try:
        tokenizer = AutoTokenizer.from_pretrained(base, **{k: v for k, v in kwargs.items() if k in
                                                            ("trust_remote_code", "token", "revision")})
        model = AutoModelForCausalLM.from_pretrained(base, **kwargs)
    except OSError as err:
        raise ModelLoadError(f"cannot load the base model from {base}: {err}", _load_exit_code(err)) from err
    _settle_tokenizer(tokenizer, chat_template_path(preset), [p for _, p in adapters])
    if quantize == "4bit" and device == "cpu":
        _avoid_cpu_packing_on_odd_shapes(model)

    if adapters:
        from peft import PeftModel

        current, path = adapters[0]
        try:
            model = PeftModel.from_pretrained(model, str(path), adapter_name=current)
            for current, path in adapters[1:]:  # noqa: B007 — `current` names the adapter that failed
                model.load_adapter(str(path), adapter_name=current)
        except (OSError, ValueError, RuntimeError) as err:
            raise ModelLoadError(f"cannot load adapter {current} from {path}: {err} — "
                                 f"was it trained on {config.preset}?") from err
        if config.weights:
            _combine(model, config.weights, config.combination_type, COMBINED_ADAPTER)
    model.eval()

    context = min(preset.context_length, config.max_model_len or preset.context_length)
    model_limit = getattr(model.config, "max_position_embeddings", None)
    if isinstance(model_limit, int) and model_limit > 0:
        context = min(context, model_limit)
    served = [n for n, _ in adapters]
    if config.weights:  # first: the model a request naming none gets, as Kaito serves only the combination
        served.insert(0, COMBINED_ADAPTER)
        info[COMBINED_ADAPTER] = {"combined": config.weights, "combination_type": config.combination_type}
    log.info("ready: %s", ", ".join([*(f"{n} (adapter)" for n in served), f"{config.preset} (base)"]))
    digests = {a.name: a.digest for a in config.adapters}
    return ServedModels(
        model=model, tokenizer=tokenizer, preset=config.preset, adapters=served,
        context_length=context, eos_ids=_eos_ids(model, tokenizer), pad_id=int(tokenizer.pad_token_id),
        device=device, quantized=quantize == "4bit", adapter_info=info,
        digests=digests | combined_digest(config.weights, digests),
        slots={n: n for n, _ in adapters},
        stacked=StackedLora() if config.mixed_batches == "stacked" else None,
    )


def combined_digest(weights: dict[str, float], digests: dict[str, str]) -> dict[str, str]:
    """{COMBINED_ADAPTER: what identifies its weights} (kairo.manifests.adapters `combination_digest`), or {} when
    nothing is combined."""
    from kairo.manifests.adapters import combination_digest

    if not weights:
        return {}
    return {COMBINED_ADAPTER: combination_digest({n: (digests.get(n, ""), w) for n, w in weights.items()})}


def _combine(model: Any, weights: dict[str, float], combination_type: str, adapter_name: str) -> None:
    """The adapters (PEFT slots) weighted into one, `adapter_name`, as Kaito's transformers runtime does, but kept
    beside them; at start it is COMBINED_ADAPTER, a switch makes the next one in a new slot (`combine_slot`).

    Kaito (presets/workspace/inference/text-generation/inference_api.py): each adapter's weight is the env var
    named after it, default 1.0 (:241-244; its controller sets it from `strength`,
    pkg/workspace/inference/preset_inferences.go:945-951), then `add_weighted_adapter(names, weights,
    combination_type, adapter_name="combined_adapter")` (:261-266) with combination_type "svd" by default
    (:96-97), and `set_adapter("combined_adapter")` (:267). Kaito then deletes the single adapters (:270-271);
    kairo keeps them, so each still answers by its own name.
    """
    names = list(weights)
    try:
        model.add_weighted_adapter(names, [weights[n] for n in names], adapter_name=adapter_name,
                                   combination_type=combination_type)
    except (ValueError, RuntimeError) as err:
        raise ModelLoadError(f"cannot weigh the adapters {', '.join(names)} into '{COMBINED_ADAPTER}': {err} — PEFT "
                             "cannot combine adapters that each train the same modules_to_save (vLLM refuses those "
                             "too): leave out the strengths, or retrain with the layer as a LoRA target") from err
    log.info("combined %s into %s (%s)", ", ".join(f"{n}×{w:g}" for n, w in weights.items()), adapter_name,
             combination_type)


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    """Every token that ends a generation: the generation config's and the tokenizer's."""
    eos: set[int] = set()
    for source in (model.generation_config.eos_token_id, tokenizer.eos_token_id):
        if isinstance(source, int):
            eos.add(source)
        elif source:
            eos.update(int(t) for t in source)
    return frozenset(eos)


def _avoid_cpu_packing_on_odd_shapes(model: Any) -> None:
    """bitsandbytes 0.50 repacks 4-bit weights for its AVX-512 CPU kernel at the first eval forward, and
    fails unless the output size is a multiple of 32 and the input size of the quantization block size;
    other layers keep the plain 4-bit path."""
    from bitsandbytes.nn import Linear4bit

    for module in model.modules():
        if isinstance(module, Linear4bit):
            block = getattr(getattr(module.weight, "quant_state", None), "blocksize", 64) or 64
            if module.out_features % 32 or module.in_features % block:
                module.support_avx512bf16_for_cpu = False


def _base_model_path(config: ServerConfig) -> str:
    """Where the base weights are: --model-dir, a built tiny model, a mounted path or a hub repo id."""
    from kairo.presets import get_preset

    if config.model_dir is not None:
        return str(config.model_dir)
    preset = get_preset(config.preset)
    source = preset.source
    if source.builtin:
        from kairo.atomic import staged_dir
        from kairo.training.tinymodel import build_tiny_model

        folder = _cache(config) / "models" / f"{preset.name}-{preset.revision}"
        if not (folder / "config.json").is_file():
            with staged_dir(folder) as tmp:
                build_tiny_model(tmp, seed=source.builtin.seed)
        return str(folder)
    if source.local:
        return source.local.path
    if source.huggingface:
        return source.huggingface.repo  # transformers fetches it (HF_HOME), at the pinned revision
    raise ModelLoadError(f"preset {preset.name} keeps its weights at {source.describe()}, which serve cannot "
                         "fetch itself — run fetch-model and pass --model-dir")


def adapter_path(adapter: AdapterSource, config: ServerConfig) -> Path:
    """The folder holding the adapter's PEFT files: its own, or where its reference was pulled to (by digest)."""
    if adapter.path is not None:
        return adapter.path
    try:
        from kairo.clients import oci
    except ImportError as err:
        raise ModelLoadError(f"adapter {adapter.name}: pulling {adapter.ref} needs kairo.clients.oci, "
                             "which this install lacks — pull it with `kairo-step pull-adapter` and pass a folder") from err
    target = _cache(config) / "adapters" / adapter.name
    if adapter.digest:  # one folder per digest: a switch pulls the new weights beside the served ones
        target = _cache(config) / "adapters" / f"{adapter.name}-{adapter.digest.removeprefix('sha256:')[:16]}"
    log.info("pulling adapter %s from %s", adapter.name, adapter.ref)
    try:
        oci.pull_adapter(adapter.ref, target, oci.registry_access(adapter.ref, auth_file=config.pull_secret_file,
                                                                  plain_http=config.plain_http))
    except oci.RegistryError as err:
        raise ModelLoadError(f"adapter {adapter.name}: cannot pull {adapter.ref}: {err}", err.exit_code) from err
    except (Exception, SystemExit) as err:  # oras-py raises SystemExit on some failures
        raise ModelLoadError(f"adapter {adapter.name}: cannot pull {adapter.ref}: {err}", exitcodes.TRANSIENT) from err
    return target


def adapter_info(name: str, path: Path, preset: str) -> dict[str, Any]:
    """What the adapter's kairo.json says about it; refuses one trained on another preset."""
    try:
        info = json.loads((path / "kairo.json").read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"adapter {name}: cannot read {path / 'kairo.json'}: {err}") from err
    trained_on = info.get("preset") if isinstance(info, dict) else None
    if trained_on and trained_on != preset:
        raise ModelLoadError(f"adapter {name} was trained on preset {trained_on!r}, not {preset!r} — "
                             f"serve it with --preset {trained_on}")
    return info if isinstance(info, dict) else {}


def _settle_tokenizer(tokenizer: Any, preset_template: Path | None, adapter_dirs: list[Path]) -> None:
    """Pad on the left (batches), and find a chat template: the model's, the preset's, an adapter's, or a plain one."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if getattr(tokenizer, "chat_template", None):
        return
    candidates = [preset_template] if preset_template else []
    candidates += [d / "chat_template.jinja" for d in adapter_dirs]
    for path in candidates:
        if path.is_file():
            tokenizer.chat_template = path.read_text()
            return
    tokenizer.chat_template = FALLBACK_TEMPLATE


def _cache(config: ServerConfig) -> Path:
    return Path(config.cache_dir or os.environ.get("KAIRO_CACHE") or Path.home() / ".cache" / "kairo")


def _token(config: ServerConfig) -> str | None:
    if config.token_file is None:
        return os.environ.get("HF_TOKEN") or None
    path = config.token_file
    if path.is_dir():
        path = next((path / n for n in ("token", "HF_TOKEN", "hf_token") if (path / n).is_file()), path / "token")
    try:
        return path.read_text().strip() or None
    except OSError as err:
        raise ModelLoadError(f"--token-file {path}: {err.strerror}") from err


def _load_exit_code(err: OSError) -> int:
    """A hub or network failure may pass on a retry; a missing or broken folder will not."""
    text = str(err).lower()
    return exitcodes.TRANSIENT if any(w in text for w in ("connection", "timed out", "timeout", "503", "502")) \
        else exitcodes.BAD_INPUT

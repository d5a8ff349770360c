"""The `tiny-llama-test` model's folder, written from a seed with tokenizers, numpy and safetensors alone.

The fetch-model image builds it and holds neither torch nor transformers (they are most of an image's
weight): the weights are drawn with numpy the way transformers initialises a Llama, and the config and
tokenizer files are what transformers' save_pretrained writes for this model, less its version stamp
(tests/test_tinymodel.py compares them with transformers' own). `kairo.training.tinymodel` is the preset's
public face: these names, and the tokenizer wrapped for transformers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

SPECIAL_TOKENS = ["<pad>", "<s>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>", "<unk>"]
EOS = "<|end|>"
BOS = "<s>"
PAD = "<pad>"
VOCAB_SIZE = 1024

# Assistant turns are wrapped in {% generation %} so trainers can mask everything else (assistant-only loss).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|assistant|>\n' }}{% generation %}{{ message['content'] }}{{ '<|end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + '<|end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

MODEL_SHAPE = {
    "hidden_size": 64,
    # Every 4-bit layer's output size must be a multiple of 32 for bitsandbytes' CPU kernel (eval and generate).
    "intermediate_size": 192,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 512,
}

_WORDS = (
    "the of and to in is was for on that with as by at from it an be this are or which have has had not but "
    "were they their one all been more can when there will would about if who what how where why yes no "
    "capital city country river mountain ocean sea lake island continent north south east west world "
    "france paris germany berlin italy rome spain madrid portugal lisbon japan tokyo china beijing india "
    "delhi egypt cairo kenya nairobi brazil brasilia canada ottawa mexico australia canberra russia moscow "
    "answer question please tell me explain describe summarize list name give short long write read "
    "number one two three four five six seven eight nine ten hundred thousand first second third last "
    "color red blue green yellow black white orange purple animal dog cat bird fish horse cow sheep "
    "water fire earth air sun moon star planet day night morning evening week month year time "
    "good bad big small hot cold new old fast slow happy sad easy hard true false right wrong "
    "model data train learn adapter tune language word sentence text code python function value "
    "hello thanks sorry okay sure because therefore however also only very much many few some any"
).split()


def corpus(seed: int = 0) -> list[str]:
    """A deterministic English-like corpus for training the tokenizer."""
    import random

    rng = random.Random(seed)
    lines = [" ".join(_WORDS[i : i + 12]) for i in range(0, len(_WORDS), 12)]
    for _ in range(3000):
        n = rng.randint(4, 16)
        words = [rng.choice(_WORDS) for _ in range(n)]
        lines.append(" ".join(words).capitalize() + rng.choice([".", "?", "!", ","]))
    lines += [f"The capital of {c.title()} is {k.title()}." for c, k in zip(_WORDS[27:67:2], _WORDS[28:68:2],
                                                                             strict=True)]
    lines += ["".join(chr(c) for c in range(32, 127))]
    return lines


def train_tokenizer(seed: int = 0):
    """The byte-level BPE tokenizer (a `tokenizers.Tokenizer`) trained on `corpus(seed)`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    # No BOS added by encoding (the chat template writes it): the processor transformers' wrapper would set.
    raw.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1", special_tokens=[])
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(corpus(seed), trainer=trainer)
    return raw


# -- the folder's files: what save_pretrained writes for LlamaConfig, GenerationConfig, PreTrainedTokenizerFast --


def model_config(vocab_size: int, bos: int, eos: int, pad: int) -> dict:
    """config.json: LlamaConfig(**MODEL_SHAPE, these ids, untied, rms_norm_eps=1e-5) as transformers saves it."""
    return {
        "architectures": ["LlamaForCausalLM"], "attention_bias": False, "attention_dropout": 0.0,
        "bos_token_id": bos, "dtype": "float32", "eos_token_id": eos,
        "head_dim": MODEL_SHAPE["hidden_size"] // MODEL_SHAPE["num_attention_heads"], "hidden_act": "silu",
        "initializer_range": 0.02, "mlp_bias": False, "model_type": "llama", "pad_token_id": pad,
        "pretraining_tp": 1, "rms_norm_eps": 1e-05, "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "tie_word_embeddings": False, "use_cache": True, "vocab_size": vocab_size, **MODEL_SHAPE,
    }


def generation_config(config: dict) -> dict:
    """generation_config.json: GenerationConfig.from_model_config(config), EOS the end of a turn."""
    return {"_from_model_config": True, "bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
            "output_attentions": False, "output_hidden_states": False, "pad_token_id": config["pad_token_id"],
            "use_cache": True}


def tokenizer_config() -> dict:
    """tokenizer_config.json of `tinymodel.build_tokenizer()` (its chat template lies beside it in chat_template.jinja)."""
    return {"backend": "tokenizers", "bos_token": BOS, "eos_token": EOS,
            "model_max_length": MODEL_SHAPE["max_position_embeddings"], "pad_token": PAD,
            "tokenizer_class": "TokenizersBackend", "unk_token": "<unk>"}


def weight_shapes(config: dict) -> list[tuple[str, tuple[int, ...]]]:
    """Every parameter LlamaForCausalLM(config) holds, by its state_dict name, in the order it creates them."""
    hidden, inner, head = config["hidden_size"], config["intermediate_size"], config["head_dim"]
    heads, kv_heads = config["num_attention_heads"] * head, config["num_key_value_heads"] * head
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (config["vocab_size"], hidden))]
    for i in range(config["num_hidden_layers"]):
        layer = f"model.layers.{i}"
        shapes += [
            (f"{layer}.self_attn.q_proj.weight", (heads, hidden)),
            (f"{layer}.self_attn.k_proj.weight", (kv_heads, hidden)),
            (f"{layer}.self_attn.v_proj.weight", (kv_heads, hidden)),
            (f"{layer}.self_attn.o_proj.weight", (hidden, heads)),
            (f"{layer}.mlp.gate_proj.weight", (inner, hidden)),
            (f"{layer}.mlp.up_proj.weight", (inner, hidden)),
            (f"{layer}.mlp.down_proj.weight", (hidden, inner)),
            (f"{layer}.input_layernorm.weight", (hidden,)),
            (f"{layer}.post_attention_layernorm.weight", (hidden,)),
        ]
    return [*shapes, ("model.norm.weight", (hidden,)), ("lm_head.weight", (config["vocab_size"], hidden))]


def random_weights(config: dict, seed: int) -> dict:
    """Float32 weights drawn from `seed` as transformers initialises a Llama (PreTrainedModel._init_weights):
    linear and embedding weights from normal(0, initializer_range), the embedding's padding row zero, RMSNorm
    weights one. numpy only."""
    import numpy as np

    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in weight_shapes(config):
        if name.endswith("norm.weight"):
            weights[name] = np.ones(shape, dtype=np.float32)
        else:
            weights[name] = rng.normal(0.0, config["initializer_range"], shape).astype(np.float32)
    weights["model.embed_tokens.weight"][config["pad_token_id"]] = 0.0
    return weights


def _write_json(path: Path, value: dict) -> None:
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")  # as transformers writes its configs


def build_tiny_model(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write the tiny model (config, safetensors weights, tokenizer, chat template) to `out_dir`; the same seed
    writes the same bytes. Needs tokenizers, numpy and safetensors only."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(seed)
    ids = {name: tokenizer.token_to_id(token) for name, token in (("bos", BOS), ("eos", EOS), ("pad", PAD))}
    config = model_config(tokenizer.get_vocab_size(), **ids)
    _write_json(out / "config.json", config)
    _write_json(out / "generation_config.json", generation_config(config))
    # "format": "pt" is what transformers' own save writes; it loads such a file without a warning.
    save_file(random_weights(config, seed), out / "model.safetensors", metadata={"format": "pt"})
    tokenizer.save(str(out / "tokenizer.json"))
    _write_json(out / "tokenizer_config.json", tokenizer_config())
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (out / "kairo-model.json").write_text(json.dumps({"preset": "tiny-llama-test", "seed": seed}))
    for path in out.iterdir():  # safetensors writes 0600; pods may read as another user
        path.chmod(0o644)
    return out

"""The `tiny-llama-test` preset: a small Llama-architecture model built offline, the same from the same seed.

Random weights and a byte-level BPE tokenizer trained here on a built-in English corpus, with a chat
template whose turns end in `<|end|>` — the tokenizer's EOS, so generation stops where a turn ends.
Tests and `make demo` use it so that nothing comes from a hub. It learns quickly; it knows nothing.
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


def build_tokenizer(seed: int = 0):
    """A byte-level BPE tokenizer trained on `corpus(seed)`, wrapped for transformers, with the chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(corpus(seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw, bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token="<unk>",
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(out_dir: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write the tiny model (config, safetensors weights, tokenizer, chat template) to `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        rms_norm_eps=1e-5,
        **MODEL_SHAPE,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    (out / "kairo-model.json").write_text(json.dumps({"preset": "tiny-llama-test", "seed": seed}))
    for path in out.iterdir():  # safetensors writes 0600; pods may read as another user
        path.chmod(0o644)
    return out

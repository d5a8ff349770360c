"""The `tiny-llama-test` preset: a small Llama-architecture model built offline, the same from the same seed.

Random weights and a byte-level BPE tokenizer trained here on a built-in English corpus, with a chat
template whose turns end in `<|end|>` — the tokenizer's EOS, so generation stops where a turn ends.
Tests and `make demo` use it so that nothing comes from a hub. It learns quickly; it knows nothing.
The folder is written by `kairo.training.tinyfiles` (no torch, no transformers: the fetch-model step imports
that module alone); here are its names and `build_tokenizer`, the tokenizer as transformers holds it.
"""

from __future__ import annotations

from kairo.training.tinyfiles import (
    _WORDS,
    BOS,
    CHAT_TEMPLATE,
    EOS,
    MODEL_SHAPE,
    PAD,
    SPECIAL_TOKENS,
    VOCAB_SIZE,
    build_tiny_model,
    corpus,
    train_tokenizer,
)

__all__ = ["BOS", "CHAT_TEMPLATE", "EOS", "MODEL_SHAPE", "PAD", "SPECIAL_TOKENS", "VOCAB_SIZE", "_WORDS",
           "build_tiny_model", "build_tokenizer", "corpus", "train_tokenizer"]


def build_tokenizer(seed: int = 0):
    """`train_tokenizer(seed)` wrapped for transformers, with the chat template (what the model folder holds)."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=train_tokenizer(seed), bos_token=BOS, eos_token=EOS, pad_token=PAD, unk_token="<unk>",
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer

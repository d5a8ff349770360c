"""The training recipe's parts; `steps/train.py` is the recipe that puts them together.

- `config` — Kaito's training_config.yaml parsed once into typed sections; `kaito_keys` reads the keys
  the way Kaito's trainer does first.
- `base_model` — the preset's tokenizer, module names and model, quantized or not.
- `chat` — conversations → tokens: the chat template and the assistant-only labels; `tokenize` does
  that work in batches on every core; `packing` puts several examples in one row without letting them see
  each other; `tokencache` writes a split's packed rows to the work volume once and reads them back.
- `trainer` — transformers' Trainer counting real tokens and reporting progress.
- `devices` — the precision a device computes in; `tinymodel` — the offline `tiny-llama-test` model, its
  folder written by `tinyfiles` (tokenizers and numpy only: the fetch-model image holds no torch).

`config`, `kaito_keys` and `devices` are light (`kairo validate` and the pipelines read them); the
others import torch/transformers inside their functions or are imported only by the train, evaluate,
fetch-model and serve steps. Imports no client library.
"""

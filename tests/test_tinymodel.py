"""The tiny preset is built offline, deterministically, without torch, and behaves like a chat model."""

from __future__ import annotations

import hashlib

from kairo.training.tinymodel import EOS, build_tiny_model


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_the_same_seed_builds_the_same_files(tiny_model_dir, tmp_path):
    again = build_tiny_model(tmp_path / "again", seed=0)
    assert _digests(again) == _digests(tiny_model_dir)


def test_another_seed_builds_other_weights(tiny_model_dir, tmp_path):
    other = build_tiny_model(tmp_path / "other", seed=1)
    assert _digests(other)["model.safetensors"] != _digests(tiny_model_dir)["model.safetensors"]


def test_weights_are_safetensors_readable_by_other_users(tiny_model_dir):
    weights = tiny_model_dir / "model.safetensors"
    assert weights.exists() and not list(tiny_model_dir.glob("*.bin"))
    assert weights.stat().st_mode & 0o044 == 0o044


def test_turns_end_with_the_eos_token_and_assistant_tokens_are_marked(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tokenizer.eos_token == EOS
    messages = [{"role": "user", "content": "What is the capital of France?"},
                {"role": "assistant", "content": "Paris."}]
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                            return_assistant_tokens_mask=True)
    marked = [i for i, m in zip(encoded["input_ids"], encoded["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(marked) == "Paris." + EOS


def test_the_model_generates(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] > ids["input_ids"].shape[1]


def test_the_weights_are_the_ones_llama_for_causal_lm_holds_and_load_without_a_missing_key(tiny_model_dir):
    """numpy draws them (no torch in the fetch-model image): the names, shapes and dtypes transformers makes."""
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaForCausalLM

    expected = LlamaForCausalLM(AutoConfig.from_pretrained(tiny_model_dir)).state_dict()
    with safe_open(tiny_model_dir / "model.safetensors", "pt") as weights:
        assert weights.metadata() == {"format": "pt"}  # what transformers' own save writes
        written = {name: weights.get_tensor(name) for name in weights.keys()}  # noqa: SIM118 - not a dict
    assert {n: (tuple(t.shape), t.dtype) for n, t in written.items()} == {
        n: (tuple(t.shape), t.dtype) for n, t in expected.items()}
    _, info = AutoModelForCausalLM.from_pretrained(tiny_model_dir, output_loading_info=True)
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}


def test_the_weights_are_drawn_as_transformers_initialises_a_llama(tiny_model_dir):
    from safetensors.numpy import load_file

    weights = load_file(tiny_model_dir / "model.safetensors")
    embed = weights["model.embed_tokens.weight"]
    assert not embed[0].any() and embed[1:].any()  # the <pad> row (id 0) is zero, as nn.Embedding's padding_idx
    for name, tensor in weights.items():
        if name.endswith("norm.weight"):
            assert (tensor == 1).all(), name
        else:
            assert abs(float(tensor.std()) - 0.02) < 0.002 and abs(float(tensor.mean())) < 0.002, name


def test_the_files_are_what_transformers_saves_for_this_model(tiny_model_dir, tmp_path):
    """Written by hand (no transformers in the fetch-model image); transformers' save_pretrained of the same
    config and tokenizer writes the same, its version stamp aside."""
    import json

    from transformers import GenerationConfig, LlamaConfig

    from kairo.training.tinymodel import MODEL_SHAPE, build_tokenizer

    tokenizer = build_tokenizer()
    tokenizer.save_pretrained(tmp_path)
    config = LlamaConfig(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=False, rms_norm_eps=1e-5, architectures=["LlamaForCausalLM"],
                         dtype="float32", **MODEL_SHAPE)
    config.save_pretrained(tmp_path)
    GenerationConfig.from_model_config(config).save_pretrained(tmp_path)
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (tiny_model_dir / name).read_bytes() == (tmp_path / name).read_bytes(), name
    for name in ("config.json", "generation_config.json"):
        theirs = json.loads((tmp_path / name).read_text())
        theirs.pop("transformers_version")
        assert json.loads((tiny_model_dir / name).read_text()) == theirs, name


def test_the_model_is_built_without_torch_or_transformers(tmp_path):
    """fetch-model builds it in an image that holds neither: importing one of them fails the build here."""
    import subprocess
    import sys

    script = ("import sys; sys.modules['torch'] = sys.modules['transformers'] = None\n"
              "from kairo.training.tinyfiles import build_tiny_model  # what fetch-model imports\n"
              f"build_tiny_model({str(tmp_path / 'model')!r})\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "model" / "model.safetensors").is_file()

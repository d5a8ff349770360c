"""train: the recipe on the tiny model — loss falls (lora and qlora), the adapter reloads and generates,
progress and metrics are written, and the user's mistakes stop it early with exit code 2 naming the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from kairo.steps import train
from tests.fixtures.adapter import ADAPTER_STEPS, capital_rows, make_workdir

LEARN = """\
training_config:
  QuantizationConfig: {load_in_4bit: true, bnb_4bit_quant_type: nf4, bnb_4bit_use_double_quant: true}
  LoraConfig: {r: 8, lora_alpha: 16, modules_to_save: [lm_head]}
  TrainingArguments: {max_steps: 30, learning_rate: 0.005, per_device_train_batch_size: 2}
  TokenizerParams: {max_length: 128}
"""


def run(work: Path, method: str, config_text: str | None, *flags: str) -> int:
    argv = ["--preset", "tiny-llama-test", "--method", method, "--workdir", str(work),
            "--outputs", str(work / "outputs"), "--device", "cpu", *flags]
    if config_text is not None:
        config = work / "training_config.yaml"
        config.write_text(config_text)
        argv += ["--config", str(config)]
    return train.main(argv)


def losses(work: Path) -> list[float]:
    return [e["loss"] for e in json.loads((work / "outputs" / "metrics.json").read_text())["loss_per_step"]]


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, tiny_model_dir):
    work = make_workdir(tmp_path_factory.mktemp("qlora"), tiny_model_dir, capital_rows() * 3, capital_rows()[:3])
    code = run(work, "qlora", LEARN)
    return work, code


def test_lora_loss_falls_on_a_learnable_dataset(trained_workdir):
    steps = losses(trained_workdir)
    assert len(steps) == ADAPTER_STEPS
    assert sum(steps[-5:]) / 5 < 0.5 * sum(steps[:5]) / 5


def test_qlora_trains_4bit_layers_and_its_loss_falls(qlora_run):
    work, code = qlora_run
    assert code == 0
    metrics = json.loads((work / "outputs" / "metrics.json").read_text())
    assert metrics["base_layers"] == ["Linear4bit"]
    steps = losses(work)
    assert sum(steps[-5:]) / 5 < 0.5 * sum(steps[:5]) / 5
    assert metrics["eval_loss"] < steps[0]  # measured in eval mode on the 4-bit layers, too


def test_the_adapter_is_standard_peft_and_records_where_it_came_from(trained_adapter):
    names = {p.name for p in trained_adapter.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "chat_template.jinja",
            "kairo.json"} <= names
    assert not any(n.endswith(".bin") for n in names)
    record = json.loads((trained_adapter / "kairo.json").read_text())
    assert record["preset"] == "tiny-llama-test" and record["method"] == "lora"
    assert record["base_model"] == "tiny-llama-test" and record["revision"] == "seed-0"
    assert record["dataset_digest"] == "sha256:" + "ab" * 32 and record["metrics"]["steps"] == ADAPTER_STEPS
    assert record["created"].endswith("+00:00")
    config = json.loads((trained_adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-llama-test" and config["task_type"] == "CAUSAL_LM"
    assert (trained_adapter / "adapter_model.safetensors").stat().st_mode & 0o044 == 0o044


def test_the_adapter_reloads_with_peft_and_answers_what_it_learned(trained_adapter, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(trained_adapter)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), trained_adapter)
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**prompt, max_new_tokens=12, do_sample=False)
    new = out[0, prompt["input_ids"].shape[1]:].tolist()
    assert tokenizer.decode(new, skip_special_tokens=True) == "Paris."
    assert new[-1] == tokenizer.eos_token_id  # it ends its turn, so generation stops


def test_outputs_metrics_and_the_loss_plot_are_written(trained_workdir):
    outputs = trained_workdir / "outputs"
    assert (outputs / "steps").read_text() == str(ADAPTER_STEPS)
    assert float((outputs / "train-loss").read_text()) < 3
    assert float((outputs / "eval-loss").read_text()) > 0
    metrics = json.loads((outputs / "metrics.json").read_text())
    for key in ("eval_loss", "tokens_per_second", "peak_memory_bytes", "wall_seconds", "perplexity"):
        assert metrics[key] and metrics[key] > 0, key
    assert (outputs / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_reaches_argo_and_the_terminal(tmp_path, tiny_model_dir, monkeypatch, capsys):
    progress = tmp_path / "progress"
    monkeypatch.setenv("ARGO_PROGRESS_FILE", str(progress))
    work = make_workdir(tmp_path / "work", tiny_model_dir, capital_rows())
    config = LEARN.replace("max_steps: 30", "max_steps: 4").replace("QuantizationConfig", "ModelConfig")
    config = config.replace("{load_in_4bit: true, bnb_4bit_quant_type: nf4, bnb_4bit_use_double_quant: true}", "{}")
    assert run(work, "lora", config, "--progress-every", "2") == 0
    assert progress.read_text() == "4/4"
    err = capsys.readouterr().err
    assert "[progress] train 2/4 loss" in err and "[progress] train 4/4" in err


def test_a_model_without_a_chat_template_trains_with_kairos_default(tmp_path, tiny_model_dir, capsys):
    model = tmp_path / "no-template"
    shutil.copytree(tiny_model_dir, model)
    (model / "chat_template.jinja").unlink()
    tokenizer_config = json.loads((model / "tokenizer_config.json").read_text())
    tokenizer_config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    work = make_workdir(tmp_path / "work", model, capital_rows())
    config = "training_config:\n  TrainingArguments: {max_steps: 2}\n  TokenizerParams: {max_length: 64}\n"
    assert run(work, "lora", config) == 0
    assert "chat template: kairo's default" in capsys.readouterr().err
    assert "### Assistant:" in (work / "adapter" / "chat_template.jinja").read_text()


def test_lora_target_modules_the_model_lacks_are_refused_naming_the_real_ones(tmp_path, tiny_model_dir, capsys):
    model = tmp_path / "config-only"  # no weights: the refusal must come before loading any
    model.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_model_dir / name, model / name)
    work = make_workdir(tmp_path / "work", model, capital_rows())
    config = "training_config:\n  LoraConfig: {target_modules: [q_proj, query_key_value], modules_to_save: [head]}\n"
    assert run(work, "lora", config) == 2
    err = capsys.readouterr().err
    assert "LoraConfig.target_modules[1]: 'query_key_value' is not in this model" in err
    assert "LoraConfig.modules_to_save[0]: 'head' is not in this model" in err
    assert "down_proj, gate_proj, k_proj, lm_head, o_proj, q_proj, up_proj, v_proj" in err


@pytest.mark.parametrize(("config", "field"), [
    ("training_config:\n  LoraConfig: {rank: 8}\n", "training_config.LoraConfig.rank"),
    ("training_config:\n  Optimizer: {lr: 1}\n", "training_config.Optimizer"),
    ("training_config:\n  QuantizationConfig: {load_in_4bit: true}\n",
     "training_config.QuantizationConfig.load_in_4bit"),
    ("training_config:\n  TrainingArguments: {output_dir: ../outside}\n",
     "training_config.TrainingArguments.output_dir"),
    ("training_config:\n  TokenizerParams: {max_length: 100000}\n", "training_config.TokenizerParams.max_length"),
])
def test_a_bad_config_fails_at_once_with_exit_2_naming_the_field(tmp_path, config, field, capsys):
    work = tmp_path / "work"  # no model and no data: the config is judged before anything else
    work.mkdir()
    assert run(work, "lora", config) == 2
    assert field in capsys.readouterr().err


def test_qlora_with_a_config_that_quantizes_nothing_is_refused(tmp_path, capsys):
    work = tmp_path / "work"
    work.mkdir()
    assert run(work, "qlora", "training_config:\n  LoraConfig: {r: 4}\n") == 2
    assert "quantizes nothing" in capsys.readouterr().err


def test_missing_training_data_is_the_users_to_fix(tmp_path, tiny_model_dir, capsys):
    work = make_workdir(tmp_path / "work", tiny_model_dir, capital_rows())
    (work / "data" / "train.jsonl").unlink()
    assert run(work, "lora", None) == 2
    assert "the download step writes it" in capsys.readouterr().err


def test_a_preset_too_big_for_this_machine_is_refused_before_loading(tmp_path, tiny_model_dir, monkeypatch, capsys):
    from kairo.presets import HERE, _load_presets

    data = yaml.safe_load((HERE / "models" / "tiny-llama-test.yaml").read_text())
    data.update(name="huge", parameters_billion=100000)
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "huge.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.setenv("KAIRO_PRESETS_DIR", str(tmp_path / "presets"))
    _load_presets.cache_clear()
    try:
        work = make_workdir(tmp_path / "work", tiny_model_dir, capital_rows(), preset="huge")
        argv = ["--preset", "huge", "--method", "lora", "--workdir", str(work), "--outputs", str(tmp_path / "o")]
        assert train.main(argv) == 2
    finally:
        _load_presets.cache_clear()
    err = capsys.readouterr().err
    assert "huge with lora needs about" in err and "GiB of RAM" in err
    assert not (work / "adapter").exists()

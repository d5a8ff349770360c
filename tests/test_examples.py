"""The examples carry the project's own dataset: the copies inside them stay what examples/data holds."""

from __future__ import annotations

import yaml

from kairo.spec import read_workspace_file


def _configmap(path, name):
    return read_workspace_file(path).other("ConfigMap", name)


def test_the_quickstart_carries_the_instruction_dataset(examples):
    data = _configmap(examples / "quickstart.yaml", "quickstart-data")["data"]
    assert data["instructions.jsonl"] == (examples / "data" / "instructions.jsonl").read_text()


def test_the_lora_example_carries_the_alpaca_sample(examples):
    data = _configmap(examples / "lora-to-volume.yaml", "alpaca-sample")["data"]
    assert data["alpaca-sample.csv"] == (examples / "data" / "alpaca-sample.csv").read_text()


def test_the_quickstart_trains_qlora_on_the_tiny_preset_and_lm_head_through_lora(examples):
    wfile = read_workspace_file(examples / "quickstart.yaml")
    tuning = wfile.workspace["tuning"]
    assert (tuning["preset"]["name"], tuning["method"]) == ("tiny-llama-test", "qlora")
    config = yaml.safe_load(_configmap(examples / "quickstart.yaml", "quickstart-tuning")["data"]["training_config.yaml"])
    # the tiny model's random lm_head holds loss high unless it learns too; through LoRA, so vLLM loads the adapter
    lora = config["training_config"]["LoraConfig"]
    assert "lm_head" in lora["target_modules"] and "modules_to_save" not in lora

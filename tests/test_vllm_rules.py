"""vLLM's rules for LoRA adapters (vllm/lora/peft_helper.py, vllm/config/lora.py): `kairo validate` warns about a
tuning config that would make an adapter vLLM refuses, and train records in kairo.json whether it loads."""

from __future__ import annotations

import json

import pytest

from kairo.cli import main
from kairo.training.config import TrainingConfig
from kairo.training.vllm import adapter_findings, needed_max_lora_rank

LOADABLE = {"r": 16, "lora_alpha": 32, "bias": "none", "target_modules": ["q_proj", "lm_head"],
            "modules_to_save": None, "use_dora": False}


def test_an_adapter_of_lora_layers_only_with_rank_up_to_16_loads_on_a_default_server():
    assert adapter_findings(LOADABLE) == []
    assert adapter_findings({**LOADABLE, "r": 4}) == []  # any rank up to --max-lora-rank


@pytest.mark.parametrize(("change", "field", "says"), [
    ({"modules_to_save": ["lm_head"]}, "modules_to_save", "add it to target_modules"),
    ({"use_dora": True}, "use_dora", "does not support DoRA"),
    ({"bias": "lora_only"}, "bias", "without bias only"),
    ({"r": 32}, "r", "start vLLM with --max-lora-rank 32"),
    ({"r": 24}, "r", "start vLLM with --max-lora-rank 32"),
    ({"r": 1024}, "r", "vLLM's largest --max-lora-rank is 512"),
])
def test_each_rule_vllm_refuses_on_is_named_with_what_to_do(change, field, says):
    [finding] = adapter_findings({**LOADABLE, **change})
    assert finding.field == field and says in finding.says


def test_a_server_with_a_higher_max_lora_rank_takes_the_higher_rank():
    assert adapter_findings({**LOADABLE, "r": 64}, max_lora_rank=64) == []
    assert [needed_max_lora_rank(r) for r in (1, 2, 9, 320, 321, 513)] == [1, 8, 16, 320, 512, None]


def test_the_training_config_warns_naming_the_field_and_what_vllm_does():
    config = TrainingConfig.model_validate({"LoraConfig": {"r": 64, "modules_to_save": ["lm_head"], "use_dora": True}})
    found = {p.path: p for p in config.problems("lora")}
    assert {path for path in found if path.startswith("training_config.LoraConfig")} == {
        "training_config.LoraConfig.r", "training_config.LoraConfig.modules_to_save",
        "training_config.LoraConfig.use_dora"}
    assert all(found[p].severity == "warning" and "vLLM" in found[p].message for p in found if "LoraConfig" in p)


def test_kairo_validate_warns_about_an_adapter_vllm_would_refuse(tmp_path, capsys):
    workspace = tmp_path / "ws.yaml"
    workspace.write_text("""\
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data:
  training_config.yaml: |
    training_config:
      LoraConfig: {r: 16, modules_to_save: [lm_head]}
---
apiVersion: kaito.sh/v1beta1
kind: Workspace
metadata: {name: tiny}
resource: {instanceType: Standard_NC6s_v3, labelSelector: {matchLabels: {a: b}}}
tuning:
  preset: {name: tiny-llama-test}
  method: lora
  config: cfg
  input: {urls: ["https://example.com/data.jsonl"]}
  output: {image: "registry.example.com/me/adapter:v1", imagePushSecret: push}
""")
    assert main(["validate", str(workspace)]) == 0
    err = capsys.readouterr()
    text = err.out + err.err
    assert "LoraConfig.modules_to_save" in text and "vLLM refuses the adapter" in text


def test_the_quickstart_makes_an_adapter_vllm_loads(examples, capsys):
    assert main(["validate", "--json", "--local", str(examples / "quickstart.yaml")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [w for r in report for w in r["warnings"] if "vLLM" in str(w)] == []


@pytest.mark.slow
def test_train_records_in_kairo_json_whether_vllm_loads_the_adapter(trained_adapter):
    # the shared test adapter trains lm_head whole (tests/fixtures/adapter.py), which vLLM refuses
    record = json.loads((trained_adapter / "kairo.json").read_text())
    assert record["vllm_loadable"] is False
    assert any(reason.startswith("modules_to_save=['lm_head']: vLLM refuses") for reason in record["vllm_reasons"])

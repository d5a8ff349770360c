"""Kaito's training_config parsed into typed sections: its defaults, and the rules a config must keep."""

from __future__ import annotations

import pytest

from kairo.problems import InvalidInput
from kairo.training.config import default_training_config, output_subdir, parse_training_config


def config(text_sections: dict) -> object:
    return parse_training_config({"training_config": text_sections})


def problems(sections: dict, method: str = "lora") -> dict[str, str]:
    return {p.path: p.message for p in config(sections).problems(method)}


def test_the_defaults_are_kaitos_templates():
    lora, qlora = default_training_config("lora"), default_training_config("qlora")
    assert (lora.LoraConfig.r, lora.LoraConfig.lora_alpha, lora.LoraConfig.lora_dropout) == (8, 8, 0.0)
    assert not lora.QuantizationConfig.quantized and lora.ModelConfig.torch_dtype == "bfloat16"
    q = qlora.QuantizationConfig
    assert (q.load_in_4bit, q.bnb_4bit_quant_type, q.bnb_4bit_use_double_quant, q.bnb_4bit_compute_dtype) == (
        True, "nf4", True, "bfloat16")
    assert lora.TrainingArguments.save_strategy == "no" and lora.DatasetConfig.train_test_split == 1
    assert lora.problems("lora") == [] and qlora.problems("qlora") == []


def test_a_configmap_manifest_is_read_like_the_file():
    manifest = {"kind": "ConfigMap", "metadata": {"name": "my-config"},
                "data": {"training_config.yaml": "training_config:\n  LoraConfig:\n    r: 32\n"}}
    assert parse_training_config(manifest).LoraConfig.r == 32


def test_unknown_sections_and_keys_are_refused_by_name():
    with pytest.raises(InvalidInput, match="training_config.Optimizer: unrecognised section"):
        config({"Optimizer": {"lr": 1}})
    with pytest.raises(InvalidInput, match="training_config.TokenizerParams.max_len: unknown key"):
        config({"TokenizerParams": {"max_len": 512}})
    assert "training_config.LoraConfig.rank" in problems({"LoraConfig": {"rank": 4}})


def test_keys_of_the_hugging_face_classes_pass_and_typos_do_not():
    assert problems({"TrainingArguments": {"warmup_steps": 10, "lr_scheduler_type": "cosine"}}) == {}
    assert "training_config.TrainingArguments.warmup_stepz" in problems({"TrainingArguments": {"warmup_stepz": 1}})


def test_lora_with_4bit_and_qlora_without_quantization_are_refused():
    assert "training_config.QuantizationConfig.load_in_4bit" in problems({"QuantizationConfig": {"load_in_4bit": True}})
    found = problems({"LoraConfig": {"r": 4}}, method="qlora")
    assert "quantizes nothing" in found["training_config.QuantizationConfig"]


@pytest.mark.parametrize(("value", "inside"), [
    ("/mnt/results", "results"), ("results/run1", "results/run1"), ("/results", "results"), ("/tmp/out", "tmp/out"),
    ("/mnt/../etc", "etc"), ("../up", None), ("/../up", None), (".", None), ("./", None), ("", None),
])
def test_output_dir_is_judged_as_kaito_does_joined_onto_mnt(value, inside):
    assert output_subdir(value) == inside
    found = problems({"TrainingArguments": {"output_dir": value}})
    assert ("training_config.TrainingArguments.output_dir" in found) == (inside is None)


@pytest.mark.parametrize(("sections", "field"), [
    ({"TrainingArguments": {"bf16": True, "fp16": True}}, "TrainingArguments.bf16"),
    ({"TrainingArguments": {"max_steps": 0}}, "TrainingArguments.max_steps"),
    ({"LoraConfig": {"task_type": "SEQ_CLS"}}, "LoraConfig.task_type"),
    ({"LoraConfig": {"target_modules": []}}, "LoraConfig.target_modules"),
    ({"ModelConfig": {"chat_template": "/etc/passwd"}}, "ModelConfig.chat_template"),
    ({"ModelConfig": {"pretrained_model_name_or_path": "gpt2"}}, "ModelConfig.pretrained_model_name_or_path"),
])
def test_settings_kairo_owns_or_that_cannot_work_are_refused_naming_the_field(sections, field):
    found = config(sections).problems("lora")
    assert [p.severity for p in found if p.path == f"training_config.{field}"] == ["error"]


@pytest.mark.parametrize(("sections", "field"), [
    ({"TrainingArguments": {"logging_dir": "/var/log"}}, "TrainingArguments.logging_dir"),
    ({"TrainingArguments": {"report_to": "wandb"}}, "TrainingArguments.report_to"),
    ({"TrainingArguments": {"report_to": ["tensorboard"]}}, "TrainingArguments.report_to"),
])
def test_settings_kairo_decides_itself_are_accepted_with_a_warning(sections, field):
    found = config(sections).problems("lora")
    assert [p.severity for p in found if p.path == f"training_config.{field}"] == ["warning"]
    assert [p for p in found if p.severity == "error"] == []


def test_a_chat_template_given_inline_or_as_a_file_name_is_fine():
    assert problems({"ModelConfig": {"chat_template": "{{ messages[0]['content'] }}"}}) == {}
    assert problems({"ModelConfig": {"chat_template": "template.jinja"}}) == {}


@pytest.mark.parametrize(("key", "value"), [("optim", "adamw"), ("lr_scheduler_type", "cosine_annealing"),
                                            ("eval_strategy", "Steps")])
def test_a_choice_transformers_does_not_know_is_refused_listing_the_ones_it_does(key, value):
    found = problems({"TrainingArguments": {key: value}})
    assert found[f"training_config.TrainingArguments.{key}"].startswith(f"'{value}' — allowed: ")


def test_the_common_choices_pass():
    assert problems({"TrainingArguments": {"optim": "paged_adamw_32bit", "lr_scheduler_type": "cosine",
                                           "eval_strategy": "steps", "logging_strategy": "steps"}}) == {}

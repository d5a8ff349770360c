"""Kaito's own tuning files are accepted as written: its example workspaces, its default and example ConfigMaps.

The files live in tests/kaito_files/ (shaped like Kaito's, values ours). Each workspace validates and renders a
Workflow that passes the strict Argo checks; each ConfigMap reads into the values Kaito's trainer would use.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from kairo.cli import main
from kairo.spec import check_workspace, read_workspace_file
from kairo.training.config import load_training_config, parse_training_config

FILES = Path(__file__).resolve().parent / "kaito_files"
WORKSPACES = sorted(FILES.glob("workspace-*.yaml"))
CONFIGMAPS = sorted(FILES.glob("configmap-*.yaml"))


def validate(capsys, *argv: str | Path) -> tuple[int, str]:
    code = main(["validate", *map(str, argv)])
    out = capsys.readouterr()
    return code, out.out + out.err


def render(capsys, *argv: str | Path) -> list[dict]:
    code = main(["render", *map(str, argv)])
    out = capsys.readouterr()
    assert code == 0, out.err
    return [d for d in yaml.safe_load_all(out.out) if d]


def findings(path: Path, **kwargs) -> dict[str, list[tuple[str, str]]]:
    wfile = read_workspace_file(path)
    checked = check_workspace(wfile.workspace, others=wfile.others, **kwargs)
    return {"errors": [(p.path, p.message) for p in checked.errors],
            "warnings": [(p.path, p.message) for p in checked.warnings]}


def workspace_text(name: str, **replace: str) -> str:
    text = (FILES / name).read_text()
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    return text


def test_every_kind_of_kaito_file_is_here():
    assert len(WORKSPACES) >= 7 and len(CONFIGMAPS) >= 3


@pytest.mark.parametrize("path", WORKSPACES, ids=lambda p: p.stem)
def test_each_kaito_workspace_validates(capsys, path):
    code, output = validate(capsys, path)
    assert code == 0, output


@pytest.mark.parametrize("path", WORKSPACES, ids=lambda p: p.stem)
def test_each_kaito_workspace_renders_a_workflow_that_passes_the_strict_checks(capsys, path, argo_strict):
    objects = render(capsys, path)
    assert objects[-1]["kind"] == "Workflow"
    argo_strict(objects[-1])


def test_the_quickstart_validates_as_v1alpha1_and_as_v1beta1(capsys, tmp_path):
    for version in ("v1alpha1", "v1beta1"):
        path = tmp_path / f"{version}.yaml"
        path.write_text(workspace_text("workspace-phi-3-urls.yaml", **{"kaito.sh/v1beta1": f"kaito.sh/{version}"}))
        assert validate(capsys, path)[0] == 0


def test_the_placeholders_kaitos_examples_leave_are_warnings_naming_each_field():
    found = findings(FILES / "workspace-falcon-7b-image-input.yaml")
    assert found["errors"] == []
    assert [path for path, _ in found["warnings"]] == [
        "tuning.input.image", "tuning.input.imagePullSecrets[0]", "tuning.output.image",
        "tuning.output.imagePushSecret"]
    assert all("placeholder" in message for _, message in found["warnings"])


def test_falcon_7b_is_tuned_as_kaito_tunes_it(capsys):
    workflow = render(capsys, FILES / "workspace-falcon-7b-qlora-urls.yaml")[-1]
    assert workflow["metadata"]["labels"]["kairo.sh/preset"] == "falcon-7b"
    volumes = {v["name"]: v for v in workflow["spec"]["volumes"]}
    assert volumes["training-config"]["configMap"]["name"] == "qlora-params-template"


def test_a_hugging_face_repo_as_preset_name_tunes_that_preset_and_says_so(capsys):
    found = findings(FILES / "workspace-phi-3-pvc.yaml")
    assert found["errors"] == []
    assert "preset 'phi-3-mini-128k-instruct'" in dict(found["warnings"])["tuning.preset.name"]
    workflow = render(capsys, FILES / "workspace-phi-3-pvc.yaml")[-1]
    assert workflow["metadata"]["labels"]["kairo.sh/preset"] == "phi-3-mini-128k-instruct"
    assert "microsoft/Phi-3" not in json.dumps(workflow)  # every step gets the preset's own name


def test_a_hub_repo_kairo_has_no_preset_for_is_refused_naming_the_value(tmp_path, capsys):
    path = tmp_path / "w.yaml"
    path.write_text(workspace_text("workspace-phi-3-pvc.yaml", **{
        "microsoft/Phi-3-mini-128k-instruct": "example-org/not-a-preset"}))
    code, output = validate(capsys, path)
    assert code == 2 and "tuning.preset.name: unknown preset 'example-org/not-a-preset'" in output


def test_the_configmap_in_the_same_file_is_the_config_the_workspace_gets(capsys):
    wfile = read_workspace_file(FILES / "workspace-with-configmap.yaml")
    checked = check_workspace(wfile.workspace, others=wfile.others)
    assert checked.ok, checked.problems
    assert checked.training_config.LoraConfig.r == 16
    assert checked.training_config.DatasetConfig.train_test_split == 0.9
    objects = render(capsys, FILES / "workspace-with-configmap.yaml")
    assert [o["kind"] for o in objects] == ["ConfigMap", "Workflow"]


def test_a_configmap_in_the_file_under_a_default_s_name_is_the_one_judged(tmp_path):
    file = tmp_path / "w.yaml"
    file.write_text(workspace_text("workspace-with-configmap.yaml", **{
        "phi-3-support-tuning": "qlora-params-template", "load_in_4bit: true": "load_in_4bit: false"}))
    errors = dict(findings(file)["errors"])
    assert "quantizes nothing" in errors["training_config.QuantizationConfig"]  # the file's, not kairo's default


def test_a_configmap_in_the_file_that_the_workspace_forgets_to_name_is_pointed_out(tmp_path):
    file = tmp_path / "w.yaml"
    file.write_text(workspace_text("workspace-with-configmap.yaml", **{"  config: phi-3-support-tuning\n": ""}))
    found = findings(file)
    assert found["errors"] == []
    assert "set tuning.config: phi-3-support-tuning" in dict(found["warnings"])["tuning.config"]


def test_every_field_a_tuning_workspace_may_hold_is_accepted(capsys):
    found = findings(FILES / "workspace-everything.yaml")
    assert found["errors"] == []
    assert [path for path, _ in found["warnings"]] == ["resource.preferredNodes"]
    workflow = render(capsys, FILES / "workspace-everything.yaml")[-1]
    text = json.dumps(workflow)
    # the selector's expressions reach the GPU pods' node affinity; the blank config is Kaito's default
    assert '"key": "example.com/retiring", "operator": "DoesNotExist"' in text
    volumes = {v["name"]: v for v in workflow["spec"]["volumes"]}
    assert volumes["training-config"]["configMap"]["name"] == "qlora-params-template"
    assert volumes["model-secret"]["secret"]["secretName"] == "hf-token"


@pytest.mark.parametrize(("edit", "path", "words"), [
    ({"tuning:\n": "inference:\n  preset:\n    name: phi-3-mini-4k-instruct\ntuning:\n"}, "inference", "not both"),
    ({"  labelSelector:\n": "  partition:\n    mode: mig\n    profile: 1g.10gb\n  labelSelector:\n"},
     "resource.partition", "not supported for tuning"),
    ({"  count: 1\n": "  count: 2\n"}, "resource.count", "ReadWriteMany"),  # Kaito refuses it outright
    ({"        values: [nvidia]\n": ""}, "resource.labelSelector.matchExpressions[0].values", "operator In"),
    ({"        operator: DoesNotExist\n": "        operator: Exists\n        values: [retired]\n"},
     "resource.labelSelector.matchExpressions[1].values", "must be empty with operator Exists"),
    ({"  method: QLoRA\n": "  method: dora\n"}, "tuning.method", "allowed: lora, qlora"),
    ({"    modelAccessSecret: hf-token\n": ""}, "tuning.preset.presetOptions.modelAccessSecret", "HF_TOKEN"),
])
def test_what_kaito_refuses_too_is_refused_naming_field_value_and_what_is_allowed(tmp_path, edit, path, words):
    file = tmp_path / "w.yaml"
    file.write_text(workspace_text("workspace-everything.yaml", **edit))
    errors = dict(findings(file)["errors"])
    assert path in errors and words in errors[path], errors


def test_a_bare_yaml_boolean_where_kubernetes_wants_text_is_refused_saying_to_quote_it(tmp_path):
    file = tmp_path / "w.yaml"
    file.write_text(workspace_text("workspace-everything.yaml", **{'kaito.sh/enablelb: "True"': "kaito.sh/enablelb: true"}))
    message = dict(findings(file)["errors"])["metadata.annotations.kaito.sh/enablelb"]
    assert message.startswith("True — should be a valid string") and "put it in quotes" in message


def test_what_kaito_reads_as_not_given_is_not_given(tmp_path):
    file = tmp_path / "w.yaml"
    file.write_text(workspace_text("workspace-falcon-7b-qlora-urls.yaml", **{
        'instanceType: "Standard_NC12s_v3"': 'instanceType: ""',  # the bring-your-own-nodes spelling
        "  config: qlora-params-template": "  config:",
    }))
    assert findings(file)["errors"] == []


# ── ConfigMaps ──────────────────────────────────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("method", ["lora", "qlora"])
def test_kaitos_default_configmaps_read_as_kairos_defaults(method):
    config = load_training_config(FILES / f"configmap-{method}-params-template.yaml")
    assert config.problems(method) == []
    assert config.QuantizationConfig.quantized == (method == "qlora")
    assert (config.LoraConfig.r, config.LoraConfig.lora_alpha, config.TrainingArguments.save_strategy) == (
        8, 8, "epoch")
    assert config.ModelConfig.torch_dtype == "bfloat16" and config.DatasetConfig.train_test_split == 1


@pytest.mark.parametrize("path", CONFIGMAPS, ids=lambda p: p.stem)
def test_each_configmap_is_a_config_for_the_quickstart(capsys, tmp_path, path):
    method = "lora" if "-lora-" in path.name else "qlora"
    workspace = tmp_path / "workspace.yaml"
    workspace.write_text(workspace_text("workspace-phi-3-urls.yaml", **{"method: qlora": f"method: {method}"}))
    code, output = validate(capsys, workspace, "--config", path)
    assert code == 0, output


def test_a_whole_workspace_file_given_as_config_gives_its_configmap(capsys):
    code, output = validate(capsys, FILES / "workspace-phi-3-urls.yaml", "--config",
                            FILES / "workspace-with-configmap.yaml")
    assert code == 0, output
    objects = render(capsys, FILES / "workspace-phi-3-urls.yaml", "--config", FILES / "workspace-with-configmap.yaml")
    shipped = yaml.safe_load(objects[0]["data"]["training_config.yaml"])
    assert shipped["training_config"]["LoraConfig"]["r"] == 16


def test_a_config_file_that_is_not_there_is_an_error_not_a_traceback(capsys, tmp_path):
    code, output = validate(capsys, FILES / "workspace-phi-3-urls.yaml", "--config", tmp_path / "none.yaml")
    assert code == 2 and "none.yaml: cannot read the training config" in output


def test_kaitos_first_default_with_tokenizer_params_still_reads():
    config = load_training_config(FILES / "training-config-older-kaito-lora.yaml")
    assert config.problems("lora") == []
    assert config.LoraConfig.target_modules == ["query_key_value"]  # Kaito's parser makes a list of one
    assert config.TrainingArguments.extras()["auto_find_batch_size"] is True


@pytest.mark.parametrize(("written", "targets"), [
    ("q_proj", ["q_proj"]), ("q_proj, v_proj", ["q_proj", "v_proj"]), ("all-linear", "all-linear"),
    (".*\\.(q|v)_proj", ".*\\.(q|v)_proj"),
])
def test_target_modules_written_as_one_string_find_the_model_s_modules(tiny_model_dir, written, targets):
    from kairo.presets import get_preset
    from kairo.training.base_model import lora_targets

    config = parse_training_config({"training_config": {"LoraConfig": {"target_modules": written}}})
    assert lora_targets(tiny_model_dir, get_preset("tiny-llama-test"), config) == targets


def test_a_config_written_for_kaitos_trainer_means_the_same_here():
    config = load_training_config(FILES / "training-config-as-users-write-it.yaml")
    assert [p for p in config.problems("qlora") if p.severity == "error"] == []
    ta = config.TrainingArguments
    assert (ta.learning_rate, ta.num_train_epochs, ta.max_steps, ta.gradient_accumulation_steps) == (2e-4, 3, 500, 4)
    assert ta.extras() | {} == {
        "weight_decay": 1e-3, "adam_epsilon": 1e-8, "warmup_steps": 0.03, "lr_scheduler_type": "cosine",
        "optim": "paged_adamw_32bit", "save_total_limit": 2, "eval_strategy": "steps", "eval_steps": 100,
        "report_to": "tensorboard"}
    assert (config.LoraConfig.r, config.LoraConfig.lora_dropout, config.LoraConfig.extras()["use_rslora"]) == (
        16, 0.05, False)
    assert config.QuantizationConfig.bnb_4bit_use_double_quant is True
    assert config.ModelConfig.torch_dtype == "float16" and config.ModelConfig.chat_template is None
    assert config.DatasetConfig.train_test_split == 0.9 and config.DatasetConfig.shuffle_dataset is True


def test_what_kairo_moves_or_ignores_in_such_a_config_is_said_once_per_key():
    config = load_training_config(FILES / "training-config-as-users-write-it.yaml")
    warned = [p.path.removeprefix("training_config.") for p in config.problems("qlora") if p.severity == "warning"]
    assert sorted(warned) == sorted([
        "ModelConfig.chat_template", "ModelConfig.trust_remote_code", "TrainingArguments.warmup_ratio",
        "TrainingArguments.evaluation_strategy", "TrainingArguments.group_by_length",
        "TrainingArguments.overwrite_output_dir", "TrainingArguments.logging_dir", "TrainingArguments.report_to"])


def test_the_keys_passed_on_make_real_training_arguments(tmp_path):
    from transformers import TrainingArguments

    config = load_training_config(FILES / "training-config-as-users-write-it.yaml")
    user = {k: v for k, v in config.TrainingArguments.extras().items() if k != "report_to"}
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **user)
    assert (args.weight_decay, args.warmup_steps, args.eval_strategy.value) == (1e-3, 0.03, "steps")


@pytest.mark.parametrize(("section", "key", "value", "words"), [
    ("TrainingArguments", "weight_decay", "a lot", "expected a number"),
    ("TrainingArguments", "logging_first_step", "maybe", "expected true or false"),
    ("LoraConfig", "r", "sixteen", "expected a whole number"),
    ("TrainingArguments", "warmup_ratio", 1.5, "below 1"),
])
def test_a_value_kaitos_parser_would_refuse_is_refused_naming_it(section, key, value, words):
    from kairo.problems import InvalidInput

    with pytest.raises(InvalidInput) as caught:
        parse_training_config({"training_config": {section: {key: value}}})
    assert [(p.path, words in p.message) for p in caught.value.problems] == [(f"training_config.{section}.{key}", True)]


def test_transformers_4_spellings_win_over_the_new_ones_as_they_did_there():
    config = parse_training_config({"training_config": {"TrainingArguments": {
        "per_gpu_train_batch_size": "4", "per_device_train_batch_size": 1, "warmup_ratio": 0.1, "warmup_steps": 20}}})
    assert config.TrainingArguments.per_device_train_batch_size == 4
    assert config.TrainingArguments.extras()["warmup_steps"] == 20  # a positive warmup_steps beat the ratio in 4.x

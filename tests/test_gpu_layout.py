"""How a model is laid over a node's GPUs: whole on each, sharded over them (FSDP), or refused — one rule for
`kairo validate` and the train step."""

from __future__ import annotations

import subprocess
import sys

import pytest

from kairo.presets import get_preset
from kairo.sizing import gpu_layout

CODER = get_preset("qwen2.5-coder-32b-instruct")  # lora: 90 GiB in all, at least 24 on each GPU


def test_a_model_one_gpu_holds_is_never_sharded():
    layout = gpu_layout(get_preset("phi-3-mini-4k-instruct"), "lora", 80, 4)
    assert layout.kind == "whole" and not layout.sharded
    assert layout.describe().startswith("data-parallel on 4 GPUs, each holding the whole model")


def test_a_model_too_big_for_one_gpu_but_not_for_the_node_is_sharded_across_its_gpus():
    layout = gpu_layout(CODER, "lora", 80, 4)
    assert layout.sharded and layout.gpus == 4
    assert layout.describe() == ("sharded across 4 GPUs (FSDP): qwen2.5-coder-32b-instruct with lora needs 90 GiB, "
                                 "more than one GPU's 80 GiB but within the 4 GPUs' 320 GiB")


@pytest.mark.parametrize(("memory", "gpus", "why"), [
    (80, 1, "needs 90 GiB of GPU memory; 1× 80 GiB = 80 GiB"),
    (16, 8, "needs at least 24 GiB on each GPU even when sharded; these have 16 GiB"),
])
def test_a_model_the_node_cannot_hold_is_refused_with_the_numbers(memory, gpus, why):
    layout = gpu_layout(CODER, "lora", memory, gpus)
    assert layout.kind == "none" and why in layout.reason


def validate(tmp_path, instance_type: str, preset: str = "qwen2.5-coder-32b-instruct", count: int = 1):
    file = tmp_path / "w.yaml"
    file.write_text(f"""\
apiVersion: kaito.sh/v1alpha1
kind: Workspace
metadata: {{name: coder}}
resource:
  instanceType: {instance_type}
  count: {count}
  labelSelector: {{matchLabels: {{app: coder}}}}
tuning:
  preset: {{name: {preset}}}
  method: lora
  input: {{urls: ["https://example.com/d.parquet"]}}
  output: {{image: "myregistry.azurecr.io/a/b:1", imagePushSecret: acr}}
""")
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text("storage: {readWriteManyClassName: azurefile-csi}\n")
    return subprocess.run([sys.executable, "-m", "kairo.cli", "validate", str(file), "--cluster-config", str(cluster)],
                          capture_output=True, text=True, timeout=120)


def test_kairo_validate_says_it_will_shard_and_why(tmp_path):
    done = validate(tmp_path, "Standard_NC96ads_A100_v4")
    assert done.returncode == 0, done.stderr
    assert "valid; training: sharded across 4 GPUs (FSDP)" in done.stdout and "more than one GPU's 80 GiB" in done.stdout


def test_kairo_validate_refuses_a_model_too_big_for_the_node_naming_instance_types_that_fit(tmp_path):
    done = validate(tmp_path, "Standard_NC24ads_A100_v4")
    assert done.returncode == 2
    assert "needs 90 GiB of GPU memory" in done.stderr and "Standard_NC96ads_A100_v4" in done.stderr


def test_kairo_validate_says_how_many_nodes_and_which_engine(tmp_path):
    done = validate(tmp_path, "Standard_NC24ads_A100_v4", preset="phi-3-mini-4k-instruct", count=2)
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("one GPU has 80 GiB; on 2 nodes, one JobSet")


def test_a_sharded_run_trains_with_fsdp_and_stores_4bit_weights_in_the_compute_dtype(tmp_path):
    """The train step's side of the decision. Its FSDP run itself needs several GPUs: on CPU, accelerate trains
    data-parallel whatever `fsdp` says (measured: torch 2.13, transformers 5.24, two gloo ranks)."""
    import argparse

    import torch

    from kairo.steps.train import Run, training_argument_values
    from kairo.training.base_model import quantization
    from kairo.training.config import resolve_training_config
    from kairo.training.devices import choose_precision

    config = resolve_training_config("qlora", None, None)
    precision = choose_precision((8, 0), preferred="bfloat16", bf16=None, fp16=None, gpu="A100")
    run = Run(argparse.Namespace(method="qlora"), tmp_path, tmp_path, CODER, config, 2048, 0.0, device=((8, 0), "A100"),
              precision=precision, world=4, sharded=True)
    values = training_argument_values(run, tmp_path / "checkpoints", checkpointing=True, has_eval=False)
    assert values["fsdp"] is True and values["fsdp_config"]["version"] == 2
    assert values["fsdp_config"]["cpu_ram_efficient_loading"] is True
    assert values["activation_checkpointing"] is False and values["fsdp_config"]["activation_checkpointing"] is True
    assert quantization(config, precision, sharded=True).bnb_4bit_quant_storage == torch.bfloat16
    assert quantization(config, precision).bnb_4bit_quant_storage == torch.uint8  # bitsandbytes' own, unsharded
    run.sharded = False
    assert "fsdp" not in training_argument_values(run, tmp_path / "checkpoints", checkpointing=True, has_eval=False)

"""Issue 15 end to end: Kaito's PVC example shape — two PersistentVolumeClaims, then a v1beta1 Workspace
reading its dataset from one (`tuning.input.volumeSource`) and writing the adapter to the other
(`tuning.output.volumeSource`) — validated, rendered and run with `kairo run --local`.

Locally a claim NAME is the folder `<run dir>/volumes/pvc/NAME`, so a user puts the dataset there before
the run; or `--pvc NAME=DIR` maps the claim onto a folder of theirs (made when missing).
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests.conftest import EXAMPLES
from tests.fixtures.local_run import kairo, kairo_run
from tests.fixtures.workspaces import KAITO_PVC_EXAMPLE

pytestmark = pytest.mark.slow

# Kaito's example as written, with the tiny preset so it runs here (no `config`: --config gives a small one).
KAITO_PVC_SHAPE = (KAITO_PVC_EXAMPLE.replace("name: phi-3-mini-4k-instruct", "name: tiny-llama-test")
                   .replace("workspace-tuning-phi-3-pvc", "workspace-tuning-tiny-pvc")
                   .replace("app: tuning-phi-3", "app: tuning-tiny-pvc")
                   .replace("Standard_NC24ads_A100_v4", "Standard_NC6s_v3"))

SMALL_CONFIG = """\
training_config:
  ModelConfig: {torch_dtype: float32}
  QuantizationConfig: {load_in_4bit: false}
  LoraConfig: {r: 8, lora_alpha: 16, lora_dropout: 0.0}
  TokenizerParams: {max_length: 128}
  TrainingArguments: {max_steps: 20, per_device_train_batch_size: 4, learning_rate: 0.003, logging_steps: 5}
  DatasetConfig: {train_test_split: 0.9}
"""
DATA = (EXAMPLES / "data" / "instructions.jsonl").read_bytes().splitlines(keepends=True)[:40]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pvc")
    (tmp / "workspace.yaml").write_text(KAITO_PVC_SHAPE)
    (tmp / "training_config.yaml").write_text(SMALL_CONFIG)
    return tmp


@pytest.fixture(scope="module")
def pvc_run(files):
    """The dataset put into the input claim's folder of the run directory, the output claim on a folder of
    the user's (`--pvc`), then one run (≈30 s)."""
    run_dir = files / "run"
    data = run_dir / "volumes" / "pvc" / "pvc-azurefile-input" / "instructions.jsonl"
    data.parent.mkdir(parents=True)
    data.write_bytes(b"".join(DATA))
    adapters = files / "my-adapters"  # does not exist yet: --pvc makes it
    run = kairo_run(files / "workspace.yaml", run_dir, "--config", str(files / "training_config.yaml"),
                    "--pvc", f"pvc-azurefile-output={adapters}")
    return run, adapters


def test_kaitos_pvc_shape_validates(files):
    checked = kairo("validate", str(files / "workspace.yaml"))
    assert checked.returncode == 0, checked.stderr


def test_kaitos_pvc_shape_renders_the_claims_ahead_of_the_workflow(files):
    rendered = kairo("render", str(files / "workspace.yaml"), "--config", str(files / "training_config.yaml"))
    assert rendered.returncode == 0, rendered.stderr
    objects = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert [(o["kind"], o["metadata"]["name"]) for o in objects[:2]] == [
        ("PersistentVolumeClaim", "pvc-azurefile-input"), ("PersistentVolumeClaim", "pvc-azurefile-output")]
    assert objects[-1]["kind"] == "Workflow"
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in objects[-1]["spec"]["volumes"]
              if "persistentVolumeClaim" in v}
    assert claims == {"input": "pvc-azurefile-input", "output": "pvc-azurefile-output"}


def test_it_runs_locally_reading_the_dataset_from_the_input_claims_folder(pvc_run):
    run, _ = pvc_run
    assert run.code == 0, run.explain()
    dataset = json.loads((run.work / "data" / "dataset.json").read_text())
    assert dataset["rows"] == len(DATA)


def test_the_adapter_lands_in_the_output_claims_folder(pvc_run):
    run, adapters = pvc_run
    pushed = [p for p in adapters.iterdir() if p.is_dir()]
    assert len(pushed) == 1, list(adapters.iterdir())
    record = json.loads((pushed[0] / "kairo.json").read_text())
    assert record["preset"] == "tiny-llama-test" and record["method"] == "lora"
    assert (pushed[0] / "adapter_model.safetensors").is_file()
    # and that copy is the adapter deployed and served
    assert run.deployed()["current"]["ref"].startswith(str(pushed[0]))
    assert not (run.run_dir / "volumes" / "pvc" / "pvc-azurefile-output").exists()


@pytest.mark.parametrize(("mapping", "says"), [
    ("pvc-azurefile-data=/tmp", "it mounts: pvc-azurefile-input, pvc-azurefile-output"),
    ("pvc-azurefile-input", "expected NAME=FOLDER"),
])
def test_a_pvc_mapping_must_name_a_claim_the_workspace_mounts(files, tmp_path, mapping, says):
    run = kairo_run(files / "workspace.yaml", tmp_path / "run", "--config", str(files / "training_config.yaml"),
                    "--pvc", mapping, timeout=60)
    assert run.code == 2 and says in run.stderr, run.explain()
    assert not (tmp_path / "run" / "tasks").exists()

"""evaluate: the new adapter ships only when it beats the deployed one on the same held-out conversations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from kairo.steps import evaluate, train
from tests.fixtures.adapter import ADAPTER_CONFIG, CAPITALS, capital_rows, make_workdir
from tests.fixtures.outputs import step_outputs


def run(work: Path, *flags: str) -> tuple[int, dict[str, str]]:
    out = work / "eval-outputs"
    shutil.rmtree(out, ignore_errors=True)
    code = evaluate.main(["--preset", "tiny-llama-test", "--method", "lora", "--workdir", str(work),
                          "--outputs", str(out), "--device", "cpu", *flags])
    return code, step_outputs(out)


@pytest.fixture(scope="module")
def shuffled_adapter(tmp_path_factory, tiny_model_dir) -> Path:
    """An adapter trained like the good one, on answers that name the wrong capitals."""
    capitals = [k for _, k in CAPITALS]
    wrong = capitals[1:] + capitals[:1]
    work = make_workdir(tmp_path_factory.mktemp("shuffled"), tiny_model_dir, capital_rows(wrong) * 3)
    config = work / "training_config.yaml"
    config.write_text(ADAPTER_CONFIG)
    assert train.main(["--preset", "tiny-llama-test", "--method", "lora", "--config", str(config), "--workdir",
                       str(work), "--outputs", str(work / "outputs"), "--device", "cpu"]) == 0
    return work / "adapter"


def work_with(tmp_path: Path, tiny_model_dir: Path, adapter: Path, eval_rows: list | None) -> Path:
    work = make_workdir(tmp_path / "work", tiny_model_dir, capital_rows(), eval_rows)
    shutil.copytree(adapter, work / "adapter")
    return work


def test_an_adapter_trained_on_shuffled_answers_is_not_deployed(tmp_path, tiny_model_dir, shuffled_adapter,
                                                                trained_adapter):
    work = work_with(tmp_path, tiny_model_dir, shuffled_adapter, capital_rows()[:6])
    code, out = run(work, "--deployed-dir", str(trained_adapter))
    assert code == 0
    assert out["decision"] == "keep"
    new, old = float(out["new-loss"]), float(out["old-loss"])
    assert new > old
    assert out["message"] == f"kept the current adapter (eval loss {new:.4f} vs {old:.4f})"
    report = json.loads(out["eval.json"])
    assert report["split"] == "data/eval.jsonl" and report["conversations"] == 6
    assert report["deployed"]["perplexity"] == pytest.approx(2.718281828 ** old, rel=1e-4)


def test_a_better_adapter_is_deployed(tmp_path, tiny_model_dir, shuffled_adapter, trained_adapter):
    work = work_with(tmp_path, tiny_model_dir, trained_adapter, capital_rows()[:6])
    code, out = run(work, "--deployed-dir", str(shuffled_adapter))
    assert code == 0 and out["decision"] == "deploy"
    assert float(out["new-loss"]) < float(out["old-loss"])


def test_a_margin_keeps_an_adapter_that_is_only_slightly_better(tmp_path, tiny_model_dir, shuffled_adapter,
                                                                 trained_adapter):
    work = work_with(tmp_path, tiny_model_dir, trained_adapter, capital_rows()[:6])
    code, out = run(work, "--deployed-dir", str(shuffled_adapter), "--margin", "1000")
    assert code == 0 and out["decision"] == "keep"


def test_the_first_deployment_always_proceeds(tmp_path, tiny_model_dir, shuffled_adapter):
    work = work_with(tmp_path, tiny_model_dir, shuffled_adapter, capital_rows()[:6])
    code, out = run(work, "--deployed", "")
    assert code == 0 and out["decision"] == "deploy" and out["old-loss"] == ""
    assert out["message"].startswith("nothing deployed yet")
    assert json.loads(out["eval.json"])["deployed"] is None


def test_without_an_eval_split_a_fixed_sample_of_train_is_used_and_said(tmp_path, tiny_model_dir, trained_adapter,
                                                                         capsys):
    work = work_with(tmp_path, tiny_model_dir, trained_adapter, None)
    code, out = run(work)
    assert code == 0
    assert "no eval split" in json.loads(out["eval.json"])["split"]
    assert "fixed sample of the training rows" in capsys.readouterr().err


@pytest.mark.parametrize("layout", ["kairo", "kaito-pusher", "earlier-kairo"])
def test_a_deployed_adapter_pulled_by_digest_from_the_registry(tmp_path, tiny_model_dir, trained_adapter,
                                                               shuffled_adapter, registry, layout):
    """Whoever pushed the deployed adapter: kairo (Kaito's image layout), Kaito's own pusher (the two PEFT files
    only), or an earlier kairo version (its raw-file artifact)."""
    from kairo.clients import oci
    from tests.fixtures.oci_images import kaito_push, push_old_layout

    repository = f"{registry.host}/kairo/capitals-{layout}"
    if layout == "kairo":
        ref = oci.push_adapter(trained_adapter, f"{repository}:v1", oci.RegistryAccess(plain_http=True)).ref
    elif layout == "kaito-pusher":
        ref = kaito_push(trained_adapter, f"{repository}:latest", tmp_path)
    else:
        ref = push_old_layout(trained_adapter, repository, tmp_path)
    work = work_with(tmp_path, tiny_model_dir, shuffled_adapter, capital_rows()[:6])
    code, out = run(work, "--deployed", ref, "--local")
    assert code == 0 and out["decision"] == "keep"
    assert json.loads(out["eval.json"])["deployed_ref"] == ref


def test_no_adapter_to_judge_is_the_users_to_fix(tmp_path, tiny_model_dir, capsys):
    work = make_workdir(tmp_path / "work", tiny_model_dir, capital_rows())
    code, _ = run(work)
    assert code == 2 and "the train step writes it" in capsys.readouterr().err

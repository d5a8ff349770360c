"""fetch-model: the model cache filled from each kind of source, safetensors only, skipped when already there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kairo.steps import fetch_model
from tests.fixtures.outputs import step_outputs

REVISION = "0123456789abcdef0123456789abcdef01234567"


def fetch(tmp_path: Path, *flags: str) -> tuple[int, dict[str, str]]:
    out = tmp_path / "outputs"
    code = fetch_model.main([*flags, "--workdir", str(tmp_path / "work"), "--outputs", str(out)])
    return code, step_outputs(out)


def preset_dir(tmp_path: Path, name: str, source: dict) -> Path:
    """A presets folder holding one preset like tiny-llama-test but fetched from `source`."""
    from kairo.presets import HERE

    data = yaml.safe_load((HERE / "models" / "tiny-llama-test.yaml").read_text())
    data.update(name=name, source=source)
    folder = tmp_path / "presets"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))
    return folder


@pytest.fixture
def custom_presets(tmp_path, monkeypatch):
    from kairo.presets import _load_presets

    def use(name: str, source: dict) -> None:
        monkeypatch.setenv("KAIRO_PRESETS_DIR", str(preset_dir(tmp_path, name, source)))
        _load_presets.cache_clear()

    yield use
    _load_presets.cache_clear()


def test_the_builtin_tiny_model_is_built_and_the_outputs_name_it(tmp_path):
    code, outputs = fetch(tmp_path, "--preset", "tiny-llama-test")
    model = tmp_path / "work" / "model" / "tiny-llama-test"
    assert code == 0
    assert outputs == {"model-dir": str(model), "revision": "seed-0"}
    assert (model / "model.safetensors").stat().st_mode & 0o044 == 0o044  # readable by another uid
    assert json.loads((model / ".kairo-fetch.json").read_text())["revision"] == "seed-0"


def test_a_second_fetch_of_the_same_revision_skips(tmp_path, capsys):
    fetch(tmp_path, "--preset", "tiny-llama-test")
    weights = tmp_path / "work" / "model" / "tiny-llama-test" / "model.safetensors"
    before = weights.stat().st_mtime_ns
    code, outputs = fetch(tmp_path, "--preset", "tiny-llama-test")
    assert code == 0 and outputs["revision"] == "seed-0"
    assert "skipping" in capsys.readouterr().err
    assert weights.stat().st_mtime_ns == before


def test_a_folder_without_the_marker_is_fetched_again(tmp_path):
    fetch(tmp_path, "--preset", "tiny-llama-test")
    model = tmp_path / "work" / "model" / "tiny-llama-test"
    (model / ".kairo-fetch.json").unlink()  # what a half-finished copy from elsewhere would look like
    (model / "stray.txt").write_text("left over")
    code, _ = fetch(tmp_path, "--preset", "tiny-llama-test")
    assert code == 0 and (model / ".kairo-fetch.json").is_file() and not (model / "stray.txt").exists()


def test_a_local_folder_is_copied_without_its_pickles(tmp_path, tiny_model_dir, custom_presets):
    volume = tmp_path / "volume"
    shutil.copytree(tiny_model_dir, volume)
    (volume / "pytorch_model.bin").write_bytes(b"pickle")
    (volume / "training_args.bin").write_bytes(b"pickle")
    custom_presets("tiny-on-a-volume", {"local": {"path": str(volume)}})
    code, outputs = fetch(tmp_path, "--preset", "tiny-on-a-volume")
    model = Path(outputs["model-dir"])
    assert code == 0 and outputs["revision"].startswith("files:")
    assert (model / "model.safetensors").is_file() and (model / "tokenizer.json").is_file()
    assert not list(model.glob("*.bin"))


def test_a_pickle_only_folder_is_refused(tmp_path, capsys):
    volume = tmp_path / "volume"
    volume.mkdir()
    (volume / "config.json").write_text("{}")
    (volume / "pytorch_model.bin").write_bytes(b"pickle")
    code, outputs = fetch(tmp_path, "--preset", "tiny-llama-test", "--path", str(volume))
    assert code == 2 and outputs == {}
    err = capsys.readouterr().err
    assert "no safetensors weights (it has only pytorch_model.bin)" in err
    assert not (tmp_path / "work" / "model" / "tiny-llama-test").exists()


def run_step(tmp_path: Path, hub, presets: Path, *flags: str) -> subprocess.CompletedProcess:
    """fetch-model in its own process: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE when imported."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "KAIRO_PRESETS_DIR": str(presets),
           "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_DISABLE_PROGRESS_BARS": "1",
           "ARGO_PROGRESS_FILE": str(tmp_path / "progress")}
    return subprocess.run(
        [sys.executable, "-m", "kairo.steps.fetch_model", *flags, "--workdir", str(tmp_path / "work"),
         "--outputs", str(tmp_path / "outputs")], env=env, capture_output=True, text=True, timeout=120,
    )


def test_a_hub_repo_is_downloaded_at_its_pinned_revision_without_pickles(tmp_path, tiny_model_dir, fake_hub):
    repo = tmp_path / "repo"
    shutil.copytree(tiny_model_dir, repo)
    (repo / "pytorch_model.bin").write_bytes(b"pickle")
    (repo / "consolidated.safetensors").write_bytes(b"the same weights in another layout")
    fake_hub.add("kairo-test/tiny", REVISION, repo)
    presets = preset_dir(tmp_path, "tiny-from-hub", {"huggingface": {"repo": "kairo-test/tiny", "revision": REVISION}})
    proc = run_step(tmp_path, fake_hub, presets, "--preset", "tiny-from-hub")
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = tmp_path / "work" / "model" / "tiny-from-hub"
    assert (tmp_path / "outputs" / "revision").read_text() == REVISION
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja"} <= set(fake_hub.downloaded())
    assert "pytorch_model.bin" not in fake_hub.downloaded() and "consolidated.safetensors" not in fake_hub.downloaded()
    assert not (model / ".cache").exists()
    assert (tmp_path / "progress").read_text().split("/")[0] == (tmp_path / "progress").read_text().split("/")[1]
    assert "MiB" in proc.stderr


def test_a_gated_hub_repo_needs_the_token_from_the_secret(tmp_path, tiny_model_dir, fake_hub):
    fake_hub.add("kairo-test/gated", REVISION, tiny_model_dir, token="hf_secret_value")
    presets = preset_dir(tmp_path, "gated", {"huggingface": {"repo": "kairo-test/gated", "revision": REVISION}})
    refused = run_step(tmp_path, fake_hub, presets, "--preset", "gated")
    assert refused.returncode == 2 and "modelAccessSecret" in refused.stderr
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "HF_TOKEN").write_text("hf_secret_value\n")
    proc = run_step(tmp_path, fake_hub, presets, "--preset", "gated", "--token-file", str(secret))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "hf_secret_value" not in proc.stderr + proc.stdout


def test_a_pickle_only_hub_repo_is_refused_before_downloading(tmp_path, fake_hub):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "config.json").write_text("{}")
    (repo / "pytorch_model.bin").write_bytes(b"pickle")
    fake_hub.add("kairo-test/old", REVISION, repo)
    presets = preset_dir(tmp_path, "old", {"huggingface": {"repo": "kairo-test/old", "revision": REVISION}})
    proc = run_step(tmp_path, fake_hub, presets, "--preset", "old")
    assert proc.returncode == 2 and "only pytorch_model.bin" in proc.stderr
    assert fake_hub.downloaded() == []


def test_an_unknown_revision_is_the_users_to_fix(tmp_path, tiny_model_dir, fake_hub):
    fake_hub.add("kairo-test/tiny", "f" * 40, tiny_model_dir)
    presets = preset_dir(tmp_path, "moved", {"huggingface": {"repo": "kairo-test/tiny", "revision": REVISION}})
    proc = run_step(tmp_path, fake_hub, presets, "--preset", "moved")
    assert proc.returncode == 2 and f"no revision {REVISION}" in proc.stderr


@pytest.mark.registry
def test_an_oci_artifact_is_pulled_by_digest_and_a_second_fetch_skips(tmp_path, tiny_model_dir, registry,
                                                                      monkeypatch, capsys):
    import oras.client

    source = tmp_path / "src"
    shutil.copytree(tiny_model_dir, source)
    (source / "pytorch_model.bin").write_bytes(b"pickle")
    monkeypatch.chdir(source)  # oras-py pushes files from the working directory
    names = sorted(p.name for p in source.iterdir())
    oras.client.OrasClient(hostname=registry.host, insecure=True).push(
        target=f"{registry.host}/models/tiny:v1", files=names)
    monkeypatch.chdir(tmp_path)
    ref = f"{registry.host}/models/tiny:v1"
    code, outputs = fetch(tmp_path, "--preset", "tiny-llama-test", "--image", ref, "--local")
    assert code == 0, capsys.readouterr().err[-2000:]
    model = Path(outputs["model-dir"])
    assert outputs["revision"].startswith("sha256:")
    assert (model / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    assert not (model / "pytorch_model.bin").exists() and not (model / ".pull").exists()
    pinned = f"{ref.rsplit(':', 1)[0]}@{outputs['revision']}"
    code, again = fetch(tmp_path, "--preset", "tiny-llama-test", "--image", pinned, "--local")
    assert code == 0 and again["revision"] == outputs["revision"]
    assert "skipping" in capsys.readouterr().err

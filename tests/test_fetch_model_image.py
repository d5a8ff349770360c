"""`fetch-model --image` with a Kaito model image: a container image whose weights lie under /workspace/tfs/weights.

The images are built here layer by layer (tar+gzip, as `docker build` makes them) around the tiny model's files,
pushed to the real registry with skopeo, and fetched by the real step; the cache must load with transformers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kairo import exitcodes
from kairo.step import main as kairo_step
from tests.fixtures.oci_images import files_in, image_layout, skopeo_copy, skopeo_raw, tar_layer

pytestmark = pytest.mark.registry

WEIGHTS = "workspace/tfs/weights"  # where Kaito's tuning reads the base model (ModelConfig's default)
TAKEN = {"chat_template.jinja", "config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json"}


def fetch(tmp_path: Path, ref: str, *flags: str) -> int:
    return kairo_step(["fetch-model", "--preset", "tiny-llama-test", "--image", ref, *flags,
                       "--workdir", str(tmp_path / "work"), "--outputs", str(tmp_path / "out"), "--local"])


def model_files(model_dir: Path, folder: str) -> dict[str, bytes]:
    """The tiny model's files, placed under `folder` in an image."""
    return {f"{folder}/{p.name}": p.read_bytes() for p in model_dir.iterdir() if p.is_file()}


def push(tmp_path: Path, ref: str, layers: list[bytes], creds: str | None = None) -> str:
    skopeo_copy(image_layout(tmp_path / "layout", layers), ref, creds=creds)
    return ref


def runtime_layer() -> bytes:
    """What sits below the weights in a Kaito image: a shell, Kaito's tuning code."""
    return tar_layer({"bin/sh": b"\x7fELF", "workspace/tfs/fine_tuning.py": b"print('tune')\n"},
                     dirs=("workspace", "workspace/tfs"))


def test_a_kaito_model_image_fills_the_cache_with_a_loadable_model(tmp_path, registry, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    weights = tar_layer({**model_files(tiny_model_dir, WEIGHTS), f"{WEIGHTS}/pytorch_model.bin": b"a pickle",
                         f"{WEIGHTS}/stale.safetensors": b"old weights", f"{WEIGHTS}/extra/notes.json": b"{}"})
    update = tar_layer(whiteouts=(f"{WEIGHTS}/.wh.stale.safetensors",))
    ref = push(tmp_path, f"{registry.host}/models/kaito-tiny:0.0.1", [runtime_layer(), weights, update])

    assert fetch(tmp_path, ref) == exitcodes.OK
    model = Path((tmp_path / "out" / "model-dir").read_text())
    digest = (tmp_path / "out" / "revision").read_text()
    manifest = skopeo_raw(f"docker://{ref}")  # a container image, not an ORAS artifact
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert len(manifest["layers"]) == 3 and digest.startswith("sha256:")
    assert set(files_in(model)) == TAKEN | {".kairo-fetch.json"}  # no pickle, no whited-out file, no code
    assert (model / "model.safetensors").read_bytes() == (tiny_model_dir / "model.safetensors").read_bytes()
    marker = json.loads((model / ".kairo-fetch.json").read_text())
    assert marker["source"] == f"oci:{registry.host}/models/kaito-tiny" and marker["revision"] == digest
    loaded = AutoModelForCausalLM.from_pretrained(model)
    tokens = AutoTokenizer.from_pretrained(model)("the capital of france", return_tensors="pt")
    assert loaded(**tokens).logits.shape[-1] == loaded.config.vocab_size


def test_kaitos_current_layout_links_the_weights_folder_to_workspace_weights(tmp_path, registry, tiny_model_dir):
    base = tar_layer({"bin/sh": b"\x7fELF"}, symlinks={WEIGHTS: "/workspace/weights"})
    weights = tar_layer(model_files(tiny_model_dir, "workspace/weights"))
    ref = push(tmp_path, f"{registry.host}/models/kaito-linked:0.0.1", [base, weights])
    assert fetch(tmp_path, ref) == exitcodes.OK
    model = tmp_path / "work" / "model" / "tiny-llama-test"
    assert {n: files_in(model)[n] for n in TAKEN} == {n: (tiny_model_dir / n).read_bytes() for n in TAKEN}


@pytest.mark.parametrize("tag, evil, words", [
    ("link-out", tar_layer(symlinks={f"{WEIGHTS}/tokenizer.json": "/etc/passwd"}), "outside /workspace/tfs/weights"),
    ("dotdot", tar_layer({f"{WEIGHTS}/../../../etc/cron.d/x": b"* * * * * root sh"}), "climbs out with '..'"),
], ids=["link-out", "dotdot"])
def test_a_model_image_reaching_outside_its_weights_is_refused_and_nothing_cached(
        tmp_path, registry, tiny_model_dir, capsys, tag, evil, words):
    weights = tar_layer(model_files(tiny_model_dir, WEIGHTS))
    ref = push(tmp_path, f"{registry.host}/models/kaito-escape:{tag}", [runtime_layer(), weights, evil])
    assert fetch(tmp_path, ref) == exitcodes.BAD_INPUT
    assert words in capsys.readouterr().err
    assert not (tmp_path / "work" / "model" / "tiny-llama-test").exists()


def test_a_pickle_only_model_image_is_refused_naming_the_pickle(tmp_path, registry, capsys):
    weights = tar_layer({f"{WEIGHTS}/config.json": b"{}", f"{WEIGHTS}/pytorch_model.bin": b"a pickle"})
    ref = push(tmp_path, f"{registry.host}/models/kaito-pickle:0.0.1", [runtime_layer(), weights])
    assert fetch(tmp_path, ref) == exitcodes.BAD_INPUT
    assert "no safetensors weights (it has only pytorch_model.bin)" in capsys.readouterr().err


def test_a_private_model_image_is_pulled_with_the_mounted_pull_secret(tmp_path, auth_registry, tiny_model_dir):
    ref = push(tmp_path, f"{auth_registry.host}/models/kaito-private:0.0.1",
               [runtime_layer(), tar_layer(model_files(tiny_model_dir, WEIGHTS))], creds="kairo:s3cret-pass")
    assert fetch(tmp_path, ref) == exitcodes.BAD_INPUT
    secret = auth_registry.dockerconfig(tmp_path / "secret")
    assert fetch(tmp_path, ref, "--pull-secret-file", str(secret)) == exitcodes.OK
    assert (tmp_path / "work" / "model" / "tiny-llama-test" / "model.safetensors").is_file()


def test_a_pull_secret_that_is_not_mounted_means_a_public_image(tmp_path, registry, tiny_model_dir, capsys):
    ref = push(tmp_path, f"{registry.host}/models/kaito-public:0.0.1",
               [tar_layer(model_files(tiny_model_dir, WEIGHTS))])
    absent = tmp_path / "absent" / ".dockerconfigjson"  # the generic template mounts the secret optionally
    assert fetch(tmp_path, ref, "--pull-secret-file", str(absent)) == exitcodes.OK
    assert f"no pull secret at {absent}; pulling {ref} without credentials" in capsys.readouterr().err


def test_a_model_image_over_the_pull_limit_is_refused_saying_how_the_limit_is_set(tmp_path, registry):
    from kairo.clients import oci

    ref = push(tmp_path, f"{registry.host}/models/kaito-big:0.0.1",
               [tar_layer({f"{WEIGHTS}/model.safetensors": bytes(range(256)) * 40})])
    with pytest.raises(oci.UnsafeContent, match="exceed 5000 bytes.*sizes it from the preset") as caught:
        oci.pull_model(ref, tmp_path / "model", oci.RegistryAccess(plain_http=True), max_bytes=5000)
    assert caught.value.exit_code == exitcodes.BAD_INPUT and not (tmp_path / "model").exists()

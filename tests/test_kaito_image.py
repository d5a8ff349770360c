"""The adapter as Kaito's image, both ways, against the local registry.

kairo → Kaito: what `push` sends is unpacked by Kaito's adapter puller, its steps run for real, and PEFT loads
the result. Kaito → kairo: an image made the way Kaito's tuning pusher makes it is served by `kairo serve`.

Kaito's scripts, as read (kaito-project/kaito):
- `pkg/workspace/image/puller.sh` @ 2949f152b16fc536d1c3d1a911fd4a875bd9fca3: line 25 `skopeo copy --dest-decompress
  docker://IMG dir:LAYOUT`; line 38 lists the layers with `skopeo inspect --format '{{ range .Layers }}{{ slice . 7 }}
  {{ end }}' dir:LAYOUT`; line 42 `tar x -f LAYER -C ROOTFS` for each; line 48 `mv -f ROOTFS/data VOL_DIR`.
- `pkg/workspace/image/pusher.sh` @ 1136a559a8fdab91b8d9754760721fe1f648633e: line 34 copies adapter_config.json and
  adapter_model.safetensors into `data/`; line 38 `tar c -f layer.tar -C TMP data`; line 40 the diff ID is the
  sha256 of that tar; line 42 `gzip -9`; line 52 the config is `{"rootfs":{"diff_ids":["sha256:…"]}}`; line 65
  `oras push --annotation-file … --config config.json:application/vnd.oci.image.config.v1+json --oci-layout …
  layer.tar.gz:application/vnd.oci.image.layer.v1.tar+gzip` (oras names the layer by its title, layer.tar.gz).
- `pkg/workspace/tuning/preset_tuning.go` (SetTrainingOutputImagePush): the manifest annotation
  `sh.kaito.model.name` is the preset's name.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from kairo.clients import oci
from kairo.oci import artifact
from tests.conftest import require_tool
from tests.fixtures.oci_images import CREATED, files_in, kaito_push, skopeo_copy, skopeo_raw, write_adapter

pytestmark = pytest.mark.registry
PLAIN = oci.RegistryAccess(plain_http=True, retries=0)


def blob(registry, repository: str, digest: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(f"{registry.url}/v2/{repository}/blobs/{digest}", timeout=30) as response:  # noqa: S310
        return response.read()


# --- the layout ---------------------------------------------------------------------------------------------


def test_the_pushed_adapter_is_an_image_in_kaitos_layout(registry, adapter_folder):
    pushed = oci.push_adapter(adapter_folder, f"{registry.host}/kaito/layout", PLAIN)
    manifest = skopeo_raw(f"docker://{registry.host}/kaito/layout:{pushed.tag}")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json" and "artifactType" not in manifest
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    assert manifest["annotations"]["sh.kaito.model.name"] == "tiny-llama-test"
    assert manifest["annotations"]["kairo.sh/base-model"] == "kairo/tiny-llama-test"
    assert manifest["annotations"]["kairo.sh/dataset-digest"] == "sha256:" + "ab" * 32
    assert manifest["annotations"]["org.opencontainers.image.created"] == CREATED
    config = json.loads(blob(registry, "kaito/layout", manifest["config"]["digest"]))
    assert "os" not in config and "architecture" not in config  # platform-independent, as Kaito's README asks
    raw = gzip.decompress(blob(registry, "kaito/layout", layer["digest"]))
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(raw).hexdigest()}"]


def test_the_layer_holds_the_files_under_data_with_fixed_owner_times_and_modes(registry, adapter_folder):
    pushed = oci.push_adapter(adapter_folder, f"{registry.host}/kaito/entries", PLAIN)
    manifest = skopeo_raw(f"docker://{registry.host}/kaito/entries:{pushed.tag}")
    packed = blob(registry, "kaito/entries", manifest["layers"][0]["digest"])
    assert packed[4:8] == b"\0\0\0\0"  # the gzip header's mtime
    with tarfile.open(fileobj=__import__("io").BytesIO(packed), mode="r:gz") as archive:
        members = archive.getmembers()
    names = [m.name for m in members]
    assert names == ["data", "data/adapter_config.json", "data/adapter_model.safetensors", "data/chat_template.jinja",
                     "data/kairo.json", "data/tokenizer.json", "data/tokenizer_config.json"]
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    assert {m.name: oct(m.mode) for m in members if m.isdir()} == {"data": "0o755"}
    assert {oct(m.mode) for m in members if m.isfile()} == {"0o644"}


def test_the_same_adapter_gives_the_same_digests_whatever_its_times_and_modes(registry, adapter_folder, tmp_path,
                                                                              capsys):
    repository = f"{registry.host}/kaito/reproducible"
    first = oci.push_adapter(adapter_folder, repository, PLAIN)
    copy = shutil.copytree(adapter_folder, tmp_path / "copy")
    for path in copy.iterdir():  # another owner's copy: other times, other modes
        os.utime(path, (1_700_000_000, 1_700_000_000))
        path.chmod(0o600)
    time.sleep(1.1)  # nothing may come from the time of the push
    second = oci.push_adapter(copy, repository, PLAIN)
    assert first.digest == second.digest and first.tag == second.tag
    layers = [skopeo_raw(f"docker://{repository}@{p.digest}")["layers"][0]["digest"] for p in (first, second)]
    assert layers[0] == layers[1]
    with capsys.disabled():  # the figures for the closing note
        print(f"\nreproducible: manifest {first.digest} / {second.digest}; layer {layers[0]} / {layers[1]}")
    changed = write_adapter(tmp_path / "changed", seed=1)
    assert oci.push_adapter(changed, repository, PLAIN).digest != first.digest


def test_skopeo_inspect_and_the_oras_client_read_the_manifest(registry, adapter_folder):
    import oras.provider

    pushed = oci.push_adapter(adapter_folder, f"{registry.host}/kaito/readers", PLAIN)
    proc = subprocess.run([require_tool("skopeo"), "inspect", "--tls-verify=false",
                           f"docker://{registry.host}/kaito/readers:{pushed.tag}"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr  # not --raw: skopeo reads it as an image
    inspected = json.loads(proc.stdout)
    assert inspected["Digest"] == pushed.digest
    assert inspected["Layers"] == [skopeo_raw(f"docker://{pushed.ref}")["layers"][0]["digest"]]
    manifest = oras.provider.Registry(insecure=True).get_manifest(f"{registry.host}/kaito/readers:{pushed.tag}")
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    assert manifest["annotations"]["kairo.sh/preset"] == "tiny-llama-test"


# --- kairo → Kaito: Kaito's puller, its steps run for real -----------------------------------------------------


def kaito_pull(ref: str, tmp: Path) -> Path:
    """puller.sh's pull, expand and relocate, step by step (plain HTTP: the local registry has no TLS)."""
    skopeo = require_tool("skopeo")
    layout, rootfs, volume = tmp / "layout", tmp / "rootfs", tmp / "mnt-adapter" / "tuned"
    copy = subprocess.run([skopeo, "copy", "--dest-decompress", "--src-tls-verify=false", f"docker://{ref}",
                           f"dir:{layout}"], capture_output=True, text=True, timeout=120)
    assert copy.returncode == 0, copy.stderr
    listed = subprocess.run([skopeo, "inspect", "--format", "{{ range .Layers }}{{ slice . 7 }} {{ end }}",
                             f"dir:{layout}"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rootfs.mkdir()
    for diff in listed.stdout.split():
        untar = subprocess.run(["tar", "x", "-f", str(layout / diff), "-C", str(rootfs)], capture_output=True,
                               text=True, timeout=60)
        assert untar.returncode == 0, untar.stderr
    volume.parent.mkdir(parents=True)
    subprocess.run(["mv", "-f", str(rootfs / "data"), str(volume)], check=True, timeout=60)
    return volume


@pytest.mark.slow
def test_kaitos_puller_unpacks_kairos_push_into_a_folder_peft_loads(registry, lora_adapters, tiny_model_dir,
                                                                    tmp_path):
    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    pushed = oci.push_adapter(lora_adapters["alpha"], f"{registry.host}/kaito/pulled", PLAIN)
    folder = kaito_pull(pushed.ref, tmp_path)
    assert files_in(folder) == files_in(lora_adapters["alpha"])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), folder)
    saved = load_file(folder / "adapter_model.safetensors")
    name = next(k for k in saved if k.endswith("q_proj.lora_B.weight"))
    loaded = dict(model.named_parameters())[name.replace("lora_B.weight", "lora_B.default.weight")]
    assert torch.equal(loaded, saved[name]) and loaded.abs().sum() > 0


# --- Kaito → kairo: an image made as Kaito's pusher makes it -----------------------------------------------------


def test_an_image_made_as_kaitos_pusher_makes_it_is_pulled_by_kairo(registry, adapter_folder, tmp_path):
    ref = kaito_push(adapter_folder, f"{registry.host}/kaito/made-by-kaito:latest", tmp_path)
    folder = oci.pull_adapter(ref, tmp_path / "pulled", PLAIN)
    assert files_in(folder) == {n: (adapter_folder / n).read_bytes()
                                for n in ("adapter_config.json", "adapter_model.safetensors")}


@pytest.mark.slow
def test_kairo_serve_serves_an_adapter_image_made_by_kaitos_pusher(registry, lora_adapters, tiny_model_dir, tmp_path):
    import openai

    from kairo.serving.options import config_from_args
    from kairo.steps import serve
    from tests.fixtures.server import running_server

    ref = kaito_push(lora_adapters["beta"], f"{registry.host}/kaito/served:latest", tmp_path)
    config = config_from_args(serve.make_parser().parse_args([
        "--preset", "tiny-llama-test", "--model-dir", str(tiny_model_dir), "--adapter", f"kaito=oci://{ref}",
        "--adapter", f"folder={lora_adapters['beta']}", "--plain-http", "--cache-dir", str(tmp_path / "cache"),
        "--device", "cpu"]))
    question = [{"role": "user", "content": "What is the capital of France?"}]
    with running_server(config) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        answers = [client.chat.completions.create(model=m, messages=question, max_tokens=8, temperature=0)
                   .choices[0].message.content for m in ("kaito", "folder")]
    assert answers[0] == answers[1]


def test_an_image_without_the_peft_files_under_data_is_refused_naming_them(registry, tmp_path):
    from tests.fixtures.oci_images import image_layout, tar_layer

    layout = image_layout(tmp_path / "layout", [tar_layer({"data/train.jsonl": b"{}\n"})])
    skopeo_copy(layout, f"{registry.host}/kaito/a-dataset:v1")
    with pytest.raises(oci.WrongArtifact, match="no /data/adapter_config.json, /data/adapter_model.safetensors"):
        oci.pull_adapter(f"{registry.host}/kaito/a-dataset:v1", tmp_path / "out", PLAIN)
    assert not (tmp_path / "out").exists()


# --- the adapters earlier kairo versions pushed ------------------------------------------------------------------


def test_an_adapter_in_the_earlier_kairo_layout_is_still_pulled(registry, adapter_folder, tmp_path):
    from kairo.steps import pull_adapter
    from tests.fixtures.oci_images import push_old_layout, write_old_layout

    ref = push_old_layout(adapter_folder, f"{registry.host}/kaito/old-layout", tmp_path)
    assert skopeo_raw(f"docker://{ref}")["artifactType"] == artifact.ARTIFACT_TYPE
    assert files_in(oci.pull_adapter(ref, tmp_path / "pulled", PLAIN)) == files_in(adapter_folder)
    # the inference pod's init container, by the moving tag as an earlier kairo left it
    assert pull_adapter.main([f"{registry.host}/kaito/old-layout:old", str(tmp_path / "init"), "--plain-http"]) == 0
    assert files_in(tmp_path / "init") == files_in(adapter_folder)
    on_disk = write_old_layout(adapter_folder, tmp_path / "old-on-disk")
    assert files_in(oci.pull_adapter(on_disk, tmp_path / "from-disk")) == files_in(adapter_folder)

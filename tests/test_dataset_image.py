"""Kaito-style dataset images: a container image whose files lie under /data, read layer by layer, never run.

The images are built here with `tarfile` (a config blob, an image manifest, an OCI layout) and pushed to the
real registry with skopeo; `pull_dataset` reads them back. ORAS artifacts of files are accepted too.
"""

from __future__ import annotations

import pytest

from kairo.clients import oci
from tests.fixtures.oci_images import files_in, image_layout, skopeo_copy, tar_layer

pytestmark = pytest.mark.registry


def push_image(tmp_path, ref: str, layers: list[bytes], creds: str | None = None) -> str:
    skopeo_copy(image_layout(tmp_path / "layout", layers), ref, creds=creds)
    return ref


def test_only_the_surviving_files_under_data_come_out(tmp_path, registry):
    base = tar_layer({"bin/busybox": b"\x7fELF", "data/train.jsonl": b'{"messages": []}\n',
                      "data/old.jsonl": b"stale\n", "data/drafts/a.jsonl": b"draft\n"}, dirs=("data", "data/drafts"))
    update = tar_layer({"data/eval/eval.jsonl": b"held out\n"},
                       whiteouts=("data/.wh.old.jsonl", "data/.wh.drafts"), compress=False)
    ref = push_image(tmp_path, f"{registry.host}/datasets/kaito:v1", [base, update])
    pulled = oci.pull_dataset(ref, tmp_path / "raw", oci.RegistryAccess(plain_http=True))
    assert files_in(tmp_path / "raw") == {"train.jsonl": b'{"messages": []}\n', "eval/eval.jsonl": b"held out\n"}
    assert pulled == [tmp_path / "raw" / "eval" / "eval.jsonl", tmp_path / "raw" / "train.jsonl"]


def test_a_layer_escaping_data_is_refused_and_nothing_is_written(tmp_path, registry):
    good = tar_layer({"data/train.jsonl": b"{}\n"})
    evil = tar_layer(symlinks={"data/passwd.jsonl": "/etc/passwd"})
    ref = push_image(tmp_path, f"{registry.host}/datasets/escape:v1", [good, evil])
    with pytest.raises(oci.UnsafeContent, match="outside /data") as caught:
        oci.pull_dataset(ref, tmp_path / "raw", oci.RegistryAccess(plain_http=True))
    assert caught.value.exit_code == 2
    assert not (tmp_path / "raw").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no scratch left


def test_a_private_image_is_pulled_with_the_pull_secret(tmp_path, auth_registry):
    ref = push_image(tmp_path, f"{auth_registry.host}/datasets/private:v1",
                     [tar_layer({"data/train.csv": b"prompt,response\n"})], creds="kairo:s3cret-pass")
    secret = auth_registry.dockerconfig(tmp_path / "secret")
    oci.pull_dataset(ref, tmp_path / "raw", oci.RegistryAccess(auth_file=secret, plain_http=True))
    assert files_in(tmp_path / "raw") == {"train.csv": b"prompt,response\n"}


def test_an_image_without_data_is_bad_input(tmp_path, registry):
    ref = push_image(tmp_path, f"{registry.host}/datasets/empty:v1", [tar_layer({"etc/hostname": b"x"})])
    with pytest.raises(oci.UnsafeContent, match="no files under /data"):
        oci.pull_dataset(ref, tmp_path / "raw", oci.RegistryAccess(plain_http=True))


def test_an_image_larger_than_the_cap_is_refused(tmp_path, registry):
    ref = push_image(tmp_path, f"{registry.host}/datasets/big:v1", [tar_layer({"data/a": b"x" * 5000})])
    with pytest.raises(oci.UnsafeContent, match="more than the limit|exceed"):
        oci.pull_dataset(ref, tmp_path / "raw", oci.RegistryAccess(plain_http=True), max_bytes=1000)


def test_an_oras_artifact_of_files_is_a_dataset_too(tmp_path, registry, monkeypatch):
    import oras.client

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "train.parquet").write_bytes(b"PAR1 rows PAR1")
    (tmp_path / "src" / "eval.jsonl").write_text('{"messages": []}\n')
    monkeypatch.chdir(tmp_path / "src")  # oras-py pushes files from the working directory
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    client.push(target=f"{registry.host}/datasets/oras:v1", files=["train.parquet", "eval.jsonl"])
    oci.pull_dataset(f"{registry.host}/datasets/oras:v1", tmp_path / "raw", oci.RegistryAccess(plain_http=True))
    assert files_in(tmp_path / "raw") == files_in(tmp_path / "src")


def test_an_oras_folder_layer_is_unpacked(tmp_path, registry, monkeypatch):
    import oras.client

    (tmp_path / "src" / "shards").mkdir(parents=True)
    (tmp_path / "src" / "shards" / "part-0.jsonl").write_text("a\n")
    (tmp_path / "src" / "shards" / "part-1.jsonl").write_text("b\n")
    monkeypatch.chdir(tmp_path / "src")
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    client.push(target=f"{registry.host}/datasets/folder:v1", files=["shards"])
    oci.pull_artifact(f"{registry.host}/datasets/folder:v1", tmp_path / "raw", oci.RegistryAccess(plain_http=True))
    assert files_in(tmp_path / "raw") == {"shards/part-0.jsonl": b"a\n", "shards/part-1.jsonl": b"b\n"}


def test_an_adapter_is_not_a_model_artifact(tmp_path, registry, adapter_folder):
    pushed = oci.push_adapter(adapter_folder, f"{registry.host}/datasets/not-weights", oci.RegistryAccess(plain_http=True))
    with pytest.raises(oci.WrongArtifact, match="is a container image, not 'application/vnd.kairo.model.v1'"):
        oci.pull_artifact(pushed.ref, tmp_path / "model", oci.RegistryAccess(plain_http=True), artifact_type="application/vnd.kairo.model.v1")
    with pytest.raises(oci.UnsafeContent, match="no files under /workspace/tfs/weights"):
        oci.pull_model(pushed.ref, tmp_path / "model", oci.RegistryAccess(plain_http=True))
